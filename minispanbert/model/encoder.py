"""The BERT encoder (Devlin et al. 2019) exactly as SpanBERT uses it (spec §4): embeddings, then N
post-LayerNorm Transformer layers. Forward and backward side by side, on one flat parameter dict
keyed by Hugging Face ``BertModel`` names (model/names.py).

Embeddings (B, T) ids -> (B, T, H):
    e = E_word[ids] + E_pos[0..T-1] + E_type[token_type_ids]
    h_0 = dropout(LayerNorm(e))
Layer l = 1..N (post-LN, as BERT; "a" is HF's ``attention.output``):
    a   = LayerNorm(h + dropout(MHA(h)))
    h'  = LayerNorm(a + dropout(W2 act(W1 a + b1) + b2))
Backward runs the same lines in reverse; a weight read by several applications (ALBERT's shared
layers) gets the sum of their gradients: dW = sum over applications a that use W of dW_a.
Init (spec §4): weights N(0, 0.02), biases 0, LayerNorm weight 1 / bias 0.

The BERT family (bert-family-spec.md §1) on the same code, selected by ``config`` (config.py):
    act           config.hidden_act in the FFN (gelu erf; ALBERT gelu_new)
    RoBERTa       pos = cumsum(m) m + pad, m = (ids != pad) (position_ids); type_vocab_size 1
    E != H        the embeddings are E wide and h_0 = e' W_p^T + b_p follows (W_p (H, E))
    ALBERT        L*K applications of G*K weight sets (names.layer_schedule); no dropout on the
                  FFN output, as Hugging Face
    pad_token_id  padding_idx rule: that word row (RoBERTa: and position row) gets no lookup gradient
"""
from __future__ import annotations

import numpy as np

from minispanbert.layers import layernorm
from minispanbert.layers.attention import (
    attention_probabilities,
    padding_mask_bias,
    self_attention_backward,
    self_attention_forward,
)
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.embedding import embedding_backward, embedding_forward
from minispanbert.layers.feedforward import feedforward_backward, feedforward_forward
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.layers.residual import residual_layernorm_backward, residual_layernorm_forward
from minispanbert.model.names import embeddings_prefix, layer_names, layer_schedule, parameter_layers, projection_prefix


