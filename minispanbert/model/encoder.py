"""The BERT encoder (Devlin et al. 2019) exactly as SpanBERT uses it (spec §4): embeddings, then N
post-LayerNorm Transformer layers. Forward and backward side by side, on one flat parameter dict
keyed by Hugging Face ``BertModel`` names.

Embeddings (B, T) ids -> (B, T, H):
    e = E_word[ids] + E_pos[0..T-1] + E_type[token_type_ids]
    h_0 = dropout(LayerNorm(e))
Layer l = 1..N (post-LN, as BERT; "a" is HF's ``attention.output``):
    a   = LayerNorm(h + dropout(MHA(h)))               attention.self.* , attention.output.*
    h'  = LayerNorm(a + dropout(W2 gelu(W1 a + b1) + b2))  intermediate.dense, output.dense, output.LayerNorm

Parameter names and shapes (H hidden, F intermediate, V vocab, P max positions), weights (out, in):
    bert.embeddings.word_embeddings.weight         (V, H)   tied with the MLM and SBO decoders
    bert.embeddings.position_embeddings.weight     (P, H)
    bert.embeddings.token_type_embeddings.weight   (2, H)
    bert.embeddings.LayerNorm.{weight,bias}        (H,)
    bert.encoder.layer.{i}.attention.self.{query,key,value}.{weight (H, H), bias (H,)}
    bert.encoder.layer.{i}.attention.output.dense.{weight (H, H), bias (H,)}
    bert.encoder.layer.{i}.attention.output.LayerNorm.{weight,bias}  (H,)
    bert.encoder.layer.{i}.intermediate.dense.{weight (F, H), bias (F,)}
    bert.encoder.layer.{i}.output.dense.{weight (H, F), bias (H,)}
    bert.encoder.layer.{i}.output.LayerNorm.{weight,bias}            (H,)
Init (spec §4): weights N(0, 0.02), biases 0, LayerNorm weight 1 / bias 0.
"""
from __future__ import annotations

import numpy as np

from ..layers.attention import padding_mask_bias, self_attention_backward, self_attention_forward
from ..layers.dropout import dropout_backward, dropout_forward
from ..layers.embedding import embedding_backward, embedding_forward
from ..layers.feedforward import feedforward_backward, feedforward_forward
from ..layers.layernorm import layernorm_backward, layernorm_forward
from ..layers.residual import residual_layernorm_backward, residual_layernorm_forward

EMB = "bert.embeddings."
WORD_EMBEDDINGS = EMB + "word_embeddings.weight"


def layer_prefix(i: int) -> str:
    return f"bert.encoder.layer.{i}."


def normal_init(rng, shape, std):
    """N(0, std) as float64 on the host; the caller casts and moves it."""
    return rng.normal(0.0, std, size=shape)


def layernorm_init(params, prefix, size):
    params[prefix + "weight"] = np.ones(size)
    params[prefix + "bias"] = np.zeros(size)


def linear_init(params, prefix, out_features, in_features, rng, std):
    params[prefix + "weight"] = normal_init(rng, (out_features, in_features), std)
    params[prefix + "bias"] = np.zeros(out_features)


def init_encoder_params(config, rng) -> dict:
    """Host float64 parameters for the embeddings and every layer, drawn from ``rng`` (a
    numpy.random.Generator) in a fixed order, so a seed gives the same model on any backend."""
    H, F, std = config.hidden_size, config.intermediate_size, config.initializer_range
    params = {
        EMB + "word_embeddings.weight": normal_init(rng, (config.vocab_size, H), std),
        EMB + "position_embeddings.weight": normal_init(rng, (config.max_position_embeddings, H), std),
        EMB + "token_type_embeddings.weight": normal_init(rng, (config.type_vocab_size, H), std),
    }
    layernorm_init(params, EMB + "LayerNorm.", H)
    for i in range(config.num_hidden_layers):
        p = layer_prefix(i)
        for name in ("query", "key", "value"):
            linear_init(params, p + f"attention.self.{name}.", H, H, rng, std)
        linear_init(params, p + "attention.output.dense.", H, H, rng, std)
        layernorm_init(params, p + "attention.output.LayerNorm.", H)
        linear_init(params, p + "intermediate.dense.", F, H, rng, std)
        linear_init(params, p + "output.dense.", H, F, rng, std)
        layernorm_init(params, p + "output.LayerNorm.", H)
    return params


def _is_host_array(a) -> bool:
    return isinstance(a, np.ndarray)


