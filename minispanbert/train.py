"""Pretrain SpanBERT: text -> WordPiece -> blocks -> span masking -> MLM + SBO -> AdamW.

The loop, :func:`train`, is the whole recipe (SpanBERT §3-§5): for each step, mask a fresh batch,
run the encoder and both heads forward and backward by hand, clip the gradient's global norm,
take an AdamW step on a warmed-up, linearly decaying learning rate; now and then log, evaluate on
held-out blocks with fixed masks, and save. Every random stream derives from (seed, step): the
batch order from (seed, epoch), the masks from (seed, step, 1), dropout from (seed, step, 3).

In a notebook, the plain loop on a list of documents::

    from minispanbert.train import TrainConfig, run
    model = run(TrainConfig(steps=200, batch_size=8, seq_len=64), documents)

``python -m minispanbert.train`` runs this same loop inside ``engine/trainer.py``, which adds what
a long run needs and a student does not: run folders and checkpoints, ``--resume``, faults and
Ctrl-C, the other objectives of the BERT family, and threads or MPI ranks. It does that through
:class:`Hooks`, never by changing the loop.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from minispanbert import optim
from minispanbert.backend import check_dtype, to_numpy
from minispanbert.config import ModelConfig, preset
from minispanbert.data import (
    CLS_ID,
    SEP_ID,
    encode_documents,
    pack_blocks,
    split_documents,
    train_tokenizer,
    unigram_distribution,
)
from minispanbert.keyed_random import dropout_random
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.masking import make_pretraining_batch
from minispanbert.model.spanbert_loss import SpanBertForPretraining


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one pretraining run (each is a flag of ``python -m minispanbert.train``)."""

    preset: str = "tiny"
    dtype: str = "float32"
    masking: str | None = "span"       # span (SpanBERT) | word (whole words) | token (BERT)
    sbo_weight: float = 1.0            # L = L_MLM + sbo_weight * L_SBO; 0 switches the SBO off
    steps: int = 1000
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1e-3                   # the peak of the schedule
    warmup: int | None = None          # None: 10% of the steps
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dropout: float | None = None       # None: the preset's 0.1 (0 with overfit_batch)
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = 8
    save_every: int = 200
    print_every: int | None = None     # None: every 10% of the steps
    valid_fraction: float = 0.05       # held-out documents when the corpus has no validation split
    overfit_batch: bool = False        # train on one fixed batch: the loss must go to ~0

    @property
    def warmup_steps(self) -> int:
        return self.warmup if self.warmup is not None else self.steps // 10

    @property
    def print_interval(self) -> int:
        return self.print_every if self.print_every is not None else max(1, self.steps // 10)

    def model_config(self) -> ModelConfig:
        """The preset with this run's dropout."""
        base = preset(self.preset)
        dropout = self.dropout
        if dropout is None:
            dropout = 0.0 if self.overfit_batch else base.hidden_dropout_prob
        return base.replace(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


# --------------------------------------------------------------------------- data


@dataclass
class PretrainingData:
    """The tokenizer and the packed examples (SpanBERT: (block ids, word starts) pairs)."""
    tokenizer: object
    train_examples: list
    valid_examples: list
    unigram: np.ndarray
    description: str = ""


def pack_examples(encoded_documents, *, seq_len: int, rng=None) -> list:
    """SpanBERT's examples: blocks of whole sentences of one document that fit ``[CLS] block [SEP]``
    in ``seq_len`` tokens, each with its word-start flags (spans are counted in whole words)."""
    blocks, word_starts = pack_blocks(encoded_documents, seq_len - 2)
    return list(zip(blocks, word_starts))


def prepare_data(cfg: TrainConfig, vocab_size: int, train_docs, valid_docs, tokenizer, *, description: str = "",
                 encode=encode_documents, pack=pack_examples, min_valid_documents: int = 1) -> PretrainingData:
    """Documents -> packed train and held-out examples and the training corpus's unigram
    distribution (the source of SpanBERT's random replacement tokens). ``encode`` and ``pack`` are
    SpanBERT's unless another objective of the family passes its own."""
    if tokenizer.get_vocab_size() > vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens but preset {cfg.preset!r} has a "
                         f"vocabulary of {vocab_size}: use the tokenizer trained with this preset")
    # Packing may draw random numbers (BERT/ALBERT pairs), each split from its own (seed) stream.
    train = pack(encode(tokenizer, train_docs), seq_len=cfg.seq_len, rng=np.random.default_rng([cfg.seed, 0, 4]))
    valid = pack(encode(tokenizer, valid_docs), seq_len=cfg.seq_len, rng=np.random.default_rng([cfg.seed, 0, 5])) \
        if len(valid_docs) >= min_valid_documents else []
    if len(train) < cfg.batch_size:
        raise ValueError(f"the training corpus packs into {len(train)} blocks, fewer than --batch-size "
                         f"{cfg.batch_size}: use more text or a smaller batch")
    unigram = unigram_distribution((example[0] for example in train), vocab_size)
    return PretrainingData(tokenizer, train, valid, unigram, description)


def batch_indices(step: int, n_examples: int, cfg: TrainConfig) -> np.ndarray:
    """The examples of ``step``: a fresh permutation each epoch, drawn from (seed, epoch); the last
    partial batch of an epoch is dropped. ``overfit_batch`` always gives the first batch."""
    if cfg.overfit_batch:
        return np.arange(cfg.batch_size)
    epoch, index = divmod(step, n_examples // cfg.batch_size)
    order = np.random.default_rng([cfg.seed, epoch, 0]).permutation(n_examples)
    return order[index * cfg.batch_size:(index + 1) * cfg.batch_size]


def mask_rng(step: int, cfg: TrainConfig) -> np.random.Generator:
    """The masks of ``step`` come from (seed, step): a resumed run draws what a straight one would."""
    return np.random.default_rng([cfg.seed, 0, 1] if cfg.overfit_batch else [cfg.seed, step, 1])


def make_batch(examples, rng, *, cfg: TrainConfig, model_config: ModelConfig, unigram):
    """Span-mask SpanBERT examples into a padded batch (masking.make_pretraining_batch)."""
    return make_pretraining_batch(
        [example[0] for example in examples], [example[1] for example in examples], cfg.masking, rng,
        seq_len=cfg.seq_len, vocab_size=model_config.vocab_size, cls_id=CLS_ID, sep_id=SEP_ID,
        unigram=unigram, max_pair_targets=model_config.sbo_max_targets)


def held_out_batches(examples, cfg: TrainConfig, batch_maker) -> list:
    """Up to ``cfg.eval_batches`` batches of held-out examples, masked once from (seed, 0, 2), so
    every evaluation of a run scores the same targets. ``batch_maker(examples, rng)`` masks."""
    n = min(len(examples), cfg.eval_batches * cfg.batch_size)
    rng = np.random.default_rng([cfg.seed, 0, 2])
    return [batch_maker(examples[i:min(i + cfg.batch_size, n)], rng) for i in range(0, n, cfg.batch_size)]


# --------------------------------------------------------------------------- the loop


def forward_backward(model, batch, dropout_rng):
    """The loss (MLM + w SBO, §3.3) and every parameter's gradient, by hand: forward, then backward."""
    out, cache = model.forward(batch, train=True, rng=dropout_rng)
    return out, model.backward(cache)


def train_step(model, batch, opt_state, *, lr: float, cfg: TrainConfig, decay_mask, dropout_rng,
               forward_backward=forward_backward, betas=(0.9, 0.999), eps: float = 1e-8):
    """One optimizer step: forward and backward, clip the global gradient norm, AdamW (§5).
    Returns the output and the norm before clipping, both still on the device."""
    out, grads = forward_backward(model, batch, dropout_rng)
    grad_norm = optim.clip_and_step(model.params, grads, opt_state, lr=lr, max_grad_norm=cfg.max_grad_norm,
                                    weight_decay=cfg.weight_decay, decay_mask=decay_mask, xp=model.xp,
                                    betas=betas, eps=eps)  # clip_grad_norm, then adamw_update
    return out, grad_norm


@dataclass
class Hooks:
    """What the loop does besides the maths. :func:`plain_hooks` are a run in one process that
    prints a line now and then and keeps the model in memory; the command line (engine/trainer.py)
    passes its own: shards on threads or MPI ranks in ``forward_backward``, metrics files and
    read-backs batched for a GPU in ``log``, checkpoints in ``save``."""
    forward_backward: Callable  # (model, batch, dropout_rng) -> (out, grads)
    log: Callable               # (step, lr, out, grad_norm)
    evaluate: Callable          # (model, batches) -> {name: number}
    log_evaluation: Callable    # (step, results)
    save: Callable | None       # (step, opt_state), or None: nothing is saved


def plain_hooks(cfg: TrainConfig) -> Hooks:
    return Hooks(forward_backward=forward_backward, log=print_progress(cfg), evaluate=evaluate,
                 log_evaluation=print_evaluation, save=None)


def train(model, next_batch, cfg: TrainConfig, *, hooks: Hooks | None = None, valid_batches=(), start_step: int = 0,
          opt_state=None, betas=(0.9, 0.999), eps: float = 1e-8):
    """Train ``model`` from ``start_step`` to ``cfg.steps``; ``next_batch(step)`` masks the batch of a
    step. Returns the optimizer state."""
    hooks = hooks or plain_hooks(cfg)
    xp = model.xp
    if opt_state is None:
        opt_state = optim.adamw_init(model.params, xp=xp)
    decay_mask = optim.no_decay_mask(model.params)  # no weight decay on biases and LayerNorm (BERT)
    for step in range(start_step, cfg.steps):
        batch = next_batch(step)
        lr = optim.linear_warmup_decay(step, peak_lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps)
        out, grad_norm = train_step(model, batch, opt_state, lr=lr, cfg=cfg, decay_mask=decay_mask,
                                    dropout_rng=dropout_random(cfg.seed, step, xp=xp),
                                    forward_backward=hooks.forward_backward, betas=betas, eps=eps)
        done = step + 1
        hooks.log(done, lr, out, grad_norm)
        if valid_batches and (done % cfg.eval_every == 0 or done == cfg.steps):
            hooks.log_evaluation(done, hooks.evaluate(model, valid_batches))
        if hooks.save and (done % cfg.save_every == 0 or done == cfg.steps):
            hooks.save(done, opt_state)
    return opt_state


def print_progress(cfg: TrainConfig):
    """The default ``log``: every ``cfg.print_interval`` steps, one line with the training loss and
    its parts (a float() waits for the device, so this reads the loss only when it prints)."""
    sbo = "SBO" if cfg.sbo_weight == 1 else f"{cfg.sbo_weight:g} x SBO"

    def log(step, lr, out, grad_norm):
        if step % cfg.print_interval and step != cfg.steps:
            return
        parts = f"MLM {float(out.mlm_loss):.3f} + {sbo} {float(out.sbo_loss):.3f}"
        print(f"step {step}/{cfg.steps}: loss {float(out.loss):.3f} = {parts} | lr {lr:.2e} | "
              f"grad norm {float(grad_norm):.2f}")
    return log


def print_evaluation(step: int, results: dict) -> None:
    print(f"step {step}: held-out " + ", ".join(f"{k} {v:.3f}" for k, v in results.items()
                                                 if isinstance(v, float)))


# --------------------------------------------------------------------------- evaluation


def evaluation_sums(outputs, heads=("mlm", "sbo"), ratios=None, *, xp) -> tuple[list, dict]:
    """The sums behind :func:`evaluate`, from the outputs of forward passes: per head loss * count
    and correct predictions, per ratio its numerator and denominator (read back from the device
    once), and per head the target count."""
    counts = {h: 0 for h in heads}
    device_sums = None
    for out in outputs:
        values = []
        for h in heads:
            count = getattr(out, f"{h}_count")
            values += [getattr(out, f"{h}_loss") * count, getattr(out, f"{h}_correct") * 1.0]
            counts[h] += count
        for attributes in (ratios or {}).values():
            values += [xp.asarray(getattr(out, a)) * 1.0 for a in attributes]
        part = xp.stack(values)
        device_sums = part if device_sums is None else device_sums + part
    if device_sums is None:
        return [0.0] * (2 * len(heads) + 2 * len(ratios or {})), counts
    return to_numpy(device_sums).tolist(), counts


def evaluation_results(sums: list, counts: dict, heads=("mlm", "sbo"), ratios=None) -> dict:
    """Per head: the loss and accuracy over all held-out targets (each batch weighted by its count,
    not averaged batch by batch) and the number of targets; per ratio: numerators over denominators."""
    result = {}
    for i, h in enumerate(heads):
        n = max(counts[h], 1)
        result.update({f"{h}_loss": sums[2 * i] / n, f"{h}_acc": sums[2 * i + 1] / n, f"{h}_targets": int(counts[h])})
    for k, name in enumerate(ratios or {}, start=len(heads)):
        result[name] = sums[2 * k] / max(sums[2 * k + 1], 1)
    return result


def evaluate(model, batches, heads=("mlm", "sbo"), ratios=None) -> dict:
    """Loss and accuracy of every head over fixed (pre-masked) held-out batches, dropout off."""
    xp = getattr(model, "xp", np)
    sums, counts = evaluation_sums((model.forward(batch, train=False)[0] for batch in batches), heads, ratios, xp=xp)
    return evaluation_results(sums, counts, heads, ratios)


def most_frequent_token_accuracy(batches, unigram) -> float:
    """Accuracy of always predicting the corpus's most frequent token: the floor a model must beat."""
    top = int(np.argmax(unigram))
    labels = np.concatenate([b.mlm_labels[b.mlm_labels != IGNORE_INDEX] for b in batches])
    return float(np.mean(labels == top)) if labels.size else 0.0


# --------------------------------------------------------------------------- a plain run


def run(cfg: TrainConfig, documents, valid_documents=None, *, xp=np, tokenizer=None) -> SpanBertForPretraining:
    """Pretrain SpanBERT on ``documents`` (lists of sentences, e.g. ``data.read_corpus(path)``) and
    return the model; ``valid_documents`` default to a ``cfg.valid_fraction`` share held out."""
    check_dtype(cfg.dtype)
    model_config = cfg.model_config()
    if valid_documents is None and len(documents) >= 2 and cfg.valid_fraction > 0:
        documents, valid_documents = split_documents(documents, cfg.valid_fraction, cfg.seed)
    if tokenizer is None:
        tokenizer = train_tokenizer((line for doc in documents for line in doc), model_config.vocab_size)
    data = prepare_data(cfg, model_config.vocab_size, documents, valid_documents or [], tokenizer)

    def batch_of(examples, rng):
        return make_batch(examples, rng, cfg=cfg, model_config=model_config, unigram=data.unigram)

    def next_batch(step):
        return batch_of([data.train_examples[i] for i in batch_indices(step, len(data.train_examples), cfg)],
                        mask_rng(step, cfg))

    model = SpanBertForPretraining.initialise(model_config, seed=cfg.seed, xp=xp, dtype=cfg.dtype,
                                              sbo_weight=cfg.sbo_weight)
    print(f"{model.num_parameters():,} parameters; {len(data.train_examples)} training blocks; expected initial "
          f"loss ln(V) = {math.log(model_config.vocab_size):.2f} per head")
    train(model, next_batch, cfg, valid_batches=held_out_batches(data.valid_examples, cfg, batch_of))
    return model


if __name__ == "__main__":  # the command line: this loop inside run folders, resume, faults and threads
    from minispanbert.engine.trainer import main

    main()