def position_ids(input_ids, config, *, xp):
    """(B, T) position ids. BERT/ALBERT/ELECTRA: 0..T-1 in every row. RoBERTa (Hugging Face
    ``create_position_ids_from_input_ids``): m = (ids != pad), pos = cumsum(m) * m + pad, so the
    first token gets pad + 1 and every pad gets pad (a pad mid-row does not restart the count:
    [0,7,1,8,2,1] -> [2,3,1,4,5,1] with pad 1)."""
    B, T = input_ids.shape
    if config.model_type != "roberta":
        return xp.broadcast_to(xp.arange(T), (B, T))
    real = (input_ids != config.pad_token_id).astype(input_ids.dtype)
    return xp.cumsum(real, axis=1) * real + config.pad_token_id


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
    numpy.random.Generator) in a fixed order, so a seed gives the same model on any backend.
    With ``pad_token_id`` set, that word row (and RoBERTa's position row) starts at zero, as
    torch.nn.Embedding(padding_idx=...) does."""
    H, E, F, std = config.hidden_size, config.embedding_width, config.intermediate_size, config.initializer_range
    emb = embeddings_prefix(config)
    params = {
        emb + "word_embeddings.weight": normal_init(rng, (config.vocab_size, E), std),
        emb + "position_embeddings.weight": normal_init(rng, (config.max_position_embeddings, E), std),
        emb + "token_type_embeddings.weight": normal_init(rng, (config.type_vocab_size, E), std),
    }
    layernorm_init(params, emb + "LayerNorm.", E)
    if config.pad_token_id is not None:
        padded = ("word_embeddings.weight", "position_embeddings.weight") if config.model_type == "roberta" \
            else ("word_embeddings.weight",)
        for name in padded:
            table = np.array(params[emb + name])  # a writable copy
            table[config.pad_token_id] = 0.0
            params[emb + name] = table
    projection = projection_prefix(config)
    if projection is not None:
        linear_init(params, projection, H, E, rng, std)
    for i in parameter_layers(config):
        n = layer_names(i, config)
        for role in ("query", "key", "value", "attention_dense"):
            linear_init(params, n[role], H, H, rng, std)
        layernorm_init(params, n["attention_ln"], H)
        linear_init(params, n["intermediate"], F, H, rng, std)
        linear_init(params, n["output"], H, F, rng, std)
        layernorm_init(params, n["output_ln"], H)
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
    if T > config.max_sequence_length:
        raise ValueError(
            f"sequence length {T} exceeds max_position_embeddings {config.max_position_embeddings} "
            f"(the model takes at most {config.max_sequence_length} tokens): "
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

    ``token_type_ids`` None means zeros of the ids' shape (one segment), as Hugging Face's BertModel.
    ``rng`` (a :class:`minispanbert.keyed_random.KeyedRandom`) supplies dropout masks when ``train``
    is true. Each application of a layer keeps its own cache, so a shared ALBERT layer is
    differentiated once per use.
    """
    if token_type_ids is None:  # Hugging Face's default: every token in segment 0
        token_type_ids = np.zeros(np.shape(input_ids), dtype=np.int64)
    validate_encoder_inputs(input_ids, token_type_ids, attention_mask, config)
    input_ids, token_type_ids, attention_mask = (xp.asarray(a) for a in (input_ids, token_type_ids, attention_mask))
    T = input_ids.shape[1]
    emb = embeddings_prefix(config)
    dtype = params[emb + "word_embeddings.weight"].dtype
    hidden_p, attn_p, eps = config.hidden_dropout_prob, config.attention_probs_dropout_prob, config.layer_norm_eps
    # Hugging Face's ALBERT has no dropout on the FFN output (its module is defined but unused).
    ffn_p = 0.0 if config.model_type == "albert" else hidden_p

    word, word_cache = embedding_forward(input_ids, params[emb + "word_embeddings.weight"], xp=xp)
    token_type, type_cache = embedding_forward(token_type_ids, params[emb + "token_type_embeddings.weight"], xp=xp)
    summed = word
    summed += token_type
    if config.model_type == "roberta":
        position, pos_cache = embedding_forward(position_ids(input_ids, config, xp=xp),
                                                params[emb + "position_embeddings.weight"], xp=xp)
        summed += position
    else:
        pos_cache = None
        summed += params[emb + "position_embeddings.weight"][:T]
    h, emb_ln_cache = layernorm.layernorm_forward(summed, params[emb + "LayerNorm.weight"], params[emb + "LayerNorm.bias"], xp=xp, eps=eps)
    h, emb_drop_cache = dropout_forward(h, hidden_p, rng, xp=xp, train=train)
    projection = projection_prefix(config)
    proj_cache = None
    if projection is not None:  # E -> H
        h, proj_cache = linear_forward(h, params[projection + "weight"], params[projection + "bias"], xp=xp)

    mask_bias = padding_mask_bias(attention_mask, dtype, xp=xp)
    layer_caches, hidden = [], [h]
    for i in layer_schedule(config):
        n = layer_names(i, config)
        attn_out, attn_cache = self_attention_forward(
            h,
            params[n["query"] + "weight"], params[n["query"] + "bias"],
            params[n["key"] + "weight"], params[n["key"] + "bias"],
            params[n["value"] + "weight"], params[n["value"] + "bias"],
            params[n["attention_dense"] + "weight"], params[n["attention_dense"] + "bias"],
            mask_bias, num_heads=config.num_attention_heads, xp=xp, dropout_p=attn_p, rng=rng, train=train,
        )
        a, attn_res_cache = residual_layernorm_forward(
            h, attn_out, params[n["attention_ln"] + "weight"], params[n["attention_ln"] + "bias"],
            xp=xp, eps=eps, dropout_p=hidden_p, rng=rng, train=train,
        )
        ffn_out, ffn_cache = feedforward_forward(
            a, params[n["intermediate"] + "weight"], params[n["intermediate"] + "bias"],
            params[n["output"] + "weight"], params[n["output"] + "bias"], xp=xp, activation=config.hidden_act,
        )
        h, ffn_res_cache = residual_layernorm_forward(
            a, ffn_out, params[n["output_ln"] + "weight"], params[n["output_ln"] + "bias"],
            xp=xp, eps=eps, dropout_p=ffn_p, rng=rng, train=train,
        )
        layer_caches.append((n, attn_cache, attn_res_cache, ffn_cache, ffn_res_cache))
        hidden.append(h)
    cache = (word_cache, type_cache, pos_cache, emb_ln_cache, emb_drop_cache, proj_cache, layer_caches, T, config,
             hidden)
    return h, cache


def hidden_states(cache) -> list:
    """[h_0, h_1, ..., h_N], each (B, T, H): the embeddings' output (after the E -> H projection
    when there is one), then every layer application's, as Hugging Face's ``output_hidden_states``."""
    return cache[-1]


def attentions(cache) -> list:
    """Per layer application, (B, heads, T, T) attention weights, as Hugging Face's
    ``output_attentions`` (row i: how much token i reads each token; padded keys get 0)."""
    return [attention_probabilities(attn_cache) for _, attn_cache, *_ in cache[6]]


def _accumulate(grads, name, value):
    """grads[name] += value, creating it on first use: a shared weight's gradient is the sum over
    every application that read it."""
    if name in grads:
        grads[name] = grads[name] + value
    else:
        grads[name] = value


def encoder_backward(dh, cache, *, xp) -> dict:
    """dh (B, T, H) -> gradients for every encoder parameter, keyed like the parameters."""
    word_cache, type_cache, pos_cache, emb_ln_cache, emb_drop_cache, proj_cache, layer_caches, T, config, _ = cache
    grads = {}
    for n, attn_cache, attn_res_cache, ffn_cache, ffn_res_cache in reversed(layer_caches):
        local = {}
        # h = LN(a + dropout(ffn(a)))
        da, dffn_out, local[n["output_ln"] + "weight"], local[n["output_ln"] + "bias"] = \
            residual_layernorm_backward(dh, ffn_res_cache, xp=xp)
        (da_ffn, local[n["intermediate"] + "weight"], local[n["intermediate"] + "bias"],
         local[n["output"] + "weight"], local[n["output"] + "bias"]) = feedforward_backward(dffn_out, ffn_cache, xp=xp)
        da = da + da_ffn
        # a = LN(h + dropout(MHA(h)))
        dh, dattn_out, local[n["attention_ln"] + "weight"], local[n["attention_ln"] + "bias"] = \
            residual_layernorm_backward(da, attn_res_cache, xp=xp)
        (dh_attn,
         local[n["query"] + "weight"], local[n["query"] + "bias"],
         local[n["key"] + "weight"], local[n["key"] + "bias"],
         local[n["value"] + "weight"], local[n["value"] + "bias"],
         local[n["attention_dense"] + "weight"], local[n["attention_dense"] + "bias"]) = \
            self_attention_backward(dattn_out, attn_cache, xp=xp)
        dh = dh + dh_attn
        for name, value in local.items():
            _accumulate(grads, name, value)
    projection = projection_prefix(config)
    if projection is not None:
        # h = h_emb W^T + b   (E -> H)
        dh, grads[projection + "weight"], grads[projection + "bias"] = linear_backward(dh, proj_cache, xp=xp)
    # h_emb = dropout(LN(word + position + token_type))
    emb = embeddings_prefix(config)
    dh = dropout_backward(dh, emb_drop_cache, xp=xp)
    dsummed, grads[emb + "LayerNorm.weight"], grads[emb + "LayerNorm.bias"] = layernorm.layernorm_backward(dh, emb_ln_cache, xp=xp)
    grads[emb + "word_embeddings.weight"] = embedding_backward(dsummed, word_cache, xp=xp)
    grads[emb + "token_type_embeddings.weight"] = embedding_backward(dsummed, type_cache, xp=xp)
    if pos_cache is not None:  # RoBERTa: a lookup at pad+1+i
        dpos = embedding_backward(dsummed, pos_cache, xp=xp)
    else:
        dpos = xp.zeros((config.max_position_embeddings, dsummed.shape[-1]), dtype=dsummed.dtype)
        dpos[:T] = dsummed.sum(axis=0)
    grads[emb + "position_embeddings.weight"] = dpos
    if config.pad_token_id is not None:
        # padding_idx rule: the pad row gets no lookup gradient (the tied decoder adds its own later)
        grads[emb + "word_embeddings.weight"][config.pad_token_id] = 0.0
        if pos_cache is not None:
            dpos[config.pad_token_id] = 0.0
    return grads
