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

The BERT family (bert-family-spec.md §1), selected by ``config`` (config.py), on the same code:
    prefix        ``config.model_type + "."``: bert. / roberta. / albert. / electra.
    activation    act = config.hidden_act in the FFN (gelu erf; ALBERT gelu_new)
    RoBERTa       e = E_word[ids] + E_pos[pos] + E_type[t], pos = cumsum(m) m + pad, m = (ids != pad)
                  (position_ids); P = max_len + pad + 1; type_vocab_size 1
    E != H        the three tables and the embedding LayerNorm are E wide and h_0 = e' W_p^T + b_p
                  follows (W_p (H, E)): albert.encoder.embedding_hidden_mapping_in (always),
                  electra.embeddings_project (when E != H)
    ALBERT        layer names albert.encoder.albert_layer_groups.{g}.albert_layers.{k}.{attention.
                  {query,key,value,dense,LayerNorm}, ffn, ffn_output, full_layer_layer_norm}; the
                  L*K applications follow layer_schedule, each with its own cache, and a shared
                  weight's gradient is the sum over its applications:
                      dW = sum over applications a that use W of dW_a
                  (checked against an unrolled copy in tests/test_family_encoder.py). No dropout on
                  the FFN output, as Hugging Face.
    pad_token_id  padding_idx rule: that word row (RoBERTa: and position row) gets no lookup gradient.
"""
from __future__ import annotations

import numpy as np

from minispanbert.layers.attention import padding_mask_bias, self_attention_backward, self_attention_forward
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.embedding import embedding_backward, embedding_forward
from minispanbert.layers.feedforward import feedforward_backward, feedforward_forward
from minispanbert.layers.layernorm import layernorm_backward, layernorm_forward
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.layers.residual import residual_layernorm_backward, residual_layernorm_forward

EMB = "bert.embeddings."
WORD_EMBEDDINGS = EMB + "word_embeddings.weight"

# One layer's parameters by role; each model type spells them its own way (layer_names).
LAYER_ROLES = ("query", "key", "value", "attention_dense", "attention_ln", "intermediate", "output", "output_ln")
_BERT_LAYER = dict(query="attention.self.query.", key="attention.self.key.", value="attention.self.value.",
                   attention_dense="attention.output.dense.", attention_ln="attention.output.LayerNorm.",
                   intermediate="intermediate.dense.", output="output.dense.", output_ln="output.LayerNorm.")
_ALBERT_LAYER = dict(query="attention.query.", key="attention.key.", value="attention.value.",
                     attention_dense="attention.dense.", attention_ln="attention.LayerNorm.",
                     intermediate="ffn.", output="ffn_output.", output_ln="full_layer_layer_norm.")


def layer_prefix(i: int, config=None) -> str:
    """The name prefix of parameter layer ``i`` (``bert.encoder.layer.{i}.``; for ALBERT ``i`` is
    the pair (group, inner index): ``albert.encoder.albert_layer_groups.{g}.albert_layers.{k}.``)."""
    model_type = "bert" if config is None else config.model_type
    if model_type == "albert":
        g, k = i
        return f"albert.encoder.albert_layer_groups.{g}.albert_layers.{k}."
    return f"{model_type}.encoder.layer.{i}."


def layer_names(i, config) -> dict:
    """role -> parameter prefix (ending in '.') of parameter layer ``i`` (see ``layer_prefix``)."""
    table = _ALBERT_LAYER if config.model_type == "albert" else _BERT_LAYER
    p = layer_prefix(i, config)
    return {role: p + table[role] for role in LAYER_ROLES}


def parameter_layers(config) -> list:
    """The distinct parameter layers, in init order: 0..L-1, or ALBERT's (g, k) for G groups of K."""
    if config.model_type == "albert":
        return [(g, k) for g in range(config.num_hidden_groups) for k in range(config.inner_group_num)]
    return list(range(config.num_hidden_layers))


