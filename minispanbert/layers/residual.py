"""Residual connection followed by LayerNorm: BERT's post-LN sublayer wrapper.

Forward:   y = LayerNorm(x + dropout(s))      x: the sublayer's input, s: the sublayer's output
Backward:  dz = LayerNorm_backward(dy);  dx = dz;  ds = dropout_backward(dz)
Post-LN (normalise AFTER adding) is BERT's and SpanBERT's order; pre-LN, LN(x) fed to the
sublayer, is a different model (GPT-2 and later), and normalising before adding is a bug seen in
peers.
"""
from __future__ import annotations

from minispanbert.layers import layernorm
from minispanbert.layers.dropout import dropout_backward, dropout_forward


def residual_layernorm_forward(x, sublayer_out, gamma, beta, *, xp, eps=1e-12, dropout_p=0.0,
                               rng=None, train=False):
    """x, sublayer_out (..., H) -> (y (..., H), cache)."""
    dropped, dropout_cache = dropout_forward(sublayer_out, dropout_p, rng, xp=xp, train=train)
    y, ln_cache = layernorm.layernorm_forward(x + dropped, gamma, beta, xp=xp, eps=eps)
    return y, (dropout_cache, ln_cache)


def residual_layernorm_backward(dy, cache, *, xp):
    """dy (..., H) -> (dx, dsublayer_out, dgamma, dbeta)."""
    dropout_cache, ln_cache = cache
    dz, dgamma, dbeta = layernorm.layernorm_backward(dy, ln_cache, xp=xp)
    dsublayer = dropout_backward(dz, dropout_cache, xp=xp)
    return dz, dsublayer, dgamma, dbeta
