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
"""
from __future__ import annotations


def layernorm_forward(x, gamma, beta, *, xp, eps=1e-12):
    """x (..., H), gamma (H,), beta (H,) -> (y (..., H), cache)."""
    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    var = xp.mean(centred * centred, axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat = centred
    xhat *= rstd
    y = xhat * gamma
    y += beta
    return y, (xhat, rstd, gamma)


def layernorm_backward(dy, cache, *, xp):
    """dy (..., H) -> (dx (..., H), dgamma (H,), dbeta (H,))."""
    xhat, rstd, gamma = cache
    # y = gamma * xhat + beta
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
