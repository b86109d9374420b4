"""Shared test fixtures: the backend parametrisation and the tolerance table.

Gradient checks run in float64 on NumPy only (centred differences on a GPU would copy to the host
once per element). Backend parity runs the same host-made inputs through NumPy and a second
backend: ``BACKENDS`` lists only the second backends (CuPy), which skip with the reason when CuPy or
a CUDA device is missing. NumPy is the reference side of every parity test, so it is never a
parametrisation of its own: comparing NumPy with NumPy would "pass" while checking nothing.

``assert_allclose_finite`` is the comparison every numerical test should use: unlike
``np.testing.assert_allclose`` it fails when either side holds a NaN or an infinity, instead of
treating NaN on both sides as equal.

``needs_mpi`` skips a test that launches real ``mpiexec`` runs where mpi4py or mpiexec is missing.
"""
import shutil

import numpy as np
import pytest

from minispanbert.backend import get_backend
from minispanbert.engine.parallel.distributed import launcher_world_size

# Backend-parity tolerances, keyed by dtype (the cupy.testing / Chainer pattern). The float64
# gradient-check tolerances live with the checks in minispanbert/check_gradients.py.
TOLERANCES = {
    "parity_float32": dict(rtol=1e-4, atol=1e-5),   # NumPy vs CuPy, float32 (different BLAS orderings)
    "parity_float64": dict(rtol=1e-10, atol=1e-12),
}


def _cupy_skip_reason():
    try:
        get_backend("cupy")
    except ValueError as exc:
        return str(exc)
    return None


CUPY_SKIP_REASON = _cupy_skip_reason()

MPIEXEC = shutil.which("mpiexec")


def mpi_missing_reason():
    """Why real ``mpiexec -n 2`` runs cannot happen here, or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    if MPIEXEC is None:
        return "no mpiexec on PATH (pip install mpich)"
    if launcher_world_size() > 1:
        return "already running under an MPI launcher"
    return None


needs_mpi = pytest.mark.skipif(mpi_missing_reason() is not None, reason=str(mpi_missing_reason()))

BACKENDS = [
    pytest.param("cupy", marks=pytest.mark.skipif(CUPY_SKIP_REASON is not None,
                                                  reason=f"parity needs a second backend: {CUPY_SKIP_REASON}")),
]


def assert_allclose_finite(actual, expected, err_msg="", **tolerance):
    """np.testing.assert_allclose, but a NaN or an infinity on either side is a failure (NumPy's own
    treats NaN == NaN as a match)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    for side, value in (("actual", actual), ("expected", expected)):
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            raise AssertionError(f"{err_msg}: {side} has {np.size(value) - np.isfinite(value).sum()} "
                                 f"non-finite element(s)")
    np.testing.assert_allclose(actual, expected, err_msg=err_msg, equal_nan=False, **tolerance)


@pytest.fixture
def tolerances():
    return TOLERANCES


@pytest.fixture(params=["cupy"])
def gpu_xp():
    """The CuPy module, or a clean skip saying why there is none."""
    if CUPY_SKIP_REASON is not None:
        pytest.skip(CUPY_SKIP_REASON)
    return get_backend("cupy")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """{shipped assignment id: its coursework build folder}, each built once per session on first use
    (tests/coursework/: the builds are read, never changed, by the tests that share them)."""
    from minispanbert.coursework.build import build

    folders = {}

    def get(name):
        if name not in folders:
            folders[name] = build(name, tmp_path_factory.mktemp("coursework") / name)
        return folders[name]
    return get
