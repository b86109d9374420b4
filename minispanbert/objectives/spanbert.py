"""``--objective spanbert`` (the default): span masking + MLM + SBO on single-document blocks
(model/spanbert.py, masking.py, data/blocks.py)."""
from __future__ import annotations

from minispanbert.data import CLS_ID, SEP_ID, encode_documents, load_tokenizer, pack_blocks, train_tokenizer  # noqa: F401
from minispanbert.masking import make_pretraining_batch
from minispanbert.model.spanbert import SpanBertForPretraining
from minispanbert.objectives import check_scheme

NAME = "spanbert"
HEADS = ("mlm", "sbo")
SCHEMES = ("span", "word", "token")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def model_config(base, cfg):
    return base


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)


def pack(encoded_documents, *, seq_len, rng):
    blocks, starts = pack_blocks(encoded_documents, seq_len - 2)
    return list(zip(blocks, starts))


def make_batch(examples, rng, *, cfg, model_config, unigram):
    return make_pretraining_batch(
        [ex[0] for ex in examples], [ex[1] for ex in examples], cfg.masking, rng,
        seq_len=cfg.seq_len, vocab_size=model_config.vocab_size, cls_id=CLS_ID, sep_id=SEP_ID,
        unigram=unigram, max_pair_targets=model_config.sbo_max_targets,
    )


def initialise(model_config, *, seed, xp, dtype, cfg):
    return SpanBertForPretraining.initialise(model_config, seed=seed, xp=xp, dtype=dtype, sbo_weight=cfg.sbo_weight)


def from_params(model_config, params, *, xp, cfg):
    return SpanBertForPretraining(model_config, params, xp=xp, sbo_weight=cfg.sbo_weight)


def term_weights(cfg) -> dict:
    """loss = mlm_loss + sbo_weight * sbo_loss."""
    return {"mlm": 1.0, "sbo": cfg.sbo_weight}
