"""Inference outputs of each Hugging Face BERT architecture, composed from minispanbert's own
forward functions (dropout off). Names follow the ``transformers`` output fields, so a parity test
compares ``outputs[key]`` with ``hf_output.key``.

    h        = encoder(ids, type ids, mask)                    last_hidden_state   (B, T, H)
    p        = tanh(W_p h[:, 0] + b_p)                         pooler_output       (B, H)      model/pooler.py
    mlm      = LN(gelu(h W_t^T + b_t)) E^T + b_mlm             logits / prediction_logits (B, T, V)   model/mlm_head.py
    nsp      = p W_nsp^T + b_nsp                               seq_relationship_logits (B, 2)
    [s | e]  = h W_qa^T + b_qa                                 start_logits, end_logits (B, T)   model/qa_head.py
    seq cls  = p W_c^T + b_c                                   logits (B, num_labels)       model/sequence_classification.py
    tok cls  = h W_c^T + b_c                                   logits (B, T, num_labels)    model/token_classification.py
(HF applies dropout before the classifiers and NSP only in training.) ``output_hidden_states`` and
``output_attentions`` add, as in ``transformers``, ``hidden_states`` (N+1 arrays (B, T, H): the
embeddings' output, then each layer's) and ``attentions`` (N arrays (B, heads, T, T)). The backward
passes of these pieces live with their forward functions; this module only runs a loaded model.
"""
from __future__ import annotations

from minispanbert.finetune.qa_head import qa_head_forward
from minispanbert.finetune.sequence_classification import POOLER, sequence_classification_head_forward
from minispanbert.finetune.token_classification import token_classification_head_forward
from minispanbert.interop.huggingface import NSP
from minispanbert.layers.linear import linear_forward
from minispanbert.model.encoder import attentions, encoder_forward, hidden_states
from minispanbert.model.mlm_head import mlm_head_forward, mlm_head_names
from minispanbert.model.pooler import pooler_forward


def bert_outputs(model, input_ids, token_type_ids, attention_mask, *, xp, mlm_positions=None,
                 output_hidden_states=False, output_attentions=False) -> dict:
    """Run a :class:`~minispanbert.interop.huggingface.PretrainedModel` on host (B, T) arrays -> dict of
    backend arrays keyed like the ``transformers`` outputs of ``model.architecture``. ``token_type_ids``
    None means zeros, as when ``transformers`` is called without them.

    ``mlm_positions`` (flat indices into B*T) limits the MLM logits to those positions (fill-mask
    needs only the [MASK] rows: N x V instead of B*T x V); the default is every position."""
    params, config = model.params, model.config
    h, cache = encoder_forward(params, input_ids, token_type_ids, attention_mask, config, xp=xp, train=False)
    B, T, _ = h.shape
    out = {"last_hidden_state": h}
    if output_hidden_states:
        out["hidden_states"] = hidden_states(cache)
    if output_attentions:
        out["attentions"] = attentions(cache)
    heads = model.heads
    if "pooler" in heads:
        out["pooler_output"], _ = pooler_forward(h, params[POOLER + "weight"], params[POOLER + "bias"], xp=xp)
    if "mlm" in heads:
        positions = xp.arange(B * T) if mlm_positions is None else xp.asarray(mlm_positions)
        logits, _ = mlm_head_forward(params, h, positions, xp=xp, eps=config.layer_norm_eps,
                                     names=mlm_head_names(config))
        key = "prediction_logits" if model.architecture == "BertForPreTraining" else "logits"
        out[key] = logits.reshape(B, T, -1) if mlm_positions is None else logits
    if "nsp" in heads:
        out["seq_relationship_logits"], _ = linear_forward(out["pooler_output"], params[NSP + "weight"],
                                                           params[NSP + "bias"], xp=xp)
    if "qa" in heads:
        out["start_logits"], out["end_logits"], _ = qa_head_forward(params, h, xp=xp)
    if model.architecture == "BertForSequenceClassification":
        out["logits"], _ = sequence_classification_head_forward(params, h, xp=xp, dropout_p=0.0)
    elif model.architecture == "BertForTokenClassification":
        out["logits"], _ = token_classification_head_forward(params, h, xp=xp, dropout_p=0.0)
    return out
