"""Fused GeLU: one elementwise kernel forward, one backward (plain version: layers/gelu.py).

Forward   y = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2
Backward  dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

The plain forward makes four passes over the (B*T, 4H) activation and the backward seven; here
each is a single pass. The cache is the plain one, (x, Phi(x)), so the two versions' caches mix.
"""
from __future__ import annotations

from minispanbert.engine.kernels.cuda import elementwise_kernel

FORWARD = ("T x", "T y, T cdf",
            "cdf = (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752)); y = x * cdf;",
            "minispanbert_gelu_forward")
BACKWARD = ("T dy, T x, T cdf", "T dx",
             "dx = dy * (cdf + x * (T)0.39894228040143268 * exp((T)-0.5 * x * x));",
             "minispanbert_gelu_backward")


def gelu_forward(x, *, xp):
    """x (...) -> (gelu(x) (...), cache (x, Phi(x)))."""
    y, cdf = elementwise_kernel(xp, *FORWARD)(x)
    return y, (x, cdf)


def gelu_backward(dy, cache, *, xp):
    """dy (...) -> dx (...)."""
    x, cdf = cache
    return elementwise_kernel(xp, *BACKWARD)(dy, x, cdf)
