"""The masked-language-model head (BERT §3.1, ``cls.predictions``; SpanBERT §3.3 keeps it and adds
the SBO), evaluated at masked positions only.

For the final encoder states h (B, T, H) and the flat indices M of the N masked positions:
    h_M    = h.reshape(B*T, H)[M]                                  (N, H)   gather first
    t      = LayerNorm(gelu(h_M W^T + b))                          (N, H)   cls.predictions.transform
    logits = t E^T + b_mlm                                         (N, V)   decoder tied to E
E is ``bert.embeddings.word_embeddings.weight`` (V, H): the decoder has no weight of its own, so its
gradient is added to the embedding gradient (the spec's three sources: lookup, MLM, SBO).
Gathering before the vocabulary projection gives the same loss as projecting all B*T positions
and ignoring the unmasked ones (tested), at ~15% of the cost.

Backward: dlogits -> (dt = dlogits E, dE += dlogits^T t, db_mlm = sum dlogits) -> transform
backward -> dh_M, scattered back into a zero (B, T, H) array (positions are distinct, so plain
assignment is exact).

Parameters: cls.predictions.transform.dense.{weight (H, H), bias (H,)},
            cls.predictions.transform.LayerNorm.{weight, bias} (H,), cls.predictions.bias (V,).
"""
from __future__ import annotations

import numpy as np

from ..layers.linear import linear_backward, linear_forward
from .encoder import WORD_EMBEDDINGS, layernorm_init, linear_init
from .transform import transform_backward, transform_forward

P = "cls.predictions."


def init_mlm_head_params(config, rng) -> dict:
    params = {}
    linear_init(params, P + "transform.dense.", config.hidden_size, config.hidden_size, rng, config.initializer_range)
    layernorm_init(params, P + "transform.LayerNorm.", config.hidden_size)
    params[P + "bias"] = np.zeros(config.vocab_size)
    return params


def mlm_head_forward(params, h, positions, *, xp, eps=1e-12):
    """h (B, T, H), positions (N,) flat indices into B*T -> (logits (N, V), cache)."""
    hidden = h.shape[-1]
    gathered = h.reshape(-1, hidden)[positions]
    t, transform_cache = transform_forward(
        gathered, params[P + "transform.dense.weight"], params[P + "transform.dense.bias"],
        params[P + "transform.LayerNorm.weight"], params[P + "transform.LayerNorm.bias"], xp=xp, eps=eps)
    logits, decoder_cache = linear_forward(t, params[WORD_EMBEDDINGS], params[P + "bias"], xp=xp)
    return logits, (transform_cache, decoder_cache, positions, h.shape)


def mlm_head_backward(dlogits, cache, *, xp):
    """dlogits (N, V) -> (dh (B, T, H), grads for cls.predictions.* and the decoder's share of E)."""
    transform_cache, decoder_cache, positions, h_shape = cache
    grads = {}
    # logits = t E^T + b_mlm
    dt, grads[WORD_EMBEDDINGS], grads[P + "bias"] = linear_backward(dlogits, decoder_cache, xp=xp)
    (dgathered, grads[P + "transform.dense.weight"], grads[P + "transform.dense.bias"],
     grads[P + "transform.LayerNorm.weight"], grads[P + "transform.LayerNorm.bias"]) = transform_backward(dt, transform_cache, xp=xp)
    # gathered = h.reshape(B*T, H)[positions]
    dh = xp.zeros((h_shape[0] * h_shape[1], h_shape[2]), dtype=dgathered.dtype)
    dh[positions] = dgathered
    return dh.reshape(h_shape), grads
