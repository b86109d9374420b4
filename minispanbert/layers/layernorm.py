"""Layer normalisation over the last axis (Ba, Kiros & Hinton 2016), BERT's eps = 1e-12.

Forward, per row x in R^H (biased variance, as BERT and torch.nn.LayerNorm):
    mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)
    xhat = (x - mu) * rstd
    y = gamma * xhat + beta

Backward. With g = dy * gamma (the gradient reaching xhat):
    dbeta  = sum over rows of dy
    dgamma = sum over rows of dy * xhat
    dx     = rstd * (g - mean(g) - xhat * mean(g * xhat))
The last line is the classic trap: mu and rstd both depend on every x_j, which contributes the
two mean terms (differentiate xhat_i = (x_i - mu) rstd through mu and through var).

Cache: xhat and rstd (xhat is kept rather than recomputed from x: it costs one array of memory
and saves two passes in backward).

``fused=True`` (the default) runs the one-kernel CuPy version in
``minispanbert/fused/layernorm.py`` when ``xp`` is CuPy, and the numba version in
``minispanbert/fused_cpu/layernorm.py`` on NumPy float32 (where numba is installed); ``fused=False``,
or any other case, runs the plain
code below: the reference that the notebooks and gradient checks use and that the fused
kernel is tested against. Pass the same ``fused``
to backward as to forward.
"""
from __future__ import annotations

from minispanbert.backend import is_cupy
from minispanbert.fused import layernorm as fused_layernorm
from minispanbert.fused_cpu import applies as fused_cpu_applies, layernorm as fused_cpu_layernorm


def layernorm_forward(x, gamma, beta, *, xp, eps=1e-12, fused=True):
    """x (..., H), gamma (H,), beta (H,) -> (y (..., H), cache)."""
    if fused and is_cupy(xp):
        return fused_layernorm.layernorm_forward(x, gamma, beta, xp=xp, eps=eps)
    if fused and fused_cpu_applies(xp, x, gamma, beta):  # numba, NumPy float32: minispanbert/fused_cpu
        return fused_cpu_layernorm.layernorm_forward(x, gamma, beta, xp=xp, eps=eps)
    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    var = xp.mean(centred * centred, axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat = centred
    xhat *= rstd
    y = xhat * gamma
    y += beta
    return y, (xhat, rstd, gamma)


def layernorm_backward(dy, cache, *, xp, fused=True):
    """dy (..., H) -> (dx (..., H), dgamma (H,), dbeta (H,))."""
    if fused and is_cupy(xp):
        return fused_layernorm.layernorm_backward(dy, cache, xp=xp)
    if fused and fused_cpu_applies(xp, dy, *cache):
        return fused_cpu_layernorm.layernorm_backward(dy, cache, xp=xp)
    xhat, rstd, gamma = cache
    lead = tuple(range(dy.ndim - 1))
    dbeta = dy.sum(axis=lead)
    dgamma = (dy * xhat).sum(axis=lead)
    g = dy * gamma
    mean_g = g.mean(axis=-1, keepdims=True)
    mean_g_xhat = (g * xhat).mean(axis=-1, keepdims=True)
    # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), computed in place on g
    g -= mean_g
    g -= xhat * mean_g_xhat
    g *= rstd
    return g, dgamma, dbeta
