"""Shared test fixtures: the backend parametrisation and the tolerance table.

Gradient checks run in float64 on NumPy only (centred differences on a GPU would copy to the host
once per element). Backend parity runs the same host-made inputs through NumPy and CuPy; the CuPy
cases skip with a reason when CuPy or a CUDA device is missing.
"""
import numpy as np
import pytest

from minispanbert.backend import get_backend

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

BACKENDS = [
    "numpy",
    pytest.param("cupy", marks=pytest.mark.skipif(CUPY_SKIP_REASON is not None, reason=f"{CUPY_SKIP_REASON}")),
]


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
