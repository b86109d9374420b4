"""The array backend: NumPy on the CPU or CuPy on a GPU, chosen at run time and passed in.

Every op in minispanbert takes the array module as an explicit keyword argument ``xp`` (the
Chainer/DeZero idiom). This module is the only place that knows the two libraries differ; it
exposes the array module and the handful of helpers whose spelling is not the same in both:

    get_backend(name)          -> xp             ("numpy" or "cupy"; clear error, never a silent fallback)
    backend_name(xp)           -> "numpy" | "cupy"
    erf(x, *, xp)              the Gauss error function (scipy.special / cupyx.scipy.special; a
                               fast rational approximation for NumPy float32)
    scatter_add(a, idx, v, *, xp)  a[idx] += v with duplicate indices accumulated (add.at)
    to_numpy(a)                device -> host copy (a no-op for NumPy arrays)
    to_device(a, *, xp)        host -> device copy
    synchronize(xp)            wait for queued GPU work (for honest timings)
    check_dtype(dtype)         float32 (training) or float64 (gradient checks), else a clear error

Nothing here imports CuPy at module level: a machine without CuPy imports minispanbert fine.
"""
from __future__ import annotations

import os

import numpy as np

BACKENDS = ("numpy", "cupy")
ENV_VAR = "MINISPANBERT_BACKEND"


def get_backend(name: str | None = None):
    """Return the array module for ``name`` ("numpy" or "cupy").

    With ``name=None`` the environment variable ``MINISPANBERT_BACKEND`` decides, defaulting to
    "numpy". Asking for CuPy where it is not installed, or where no CUDA device is visible, raises a
    one-line ValueError that says how to fix it; there is no silent fallback to NumPy.
    """
    if name is None:
        name = os.environ.get(ENV_VAR, "numpy")
    if name == "numpy":
        return np
    if name != "cupy":
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    try:
        import cupy
    except ImportError:
        raise ValueError(
            "backend 'cupy' requested but CuPy is not installed: "
            "pip install cupy-cuda12x (or cupy-cuda13x), or use --backend numpy"
        ) from None
    try:
        device_count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own runtime errors
        raise ValueError(
            f"backend 'cupy' requested but no CUDA device is usable ({type(exc).__name__}): "
            "use --backend numpy"
        ) from None
    if device_count == 0:
        raise ValueError("backend 'cupy' requested but no CUDA device was found: use --backend numpy")
    return cupy


def backend_name(xp) -> str:
    """"numpy" or "cupy" for an array module returned by :func:`get_backend`."""
    return "numpy" if xp is np else "cupy"


def is_cupy(xp) -> bool:
    return xp is not np


# erf(x) ~ x P(x^2) / Q(x^2) on |x| <= 3.9 (beyond it float32 erf rounds to +-1), coefficients in
# increasing powers of x^2. Fitted for this project (weighted least squares, Sanathanan-Koerner
# iteration then Lawson reweighting toward minimax) to scipy's float64 erf on [0, 3.9]: relative
# error 2.6e-8 in exact arithmetic; evaluated in float32, at most 4.2e-7 absolute (7 ulp).
_ERF_CLAMP = 3.9
_ERF_P = (1.1283791374788605, 0.18865599059232804, 0.05136891210701422, 0.0035400518991406814,
          0.00023000286551358486)
_ERF_Q = (1.0, 0.50052450154821715, 0.11237050823477725, 0.014341891034612456, 0.0010451755975760652,
          2.3241822706068666e-05, -1.1347439039398177e-07)


def _polynomial(z, coefficients):
    """c0 + c1 z + c2 z^2 + ... by Horner's rule, in z's dtype (Python-float coefficients do not
    upcast a float32 array)."""
    acc = z * coefficients[-1]
    acc += coefficients[-2]
    for c in reversed(coefficients[:-2]):
        acc *= z
        acc += c
    return acc


# elements per block: each block's ~25 passes then hit the cache rather than memory
_ERF_BLOCK = 1 << 18


def _erf_float32(x):
    """erf for float32 NumPy arrays by the rational approximation above: vectorised array passes
    where scipy's float32 erf computes in double precision one element at a time. It costs ~25
    passes, so it runs block by block."""
    out = np.empty(x.shape, dtype=np.float32)  # C order, so out.reshape(-1) is a view
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for start in range(0, flat_x.size, _ERF_BLOCK):
        part = slice(start, start + _ERF_BLOCK)
        block = np.clip(flat_x[part], -_ERF_CLAMP, _ERF_CLAMP)
        z = block * block
        result = _polynomial(z, _ERF_P)
        result *= block
        result /= _polynomial(z, _ERF_Q)
        np.clip(result, -1.0, 1.0, out=flat_out[part])  # rounding may overshoot 1 by an ulp or two
    return out


def erf(x, *, xp):
    """The Gauss error function, elementwise, on the array's own device.

    float64 (gradient checks) and CuPy use the libraries' erf (scipy.special /
    cupyx.scipy.special), correct to the last bit or so; NumPy float32 (training) uses a rational
    approximation good to 4.2e-7 absolute, far below float32 training noise and much faster
    (docs/performance.md).
    """
    if xp is np:
        if x.dtype == np.float32:
            return _erf_float32(x)
        from scipy.special import erf as scipy_erf

        return scipy_erf(x)
    from cupyx.scipy.special import erf as cupy_erf

    return cupy_erf(x)


def scatter_add(a, indices, values, *, xp) -> None:
    """In place ``a[indices] += values``, adding once per occurrence of a repeated index.

    ``a[idx] += v`` is wrong when ``idx`` repeats (each duplicate overwrites instead of adding) on
    NumPy and undefined on CuPy; the ufunc method ``add.at`` accumulates on both (CuPy >= 13; it
    replaces the older ``cupyx.scatter_add``). This matters for the word-embedding gradient, where
    the same token id appears many times in a batch.

    NumPy's ``add.at`` is a slow element-by-element loop, so for the common case of rows (``a``
    (R, H), ``indices`` (N,), ``values`` (N, H)) NumPy sums the duplicates with a sparse product:
    with u the distinct indices and S (len(u), N) the 0/1 matrix S[r, n] = [indices[n] == u[r]],
    ``a[u] += S @ values``.
    """
    if xp is np and a.ndim == 2 and indices.ndim == 1 and values.shape == (indices.size, a.shape[1]):
        from scipy.sparse import csr_matrix

        rows, row_of_value = np.unique(indices, return_inverse=True)
        selector = csr_matrix((np.ones(indices.size, dtype=values.dtype), (row_of_value, np.arange(indices.size))),
                              shape=(rows.size, indices.size))
        a[rows] += selector @ values  # rows are distinct here, so plain fancy-index += is exact
        return
    xp.add.at(a, indices, values)


def to_numpy(a):
    """Copy an array to the host (a NumPy array passes through unchanged)."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return np.asarray(a)
    return a.get()


def to_device(a, *, xp):
    """Copy a host array onto the backend's device (no copy for NumPy)."""
    return xp.asarray(a)


def synchronize(xp) -> None:
    """Block until all queued device work is done; a no-op on NumPy."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def check_dtype(dtype) -> np.dtype:
    """Accept float32 or float64 (by name or dtype), else a clear ValueError."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"unsupported dtype {dtype!r}: use float32 (training) or float64 (gradient checks)")
    return resolved
