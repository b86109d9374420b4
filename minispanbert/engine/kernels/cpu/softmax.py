"""Fused CPU softmax over the last axis (plain version and equations: layers/softmax.py).

Forward: the plain op's NumPy code on blocks of rows shared among the threads
(``backend.parallel_for``), writing into one output: NumPy's exp is a SIMD loop and numba's is not
(no SVML here). Backward, per row:
s = sum(y * dy), then dx = y * (dy - s). The cache is the plain one, y.
"""
from __future__ import annotations

import numpy as np

from minispanbert.engine.kernels.cpu import cpu_kernel, prange, rows
from minispanbert.engine.parallel.threads import cpu_threads, parallel_for


@cpu_kernel
def _backward(dy, y, dx):
    n, k = y.shape
    for r in prange(n):
        s = 0.0
        for j in range(k):
            s += y[r, j] * dy[r, j]
        for j in range(k):
            dx[r, j] = y[r, j] * (dy[r, j] - s)


def softmax_forward(x, *, xp):
    x2 = rows(x)
    y = np.empty_like(x2)

    def block(part):  # the plain op's forward on a block of rows
        shifted = np.subtract(x2[part], x2[part].max(axis=1, keepdims=True), out=y[part])
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=1, keepdims=True)

    parallel_for(block, x2.shape[0], chunk=max(1, -(-x2.shape[0] // cpu_threads())), xp=np)
    y = y.reshape(x.shape)
    return y, y


def softmax_backward(dy, cache, *, xp):
    y = cache
    dx = np.empty(y.shape, dtype=y.dtype)
    _backward(rows(dy), rows(y), dx.reshape(-1, y.shape[-1]))
    return dx
