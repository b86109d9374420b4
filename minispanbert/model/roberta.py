"""RoBERTa for masked-LM pretraining (Liu et al. 2019; bert-family-spec.md §3): BERT's encoder and
MLM loss with no NSP, under Hugging Face ``RobertaForMaskedLM`` names.

What differs from BERT is all configuration and data, not new ops:
    config   model_type "roberta": names ``roberta.*`` and ``lm_head.{dense, layer_norm, bias}``
             (lower-case layer_norm; the head's activation is erf gelu, hard-coded, model/mlm_head.py),
             position ids pad+1+i with P = max_len + 2, type_vocab_size 1 (one learned vector added
             to every token), LayerNorm eps 1e-5, padding_idx rows for <pad> (model/encoder.py)
    data     byte-level BPE (data/bpe_tokenizer.py), FULL-SENTENCES blocks across documents with a
             separator (data/full_sentences.py), masks redrawn every time a sequence is used
             (dynamic masking, §4.1: the same 15% MLM with 80/10/10 per token; no extra head or loss)
    optim    Adam beta2 0.98, eps 1e-6 (§3.1)
"""
from __future__ import annotations

from minispanbert.model.bert_nsp import MaskedLMForPretraining


def roberta_config(base):
    """A preset turned into RoBERTa: the same sizes, P + 2 positions for the pad+1+i offset."""
    return base.replace(model_type="roberta", type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5,
                        max_position_embeddings=base.max_position_embeddings + 2)


class RobertaForMaskedLM(MaskedLMForPretraining):
    """Hugging Face ``RobertaForMaskedLM``: encoder + LM head, loss = mean CE over the masked tokens."""
    sentence = None
