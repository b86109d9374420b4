"""The Span Boundary Objective head, SpanBERT §3.2 (eqs. 1-2), as in the authors'
``BertPairTargetPredictionHead``.

For a masked span x_s..x_e and each token x_i in it, with h the final encoder states:
    h0  = [h_{s-1}; h_{e+1}; p_{i-s+1}]              (P, 2H + D)   eq. (1): the EXTERNAL boundaries
    h1  = LayerNorm(gelu(W1 h0 + b1))                (P, H)        eq. (2), first layer
    y_i = LayerNorm(gelu(W2 h1 + b2))                (P, H)        eq. (2), second layer
    logits = y_i E^T + b_sbo                         (P, V)        decoder tied to the word embeddings
The boundary tokens x_{s-1} and x_{e+1} are never masked (span merging guarantees it), so the
head must reconstruct every span token from the context just outside the span plus where the
token sits in it. p is a learned relative-position table, ``config.sbo_max_targets`` rows of
``config.sbo_position_dim`` (15 x 200 in the authors' code); row i - s is the paper's p_{i-s+1}.
b_sbo is separate from the MLM bias (authors' code). LayerNorm eps 1e-12, exact erf GeLU, no dropout.

Backward: dlogits -> decoder (dE share, db_sbo) -> two transforms -> dh0, split into
dh_left (P, H), dh_right (P, H), dp (P, D). Many targets share a boundary (every token of a span
reads the same two), so they are scatter-ADDED into dh (B, T, H) and into the position table.

Parameters ("cls.sbo." prefix, our naming; the MLM head keeps Hugging Face's names):
    cls.sbo.position_embeddings.weight  (sbo_max_targets, D)
    cls.sbo.mlp.0.dense.{weight (H, 2H + D), bias (H,)}   cls.sbo.mlp.0.LayerNorm.{weight, bias}
    cls.sbo.mlp.1.dense.{weight (H, H), bias (H,)}        cls.sbo.mlp.1.LayerNorm.{weight, bias}
    cls.sbo.bias  (V,)
"""
from __future__ import annotations

import numpy as np

from minispanbert.backend import scatter_add
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.model.encoder import layernorm_init, linear_init, normal_init
from minispanbert.model.names import WORD_EMBEDDINGS
from minispanbert.model.transform import transform_backward, transform_forward

P = "cls.sbo."
POSITIONS = P + "position_embeddings.weight"


def init_sbo_head_params(config, rng) -> dict:
    H, D, std = config.hidden_size, config.sbo_position_dim, config.initializer_range
    params = {POSITIONS: normal_init(rng, (config.sbo_max_targets, D), std)}
    linear_init(params, P + "mlp.0.dense.", H, 2 * H + D, rng, std)
    layernorm_init(params, P + "mlp.0.LayerNorm.", H)
    linear_init(params, P + "mlp.1.dense.", H, H, rng, std)
    layernorm_init(params, P + "mlp.1.LayerNorm.", H)
    params[P + "bias"] = np.zeros(config.vocab_size)
    return params


def _mlp_params(params, i):
    p = f"{P}mlp.{i}."
    return (params[p + "dense.weight"], params[p + "dense.bias"], params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"])


def sbo_head_forward(params, h, left, right, rel_pos, *, xp, eps=1e-12):
    """h (B, T, H); left, right (P,) flat indices into B*T of x_{s-1}, x_{e+1}; rel_pos (P,) = i - s
    -> (logits (P, V), cache)."""
    hidden = h.shape[-1]
    flat = h.reshape(-1, hidden)
    h0 = xp.concatenate([flat[left], flat[right], params[POSITIONS][rel_pos]], axis=1)
    h1, cache0 = transform_forward(h0, *_mlp_params(params, 0), xp=xp, eps=eps)
    y, cache1 = transform_forward(h1, *_mlp_params(params, 1), xp=xp, eps=eps)
    logits, decoder_cache = linear_forward(y, params[WORD_EMBEDDINGS], params[P + "bias"], xp=xp)
    return logits, (cache0, cache1, decoder_cache, left, right, rel_pos, h.shape, params[POSITIONS].shape)


def sbo_head_backward(dlogits, cache, *, xp):
    """dlogits (P, V) -> (dh (B, T, H), grads for cls.sbo.* and the decoder's share of E)."""
    cache0, cache1, decoder_cache, left, right, rel_pos, h_shape, table_shape = cache
    grads = {}
    # logits = y E^T + b_sbo
    dy, grads[WORD_EMBEDDINGS], grads[P + "bias"] = linear_backward(dlogits, decoder_cache, xp=xp)
    # y = LN(gelu(W2 h1 + b2)); h1 = LN(gelu(W1 h0 + b1))
    names = ("dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias")
    dh1, *g1 = transform_backward(dy, cache1, xp=xp)
    dh0, *g0 = transform_backward(dh1, cache0, xp=xp)
    for i, g in ((0, g0), (1, g1)):
        grads.update({f"{P}mlp.{i}.{n}": gi for n, gi in zip(names, g)})
    # h0 = [h[left]; h[right]; table[rel_pos]]: scatter-add, boundaries are shared by many targets
    hidden = h_shape[-1]
    dh = xp.zeros((h_shape[0] * h_shape[1], hidden), dtype=dh0.dtype)
    scatter_add(dh, left, dh0[:, :hidden], xp=xp)
    scatter_add(dh, right, dh0[:, hidden:2 * hidden], xp=xp)
    dtable = xp.zeros(table_shape, dtype=dh0.dtype)
    scatter_add(dtable, rel_pos, dh0[:, 2 * hidden:], xp=xp)
    grads[POSITIONS] = dtable
    return dh.reshape(h_shape), grads