def layer_schedule(config) -> list:
    """The parameter layer each application uses, in order. BERT: 0..L-1. ALBERT (Hugging Face
    ``AlbertTransformer``): for i in 0..L-1, group g = int(i / (L / G)) runs its K layers in order,
    so L2/G2/K2 -> (0,0),(0,1),(1,0),(1,1) and L6/G4/K1 -> groups 0,0,1,2,2,3."""
    if config.model_type != "albert":
        return list(range(config.num_hidden_layers))
    L, G, K = config.num_hidden_layers, config.num_hidden_groups, config.inner_group_num
    return [(int(i / (L / G)), k) for i in range(L) for k in range(K)]


def encoder_prefix(config) -> str:
    """``bert.``, ``roberta.``, ``albert.`` or ``electra.``: the prefix of every encoder parameter."""
    return f"{config.model_type}."


def embeddings_prefix(config) -> str:
    return f"{config.model_type}.embeddings."


def word_embeddings_name(config) -> str:
    """The (V, E) word table, which the MLM decoder reuses (tied)."""
    return embeddings_prefix(config) + "word_embeddings.weight"


def projection_prefix(config):
    """The E -> H Linear after the embeddings, or None: ALBERT's ``embedding_hidden_mapping_in``
    (always, as Hugging Face), ELECTRA's ``embeddings_project`` (only when E != H)."""
    if config.model_type == "albert":
        return "albert.encoder.embedding_hidden_mapping_in."
    if config.model_type == "electra" and config.embedding_width != config.hidden_size:
        return "electra.embeddings_project."
    return None


def pooler_prefix(config):
    """Where a model type keeps its pooler (model/pooler.py): ``bert.pooler.dense.`` and
    ``albert.pooler.`` (no ``.dense``); None for RoBERTa (its MLM model has none) and ELECTRA."""
    return {"bert": "bert.pooler.dense.", "albert": "albert.pooler."}.get(config.model_type)


def key_bias_names(config) -> set:
    """The attention key biases: their true gradient is exactly zero (a constant shift of a score
    row), so gradient checks compare them with an absolute tolerance."""
    return {layer_names(i, config)["key"] + "bias" for i in parameter_layers(config)}


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

    ``rng`` (``backend.make_rng``) supplies dropout masks when ``train`` is true. Each application
    of a layer keeps its own cache, so a shared ALBERT layer is differentiated once per use.
    """
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
    h, emb_ln_cache = layernorm_forward(summed, params[emb + "LayerNorm.weight"], params[emb + "LayerNorm.bias"], xp=xp, eps=eps)
    h, emb_drop_cache = dropout_forward(h, hidden_p, rng, xp=xp, train=train)
    projection = projection_prefix(config)
    proj_cache = None
    if projection is not None:  # E -> H
        h, proj_cache = linear_forward(h, params[projection + "weight"], params[projection + "bias"], xp=xp)

    mask_bias = padding_mask_bias(attention_mask, dtype, xp=xp)
    layer_caches = []
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
    cache = (word_cache, type_cache, pos_cache, emb_ln_cache, emb_drop_cache, proj_cache, layer_caches, T, config)
    return h, cache


def _accumulate(grads, name, value):
    """grads[name] += value, creating it on first use: a shared weight's gradient is the sum over
    every application that read it."""
    if name in grads:
        grads[name] = grads[name] + value
    else:
        grads[name] = value


def encoder_backward(dh, cache, *, xp) -> dict:
    """dh (B, T, H) -> gradients for every encoder parameter, keyed like the parameters."""
    word_cache, type_cache, pos_cache, emb_ln_cache, emb_drop_cache, proj_cache, layer_caches, T, config = cache
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
    dsummed, grads[emb + "LayerNorm.weight"], grads[emb + "LayerNorm.bias"] = layernorm_backward(dh, emb_ln_cache, xp=xp)
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
