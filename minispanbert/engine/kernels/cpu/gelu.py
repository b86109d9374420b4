"""Fused CPU GeLU (plain version and equations: layers/gelu.py): one pass forward, one backward.

Forward   y = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2
Backward  dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

The plain forward makes about 30 passes over the (B*T, 4H) activation (erf's rational
approximation, backend.erf, is ~25 of them) and the backward seven; here each is one loop over
the elements, shared among the threads. erf is the same rational approximation as the plain
float32 path, written out in float32 so the compiler can vectorise it (the C library's erf is a
scalar call per element). The cache is the plain one, (x, Phi(x)).
"""
from __future__ import annotations

import math

import numpy as np

from minispanbert.backend import _ERF_CLAMP, _ERF_P, _ERF_Q
from minispanbert.engine.kernels.cpu import cpu_kernel, prange

F32 = np.float32
INV_SQRT2, INV_SQRT_2PI, HALF, ONE = F32(1.0 / math.sqrt(2.0)), F32(1.0 / math.sqrt(2.0 * math.pi)), F32(0.5), F32(1.0)
CLAMP = F32(_ERF_CLAMP)
P0, P1, P2, P3, P4 = (F32(c) for c in _ERF_P)
Q0, Q1, Q2, Q3, Q4, Q5, Q6 = (F32(c) for c in _ERF_Q)


@cpu_kernel
def _forward(x, y, cdf):
    for i in prange(x.size):
        t = min(max(x[i] * INV_SQRT2, -CLAMP), CLAMP)
        z = t * t
        p = (((P4 * z + P3) * z + P2) * z + P1) * z + P0
        q = (((((Q6 * z + Q5) * z + Q4) * z + Q3) * z + Q2) * z + Q1) * z + Q0
        erf = min(max(t * p / q, -ONE), ONE)
        c = HALF * (ONE + erf)
        cdf[i] = c
        y[i] = x[i] * c


@cpu_kernel
def _backward(dy, x, cdf, dx):
    for i in prange(x.size):
        pdf = math.exp(-HALF * x[i] * x[i]) * INV_SQRT_2PI
        dx[i] = dy[i] * (cdf[i] + x[i] * pdf)


def gelu_forward(x, *, xp):
    x = np.ascontiguousarray(x)
    y, cdf = np.empty_like(x), np.empty_like(x)
    _forward(x.reshape(-1), y.reshape(-1), cdf.reshape(-1))
    return y, (x, cdf)


def gelu_backward(dy, cache, *, xp):
    x, cdf = cache
    dx = np.empty_like(x)
    _backward(np.ascontiguousarray(dy).reshape(-1), x.reshape(-1), cdf.reshape(-1), dx.reshape(-1))
    return dx
