"""``--objective spanbert`` (the default): the core's SpanBERT, span masking + MLM + SBO on
single-document blocks (model/spanbert_loss.py, masking.py, train.py), as the trainer's objective."""
from __future__ import annotations

from minispanbert.data import encode_documents, load_tokenizer, train_tokenizer  # noqa: F401  (the objective's API)
from minispanbert.family.objectives import check_scheme
from minispanbert.model.spanbert_loss import SpanBertForPretraining
from minispanbert.train import make_batch, pack_examples  # noqa: F401  (the objective's API)

NAME = "spanbert"
HEADS = ("mlm", "sbo")
SCHEMES = ("span", "word", "token")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
pack = pack_examples  # SpanBERT blocks: whole sentences of one document


def model_config(base, cfg):
    return base


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)


def initialise(model_config, *, seed, xp, dtype, cfg):
    return SpanBertForPretraining.initialise(model_config, seed=seed, xp=xp, dtype=dtype, sbo_weight=cfg.sbo_weight)


def from_params(model_config, params, *, xp, cfg):
    return SpanBertForPretraining(model_config, params, xp=xp, sbo_weight=cfg.sbo_weight)


def term_weights(cfg) -> dict:
    """loss = mlm_loss + sbo_weight * sbo_loss."""
    return {"mlm": 1.0, "sbo": cfg.sbo_weight}
