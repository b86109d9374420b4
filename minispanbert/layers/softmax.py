"""Softmax over the last axis, numerically stable.

Forward:   y_i = exp(x_i - m) / sum_j exp(x_j - m),   m = max_j x_j
           (subtracting m changes nothing mathematically and keeps exp from overflowing).
Backward:  the full Jacobian dy_i/dx_j = y_i (delta_ij - y_j) contracted with dy:
           dx = y * (dy - sum_j(y_j dy_j))
Dropping the sum term (treating softmax as elementwise) is a bug seen in peers; the gradient check
catches it. Cache: y.

``fused=True`` (the default) runs the one-kernel CuPy version in
``minispanbert/fused/softmax.py`` when ``xp`` is CuPy, and the numba version in
``minispanbert/fused_cpu/softmax.py`` on NumPy float32 (where numba is installed); ``fused=False``,
or any other case, runs the plain
code below: the reference that the notebooks and gradient checks use and that the fused
kernel is tested against. Pass the same ``fused``
to backward as to forward.
"""
from __future__ import annotations

from minispanbert.backend import is_cupy
from minispanbert.fused import softmax as fused_softmax
from minispanbert.fused_cpu import applies as fused_cpu_applies, softmax as fused_cpu_softmax


def softmax_forward(x, *, xp, fused=True):
    """x (..., N) -> (y (..., N), cache)."""
    if fused and is_cupy(xp):
        return fused_softmax.softmax_forward(x, xp=xp)
    if fused and fused_cpu_applies(xp, x):  # numba, NumPy float32: minispanbert/fused_cpu
        return fused_cpu_softmax.softmax_forward(x, xp=xp)
    y = x - x.max(axis=-1, keepdims=True)
    xp.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)
    return y, y


def softmax_backward(dy, cache, *, xp, fused=True):
    """dy (..., N) -> dx (..., N)."""
    if fused and is_cupy(xp):
        return fused_softmax.softmax_backward(dy, cache, xp=xp)
    if fused and fused_cpu_applies(xp, dy, cache):
        return fused_cpu_softmax.softmax_backward(dy, cache, xp=xp)
    y = cache
    dx = dy - (y * dy).sum(axis=-1, keepdims=True)
    dx *= y
    return dx