def validate_encoder_inputs(input_ids, token_type_ids, attention_mask, config) -> None:
    """Shape, dtype and range checks with one-line messages. Value ranges are checked only for
    host (NumPy) arrays: checking device arrays would force a GPU sync every step, so callers
    validate the host batch before moving it (CuPy would otherwise wrap bad ids silently)."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be 2-D (batch, seq_len), got shape {input_ids.shape}")
    if input_ids.dtype.kind not in "iu":
        raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
    B, T = input_ids.shape
    if T > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {T} exceeds max_position_embeddings {config.max_position_embeddings}: "
            "use a shorter --seq-len or a preset with more positions"
        )
    for name, arr in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
        if arr.shape != (B, T):
            raise ValueError(f"{name} must have the shape of input_ids {(B, T)}, got {arr.shape}")
    if _is_host_array(input_ids) and input_ids.size and (input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
        raise ValueError(
            f"token ids must lie in [0, {config.vocab_size}), got min {input_ids.min()} max {input_ids.max()}: "
            "the tokenizer and the model's vocab_size disagree"
        )
    if _is_host_array(token_type_ids) and token_type_ids.size and (
        token_type_ids.min() < 0 or token_type_ids.max() >= config.type_vocab_size
    ):
        raise ValueError(f"token_type_ids must lie in [0, {config.type_vocab_size})")


def encoder_forward(params, input_ids, token_type_ids, attention_mask, config, *, xp,
                    train=False, rng=None):
    """(B, T) ids, token types and attention mask (1 real / 0 pad) -> (h (B, T, H), cache).

    ``rng`` (``backend.make_rng``) supplies dropout masks when ``train`` is true.
    """
    validate_encoder_inputs(input_ids, token_type_ids, attention_mask, config)
    input_ids, token_type_ids, attention_mask = (xp.asarray(a) for a in (input_ids, token_type_ids, attention_mask))
    T = input_ids.shape[1]
    dtype = params[WORD_EMBEDDINGS].dtype
    hidden_p, attn_p, eps = config.hidden_dropout_prob, config.attention_probs_dropout_prob, config.layer_norm_eps

    word, word_cache = embedding_forward(input_ids, params[WORD_EMBEDDINGS], xp=xp)
    token_type, type_cache = embedding_forward(token_type_ids, params[EMB + "token_type_embeddings.weight"], xp=xp)
    summed = word
    summed += token_type
    summed += params[EMB + "position_embeddings.weight"][:T]
    h, emb_ln_cache = layernorm_forward(summed, params[EMB + "LayerNorm.weight"], params[EMB + "LayerNorm.bias"], xp=xp, eps=eps)
    h, emb_drop_cache = dropout_forward(h, hidden_p, rng, xp=xp, train=train)

    mask_bias = padding_mask_bias(attention_mask, dtype, xp=xp)
    layer_caches = []
    for i in range(config.num_hidden_layers):
        p = layer_prefix(i)
        attn_out, attn_cache = self_attention_forward(
            h,
            params[p + "attention.self.query.weight"], params[p + "attention.self.query.bias"],
            params[p + "attention.self.key.weight"], params[p + "attention.self.key.bias"],
            params[p + "attention.self.value.weight"], params[p + "attention.self.value.bias"],
            params[p + "attention.output.dense.weight"], params[p + "attention.output.dense.bias"],
            mask_bias, num_heads=config.num_attention_heads, xp=xp, dropout_p=attn_p, rng=rng, train=train,
        )
        a, attn_res_cache = residual_layernorm_forward(
            h, attn_out, params[p + "attention.output.LayerNorm.weight"], params[p + "attention.output.LayerNorm.bias"],
            xp=xp, eps=eps, dropout_p=hidden_p, rng=rng, train=train,
        )
        ffn_out, ffn_cache = feedforward_forward(
            a, params[p + "intermediate.dense.weight"], params[p + "intermediate.dense.bias"],
            params[p + "output.dense.weight"], params[p + "output.dense.bias"], xp=xp,
        )
        h, ffn_res_cache = residual_layernorm_forward(
            a, ffn_out, params[p + "output.LayerNorm.weight"], params[p + "output.LayerNorm.bias"],
            xp=xp, eps=eps, dropout_p=hidden_p, rng=rng, train=train,
        )
        layer_caches.append((attn_cache, attn_res_cache, ffn_cache, ffn_res_cache))
    cache = (word_cache, type_cache, emb_ln_cache, emb_drop_cache, layer_caches, T, config)
    return h, cache


def encoder_backward(dh, cache, *, xp) -> dict:
    """dh (B, T, H) -> gradients for every encoder parameter, keyed like the parameters."""
    word_cache, type_cache, emb_ln_cache, emb_drop_cache, layer_caches, T, config = cache
    grads = {}
    for i in reversed(range(config.num_hidden_layers)):
        p = layer_prefix(i)
        attn_cache, attn_res_cache, ffn_cache, ffn_res_cache = layer_caches[i]
        # h = LN(a + dropout(ffn(a)))
        da, dffn_out, grads[p + "output.LayerNorm.weight"], grads[p + "output.LayerNorm.bias"] = \
            residual_layernorm_backward(dh, ffn_res_cache, xp=xp)
        (da_ffn, grads[p + "intermediate.dense.weight"], grads[p + "intermediate.dense.bias"],
         grads[p + "output.dense.weight"], grads[p + "output.dense.bias"]) = feedforward_backward(dffn_out, ffn_cache, xp=xp)
        da = da + da_ffn
        # a = LN(h + dropout(MHA(h)))
        dh, dattn_out, grads[p + "attention.output.LayerNorm.weight"], grads[p + "attention.output.LayerNorm.bias"] = \
            residual_layernorm_backward(da, attn_res_cache, xp=xp)
        (dh_attn,
         grads[p + "attention.self.query.weight"], grads[p + "attention.self.query.bias"],
         grads[p + "attention.self.key.weight"], grads[p + "attention.self.key.bias"],
         grads[p + "attention.self.value.weight"], grads[p + "attention.self.value.bias"],
         grads[p + "attention.output.dense.weight"], grads[p + "attention.output.dense.bias"]) = \
            self_attention_backward(dattn_out, attn_cache, xp=xp)
        dh = dh + dh_attn
    # h_0 = dropout(LN(word + position + token_type))
    dh = dropout_backward(dh, emb_drop_cache, xp=xp)
    dsummed, grads[EMB + "LayerNorm.weight"], grads[EMB + "LayerNorm.bias"] = layernorm_backward(dh, emb_ln_cache, xp=xp)
    grads[WORD_EMBEDDINGS] = embedding_backward(dsummed, word_cache, xp=xp)
    grads[EMB + "token_type_embeddings.weight"] = embedding_backward(dsummed, type_cache, xp=xp)
    dpos = xp.zeros((config.max_position_embeddings, dsummed.shape[-1]), dtype=dsummed.dtype)
    dpos[:T] = dsummed.sum(axis=0)
    grads[EMB + "position_embeddings.weight"] = dpos
    return grads
