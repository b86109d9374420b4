"""Fused CPU LayerNorm (plain version and equations: layers/layernorm.py).

Forward, per row (shared among the threads): the mean, then the variance of the centred row
(two passes while the row is in cache), then xhat and y written once. Backward, per row: the two
row means of g = dy * gamma and g * xhat, then dx written once. dgamma and dbeta are sums over
rows, which threads cannot share without a race: each thread adds its block of rows into its own
row of a (threads, H) partial array, and the partials are summed at the end.
The cache is the plain one: (xhat, rstd (..., 1), gamma).
"""
from __future__ import annotations

import numpy as np

from minispanbert.engine.kernels.cpu import cpu_kernel, prange, rows
from minispanbert.engine.parallel.threads import cpu_threads


@cpu_kernel
def _forward(x, gamma, beta, eps, y, xhat, rstd):
    n, h = x.shape
    for r in prange(n):
        mean = 0.0
        for j in range(h):
            mean += x[r, j]
        mean /= h
        var = 0.0
        for j in range(h):
            d = x[r, j] - mean
            var += d * d
        s = 1.0 / np.sqrt(var / h + eps)
        rstd[r] = s
        for j in range(h):
            xh = (x[r, j] - mean) * s
            xhat[r, j] = xh
            y[r, j] = xh * gamma[j] + beta[j]


@cpu_kernel
def _backward(dy, xhat, rstd, gamma, dx, dgamma_parts, dbeta_parts):
    n, h = dy.shape
    blocks = dgamma_parts.shape[0]
    for b in prange(blocks):
        for r in range(b * n // blocks, (b + 1) * n // blocks):
            mean_g = 0.0
            mean_g_xhat = 0.0
            for j in range(h):
                g = dy[r, j] * gamma[j]
                mean_g += g
                mean_g_xhat += g * xhat[r, j]
                dgamma_parts[b, j] += dy[r, j] * xhat[r, j]
                dbeta_parts[b, j] += dy[r, j]
            mean_g /= h
            mean_g_xhat /= h
            for j in range(h):
                dx[r, j] = rstd[r] * (dy[r, j] * gamma[j] - mean_g - xhat[r, j] * mean_g_xhat)


def layernorm_forward(x, gamma, beta, *, xp, eps=1e-12):
    x2 = rows(x)
    y, xhat = np.empty_like(x2), np.empty_like(x2)
    rstd = np.empty((x2.shape[0], 1), dtype=x2.dtype)
    _forward(x2, gamma, beta, float(eps), y, xhat, rstd.reshape(-1))
    shape = x.shape
    return y.reshape(shape), (xhat.reshape(shape), rstd.reshape(*shape[:-1], 1), gamma)


def layernorm_backward(dy, cache, *, xp):
    xhat, rstd, gamma = cache
    dy2, xhat2 = rows(dy), rows(xhat)
    dx = np.empty_like(dy2)
    blocks = max(1, min(cpu_threads(), dy2.shape[0]))
    parts = np.zeros((2, blocks, dy2.shape[1]), dtype=np.float64)
    _backward(dy2, xhat2, rstd.reshape(-1), gamma, dx, parts[0], parts[1])
    dgamma, dbeta = parts.sum(axis=1).astype(dy2.dtype)
    return dx.reshape(dy.shape), dgamma, dbeta
