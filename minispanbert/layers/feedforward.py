"""The position-wise feed-forward block of a Transformer layer (BERT's intermediate + output dense).

Forward:   u = x W1^T + b1        (B, T, H) -> (B, T, F),   F = 4H in BERT
           g = act(u)             act = gelu (erf) by default; gelu_new or relu by name (layers/activation.py)
           y = g W2^T + b2        (B, T, F) -> (B, T, H)
Backward:  dg = dy W2,  du = act'(u) * dg,  dx = du W1  (+ weight and bias gradients)
"""
from __future__ import annotations

from minispanbert.layers.activation import activation_backward, activation_forward
from minispanbert.layers.linear import linear_backward, linear_forward


def feedforward_forward(x, w1, b1, w2, b2, *, xp, activation="gelu"):
    """x (..., H), w1 (F, H), b1 (F,), w2 (H, F), b2 (H,) -> (y (..., H), cache)."""
    u, cache1 = linear_forward(x, w1, b1, xp=xp)
    g, gelu_cache = activation_forward(u, activation, xp=xp)
    y, cache2 = linear_forward(g, w2, b2, xp=xp)
    return y, (cache1, gelu_cache, cache2)


def feedforward_backward(dy, cache, *, xp):
    """dy (..., H) -> (dx, dw1, db1, dw2, db2)."""
    cache1, gelu_cache, cache2 = cache
    dg, dw2, db2 = linear_backward(dy, cache2, xp=xp)
    du = activation_backward(dg, gelu_cache, xp=xp)
    dx, dw1, db1 = linear_backward(du, cache1, xp=xp)
    return dx, dw1, db1, dw2, db2
