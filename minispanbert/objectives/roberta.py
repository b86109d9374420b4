"""``--objective roberta``: MLM only with dynamic masking, FULL-SENTENCES blocks, byte-level BPE,
Adam beta2 0.98 / eps 1e-6 (model/roberta.py, data/full_sentences.py, data/bpe_tokenizer.py).
--masking token (default) or word."""
from __future__ import annotations

from minispanbert.data.bpe_tokenizer import BOS_ID, EOS_ID, PAD_ID
from minispanbert.data.bpe_tokenizer import encode_bpe_documents as encode_documents  # noqa: F401
from minispanbert.data.bpe_tokenizer import load_bpe_tokenizer as load_tokenizer  # noqa: F401
from minispanbert.data.bpe_tokenizer import train_bpe_tokenizer as train_tokenizer  # noqa: F401
from minispanbert.data.full_sentences import pack_full_sentences
from minispanbert.masking import make_pretraining_batch
from minispanbert.model.roberta import RobertaForMaskedLM, roberta_config
from minispanbert.objectives import check_no_sbo, check_scheme

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
