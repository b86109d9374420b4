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

The BERT family spells the same head differently (``MLMHeadNames``, ``mlm_head_names(config)``):
    BERT     cls.predictions.transform.{dense,LayerNorm}, cls.predictions.bias; act = hidden_act
    RoBERTa  lm_head.dense, lm_head.layer_norm (lower-case), lm_head.bias; act = erf gelu, hard-coded
    ALBERT   predictions.dense (E, H), predictions.LayerNorm (E), predictions.bias; act = hidden_act
With E != H the transform maps H -> E, so the logits t E_word^T stay a product with the (V, E) table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.model.encoder import layernorm_init, linear_init
from minispanbert.model.names import WORD_EMBEDDINGS, word_embeddings_name
from minispanbert.model.transform import transform_backward, transform_forward

P = "cls.predictions."


@dataclass(frozen=True)
class MLMHeadNames:
    """Where one model type keeps its MLM head: the transform's Linear and LayerNorm prefixes
    (ending in '.'), the output bias, the tied decoder table, and the transform's activation."""
    dense: str
    layer_norm: str
    bias: str
    decoder: str
    activation: str = "gelu"


BERT_MLM = MLMHeadNames(P + "transform.dense.", P + "transform.LayerNorm.", P + "bias", WORD_EMBEDDINGS)


def mlm_head_names(config) -> MLMHeadNames:
    """The Hugging Face names of ``config.model_type``'s MLM head (the electra helper builds its own
    generator names the same way)."""
    decoder = word_embeddings_name(config)
    if config.model_type == "roberta":  # RobertaLMHead calls erf gelu whatever hidden_act says
        return MLMHeadNames("lm_head.dense.", "lm_head.layer_norm.", "lm_head.bias", decoder, "gelu")
    if config.model_type == "albert":
        return MLMHeadNames("predictions.dense.", "predictions.LayerNorm.", "predictions.bias", decoder,
                            config.hidden_act)
    return MLMHeadNames(P + "transform.dense.", P + "transform.LayerNorm.", P + "bias", decoder, config.hidden_act)


def init_mlm_head_params(config, rng, names: MLMHeadNames | None = None) -> dict:
    names = names or mlm_head_names(config)
    E = config.embedding_width
    params = {}
    linear_init(params, names.dense, E, config.hidden_size, rng, config.initializer_range)
    layernorm_init(params, names.layer_norm, E)
    params[names.bias] = np.zeros(config.vocab_size)
    return params


def mlm_head_forward(params, h, positions, *, xp, eps=1e-12, names: MLMHeadNames = BERT_MLM):
    """h (B, T, H), positions (N,) flat indices into B*T -> (logits (N, V), cache)."""
    hidden = h.shape[-1]
    gathered = h.reshape(-1, hidden)[positions]
    t, transform_cache = transform_forward(
        gathered, params[names.dense + "weight"], params[names.dense + "bias"],
        params[names.layer_norm + "weight"], params[names.layer_norm + "bias"], xp=xp, eps=eps,
        activation=names.activation)
    logits, decoder_cache = linear_forward(t, params[names.decoder], params[names.bias], xp=xp)
    return logits, (transform_cache, decoder_cache, positions, h.shape, names)


def mlm_head_backward(dlogits, cache, *, xp):
    """dlogits (N, V) -> (dh (B, T, H), grads for the head and the decoder's share of E)."""
    transform_cache, decoder_cache, positions, h_shape, names = cache
    grads = {}
    # logits = t E^T + b_mlm
    dt, grads[names.decoder], grads[names.bias] = linear_backward(dlogits, decoder_cache, xp=xp)
    (dgathered, grads[names.dense + "weight"], grads[names.dense + "bias"],
     grads[names.layer_norm + "weight"], grads[names.layer_norm + "bias"]) = transform_backward(dt, transform_cache, xp=xp)
    # gathered = h.reshape(B*T, H)[positions]
    dh = xp.zeros((h_shape[0] * h_shape[1], h_shape[2]), dtype=dgathered.dtype)
    dh[positions] = dgathered
    return dh.reshape(h_shape), grads
