"""The pretraining objectives ``python -m minispanbert.train --objective NAME`` can run.

Each is a small module (imported on first use) that tells train.py everything that differs:

    NAME, HEADS            HEADS[0] == "mlm"; the model output has ``loss`` and, per head h,
                           ``{h}_loss``, ``{h}_correct`` (device 0-d arrays) and ``{h}_count`` (int):
                           train.py logs, evaluates and plots them by these names
    SCHEMES                the --masking values it accepts, its default first
    ADAM_BETAS, ADAM_EPS   the optimizer's settings
    model_config(base, cfg) -> ModelConfig          the preset turned into this model
    check_flags(cfg)       a ValueError (one line) for flags that do not apply
    train_tokenizer(texts, vocab_size), load_tokenizer(path), encode_documents(tok, documents)
    pack(encoded_documents, *, seq_len, rng) -> list of examples (example[0] is its token ids)
    make_batch(examples, rng, *, cfg, model_config, unigram) -> a batch dataclass of host arrays,
                           rows on axis 0, with ``mlm_labels``
    MIN_DOCUMENTS          optional (default 1): a held-out split with fewer documents is not evaluated
    RATIOS                 optional {name: (numerator attribute, denominator attribute)} of the output,
                           logged per step, pooled over the held-out batches and plotted (ELECTRA)
    after_run(run_path, model, tokenizer, cfg, log)   optional: exports at the end of a run
    term_weights(cfg)      optional {head: w_h} with loss = sum_h w_h {h}_loss (default 1 each); data
                           parallelism rebuilds the global loss from the all-reduced head losses
    initialise(model_config, *, seed, xp, dtype, cfg) / from_params(model_config, params, *, xp, cfg)
                           -> a model with .params .xp .forward(batch, *, train, rng) -> (out, cache),
                           .backward(cache, term_scales=None) -> grads, .num_parameters()
"""
from __future__ import annotations

import importlib

OBJECTIVES = {
    "spanbert": "minispanbert.family.spanbert",
    "bert": "minispanbert.family.bert",
    "roberta": "minispanbert.family.roberta",
    "albert": "minispanbert.family.albert",
    "electra": "minispanbert.family.electra",
}


def get_objective(name: str):
    """The objective module called ``name``, or a one-line ValueError listing the choices."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")
    return importlib.import_module(OBJECTIVES[name])


def check_scheme(name, schemes, cfg) -> None:
    """--masking must be one the objective implements."""
    if cfg.masking not in schemes:
        raise ValueError(f"--masking {cfg.masking} is not available with --objective {name}: "
                         f"choose one of {', '.join(schemes)}")


def check_no_sbo(name, cfg) -> None:
    """--sbo-weight is SpanBERT's; any other objective must leave it at its default."""
    if cfg.sbo_weight != 1.0:
        raise ValueError(f"--sbo-weight applies to --objective spanbert only (--objective {name} has no "
                         "SBO head): drop the flag")


def token_masker(scheme, vocab_size):
    """mask(ids, word_starts, rng) -> (input_ids, mlm_labels) with ``masking.mask_block``: "token"
    (BERT, ceil(0.15 n) positions) or "word" (whole words), 80/10/10 decided per token, random
    tokens uniform over the ordinary ids [5, V); specials (ids < 5) are never masked."""
    from minispanbert.masking import mask_block

    def mask(ids, word_starts, rng):
        masked = mask_block(ids, word_starts, scheme, rng, vocab_size=vocab_size, replacement="token")
        return masked.input_ids, masked.mlm_labels

    return mask
