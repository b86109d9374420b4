"""``--objective bert``: MLM + next-sentence prediction on ``[CLS] A [SEP] B [SEP]`` pairs
(model/bert_nsp.py, data/pairs.py). --masking token (default: BERT's per-token 80/10/10) or word
(whole-word masking, also per token)."""
from __future__ import annotations

from minispanbert.data import encode_documents, load_tokenizer, train_tokenizer  # noqa: F401
from minispanbert.data.pairs import build_pair_examples, make_pair_batch
from minispanbert.model.bert_nsp import BertForPretraining
from minispanbert.objectives import check_no_sbo, check_scheme, token_masker

NAME = "bert"
HEADS = ("mlm", "nsp")
SCHEMES = ("token", "word")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
MIN_DOCUMENTS = 2  # a random segment comes from another document


def model_config(base, cfg):
    return base


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)
    check_no_sbo(NAME, cfg)


def pack(encoded_documents, *, seq_len, rng):
    return build_pair_examples(encoded_documents, seq_len=seq_len, mode="nsp", rng=rng)


def make_batch(examples, rng, *, cfg, model_config, unigram):
    return make_pair_batch(examples, token_masker(cfg.masking, model_config.vocab_size), rng, seq_len=cfg.seq_len)


def initialise(model_config, *, seed, xp, dtype, cfg):
    return BertForPretraining.initialise(model_config, seed=seed, xp=xp, dtype=dtype)


def from_params(model_config, params, *, xp, cfg):
    return BertForPretraining(model_config, params, xp=xp)
