"""``--objective albert``: factorised embeddings, one shared layer group, gelu_new, MLM +
sentence-order prediction, n-gram masking (model/albert.py, data/pairs.py, ngram_masking.py).
--masking ngram (default), token or word."""
from __future__ import annotations

from minispanbert.data import encode_documents, load_tokenizer, train_tokenizer  # noqa: F401
from minispanbert.data.pairs import build_pair_examples, make_pair_batch
from minispanbert.model.albert import AlbertForPretraining, albert_config
from minispanbert.ngram_masking import ngram_mask
from minispanbert.objectives import check_no_sbo, check_scheme, token_masker

NAME = "albert"
HEADS = ("mlm", "sop")
SCHEMES = ("ngram", "token", "word")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
MIN_DOCUMENTS = 2  # a random segment comes from another document


def model_config(base, cfg):
    return albert_config(base)


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)
    check_no_sbo(NAME, cfg)


def pack(encoded_documents, *, seq_len, rng):
    return build_pair_examples(encoded_documents, seq_len=seq_len, mode="sop", rng=rng)


def make_batch(examples, rng, *, cfg, model_config, unigram):
    if cfg.masking == "ngram":
        def mask(ids, word_starts, rng):
            return ngram_mask(ids, word_starts, rng, vocab_size=model_config.vocab_size)
    else:
        mask = token_masker(cfg.masking, model_config.vocab_size)
    return make_pair_batch(examples, mask, rng, seq_len=cfg.seq_len)


def initialise(model_config, *, seed, xp, dtype, cfg):
    return AlbertForPretraining.initialise(model_config, seed=seed, xp=xp, dtype=dtype)


def from_params(model_config, params, *, xp, cfg):
    return AlbertForPretraining(model_config, params, xp=xp)
