"""Dense -> GeLU -> LayerNorm, the "transform" shared by the MLM head (BERT's
``cls.predictions.transform``) and each of the two MLP layers of SpanBERT's SBO head (§3.2, eq. 2).

Forward:   t = LayerNorm(act(x W^T + b))         x (N, IN), W (H, IN) -> t (N, H)
Backward:  through LayerNorm, then act', then the linear map (each op's own backward).
``act`` is the erf GeLU unless ``activation`` names another (layers/activation.py): ALBERT's MLM
head uses its ``hidden_act`` (gelu_new); RoBERTa's and ELECTRA's generator head hard-code erf gelu.
"""
from __future__ import annotations

from minispanbert.layers import layernorm
from minispanbert.layers.activation import activation_backward, activation_forward
from minispanbert.layers.linear import linear_backward, linear_forward


def transform_forward(x, weight, bias, gamma, beta, *, xp, eps=1e-12, activation="gelu"):
    """x (N, IN) -> (t (N, H), cache)."""
    u, linear_cache = linear_forward(x, weight, bias, xp=xp)
    g, gelu_cache = activation_forward(u, activation, xp=xp)
    t, ln_cache = layernorm.layernorm_forward(g, gamma, beta, xp=xp, eps=eps)
    return t, (linear_cache, gelu_cache, ln_cache)


def transform_backward(dt, cache, *, xp):
    """dt (N, H) -> (dx (N, IN), dweight, dbias, dgamma, dbeta)."""
    linear_cache, gelu_cache, ln_cache = cache
    dg, dgamma, dbeta = layernorm.layernorm_backward(dt, ln_cache, xp=xp)
    du = activation_backward(dg, gelu_cache, xp=xp)
    dx, dweight, dbias = linear_backward(du, linear_cache, xp=xp)
    return dx, dweight, dbias, dgamma, dbeta
