"""BERT's pooler: a dense layer with tanh on the first token's final hidden state (BERT §3, the
"C" vector that the NSP and sentence-classification heads read; Hugging Face ``BertPooler``,
parameters ``bert.pooler.dense.{weight,bias}``; ALBERT's is ``albert.pooler.{weight,bias}``).

Forward:   p = tanh(W h[:, 0] + b)              h (B, T, H), W (H, H), b (H,) -> p (B, H)
Backward:  dz = dp * (1 - p^2)                  (d tanh(z)/dz = 1 - tanh(z)^2, from the cached p)
           dW = dz^T h[:, 0],  db = sum_b dz,   dh[:, 0] = dz W,  dh[:, 1:] = 0
Only the first position receives gradient: every other token reaches a classification loss only
through attention, not through the pooler.
"""
from __future__ import annotations

from minispanbert.layers.linear import linear_backward, linear_forward


def pooler_forward(h, weight, bias, *, xp):
    """h (B, T, H) -> (pooled (B, H), cache)."""
    z, linear_cache = linear_forward(h[:, 0], weight, bias, xp=xp)
    pooled = xp.tanh(z)
    return pooled, (linear_cache, pooled, h.shape)


def pooler_backward(dpooled, cache, *, xp):
    """dpooled (B, H) -> (dh (B, T, H), dweight (H, H), dbias (H,))."""
    linear_cache, pooled, h_shape = cache
    # pooled = tanh(z)
    dz = dpooled * (1.0 - pooled * pooled)
    # z = h[:, 0] W^T + b
    dfirst, dweight, dbias = linear_backward(dz, linear_cache, xp=xp)
    dh = xp.zeros(h_shape, dtype=dfirst.dtype)
    dh[:, 0] = dfirst
    return dh, dweight, dbias
