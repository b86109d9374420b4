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

As the trainer's objective, ``--objective roberta``: MLM only with dynamic masking, FULL-SENTENCES blocks, byte-level BPE,
Adam beta2 0.98 / eps 1e-6 (model/roberta.py, data/full_sentences.py, data/bpe_tokenizer.py).
--masking token (default) or word.
"""
from __future__ import annotations

from minispanbert.family.bert import MaskedLMForPretraining
from minispanbert.family.bpe_tokenizer import BOS_ID, EOS_ID, PAD_ID
from minispanbert.family.bpe_tokenizer import encode_bpe_documents as encode_documents  # noqa: F401
from minispanbert.family.bpe_tokenizer import load_bpe_tokenizer as load_tokenizer  # noqa: F401
from minispanbert.family.bpe_tokenizer import train_bpe_tokenizer as train_tokenizer  # noqa: F401
from minispanbert.family.full_sentences import pack_full_sentences
from minispanbert.family.objectives import check_no_sbo, check_scheme
from minispanbert.masking import make_pretraining_batch


def roberta_config(base):
    """A preset turned into RoBERTa: the same sizes, P + 2 positions for the pad+1+i offset."""
    return base.replace(model_type="roberta", type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5,
                        max_position_embeddings=base.max_position_embeddings + 2)


class RobertaForMaskedLM(MaskedLMForPretraining):
    """Hugging Face ``RobertaForMaskedLM``: encoder + LM head, loss = mean CE over the masked tokens."""
    sentence = None


# --------------------------------------------------------------------------- --objective roberta

NAME = "roberta"
HEADS = ("mlm",)
SCHEMES = ("token", "word")
ADAM_BETAS, ADAM_EPS = (0.9, 0.98), 1e-6


def model_config(base, cfg):
    return roberta_config(base)


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)
    check_no_sbo(NAME, cfg)


def pack(encoded_documents, *, seq_len, rng):
    blocks, starts = pack_full_sentences(encoded_documents, seq_len - 2, EOS_ID)
    return list(zip(blocks, starts))


def make_batch(examples, rng, *, cfg, model_config, unigram):
    """``<s> block </s> <pad>...``, each block masked afresh (dynamic masking), 80/10/10 per token,
    random tokens uniform over the ordinary ids (fairseq's weights: 0 for the specials)."""
    return make_pretraining_batch(
        [ex[0] for ex in examples], [ex[1] for ex in examples], cfg.masking, rng, seq_len=cfg.seq_len,
        vocab_size=model_config.vocab_size, cls_id=BOS_ID, sep_id=EOS_ID, pad_id=PAD_ID, replacement="token")


def initialise(model_config, *, seed, xp, dtype, cfg):
    return RobertaForMaskedLM.initialise(model_config, seed=seed, xp=xp, dtype=dtype)


def from_params(model_config, params, *, xp, cfg):
    return RobertaForMaskedLM(model_config, params, xp=xp)
