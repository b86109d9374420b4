"""Where each parameter lives: the Hugging Face names of the encoder's tensors, for every model
type of the BERT family (``config.model_type``), so that a checkpoint's ``model.safetensors`` is a
``transformers`` state dict and the encoder's code says what a tensor is, not how it is spelled.

BERT / SpanBERT (``bert.``; RoBERTa ``roberta.``, ELECTRA ``electra.``), weights (out, in):
    bert.embeddings.word_embeddings.weight         (V, E)   tied with the MLM and SBO decoders
    bert.embeddings.position_embeddings.weight     (P, E)
    bert.embeddings.token_type_embeddings.weight   (2, E)
    bert.embeddings.LayerNorm.{weight,bias}        (E,)
    bert.encoder.layer.{i}.attention.self.{query,key,value}.{weight (H, H), bias (H,)}
    bert.encoder.layer.{i}.attention.output.dense.{weight (H, H), bias (H,)}
    bert.encoder.layer.{i}.attention.output.LayerNorm.{weight,bias}  (H,)
    bert.encoder.layer.{i}.intermediate.dense.{weight (F, H), bias (F,)}
    bert.encoder.layer.{i}.output.dense.{weight (H, F), bias (H,)}
    bert.encoder.layer.{i}.output.LayerNorm.{weight,bias}            (H,)
E != H (embedding_size): albert.encoder.embedding_hidden_mapping_in (always, as Hugging Face) or
electra.embeddings_project (only when E != H), a Linear E -> H after the embeddings.
ALBERT: albert.encoder.albert_layer_groups.{g}.albert_layers.{k}.{attention.{query,key,value,dense,
LayerNorm}, ffn, ffn_output, full_layer_layer_norm}: G groups of K layers, the L*K applications
following :func:`layer_schedule`.
"""
from __future__ import annotations

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
