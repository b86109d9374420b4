"""Softmax over the last axis, numerically stable.

Forward:   y_i = exp(x_i - m) / sum_j exp(x_j - m),   m = max_j x_j
           (subtracting m changes nothing mathematically and keeps exp from overflowing).
Backward:  the full Jacobian dy_i/dx_j = y_i (delta_ij - y_j) contracted with dy:
           dx = y * (dy - sum_j(y_j dy_j))
Dropping the sum term (treating softmax as elementwise) is a bug seen in peers; the gradient check
catches it. Cache: y.
"""
from __future__ import annotations


def softmax_forward(x, *, xp):
    """x (..., N) -> (y (..., N), cache)."""
    y = x - x.max(axis=-1, keepdims=True)
    xp.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)
    return y, y


def softmax_backward(dy, cache, *, xp):
    """dy (..., N) -> dx (..., N)."""
    y = cache
    # dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j (dy_j - sum_i y_i dy_i)
    dx = dy - (y * dy).sum(axis=-1, keepdims=True)
    dx *= y
    return dx
