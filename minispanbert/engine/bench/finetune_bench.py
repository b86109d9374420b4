"""The benchmark's fine-tuning row: ``python -m minispanbert.bench --task sst2 --preset minilm-shape
--batch-size 32 --seq-len 64`` (add ``--compare-torch`` for PyTorch; ``--table`` has it as its last row).

It times the step that ``python -m minispanbert.finetune sst2 --threads N`` runs (finetune/loop.py),
through the same calls:

    forward + backward   engine.parallel.shards.task_forward_backward(SST2, ...): the batch split
                         into N shards on N threads, one BLAS thread each (``--no-split-batch``: one
                         shard, BLAS on N threads); the task is finetune.recipes.SST2
    the loss read        float(loss), as the loop reads it before the update
    the update           optim.clip_and_step with the finetune command's --max-grad-norm and
                         --weight-decay (not on biases and LayerNorm), the engine's kernels installed

on a sentence classifier (encoder + BERT pooler + 2-way classifier, finetune/sequence_classification.py)
with random weights, full-length synthetic sentences ([CLS] ids [SEP], the ids of
:func:`bench.synthetic_blocks`) and random 0/1 labels. The learning rate is the bench's constant (a
schedule costs nothing). ``minilm-shape`` is MiniLM-L6-H384's shape (6 layers, hidden 384, 12 heads,
intermediate 1536, vocab 30522; ``bench.FINETUNE_SHAPES``); the pretraining presets work too.

The PyTorch twin is ``torch_reference.torch_classification_step_factory`` on the same weights and
batch (handed over as files, as for pretraining): the same encoder modules with the pooler
(``bert.pooler.dense``) and ``classifier``, F.cross_entropy, foreach clipping, fused AdamW.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from minispanbert import optim
from minispanbert.backend import synchronize
from minispanbert.config import preset
from minispanbert.data import CLS_ID, SEP_ID
from minispanbert.engine.bench.bench import (
    FINETUNE_SHAPES,
    LEARNING_RATE,
    PhaseClock,
    bench_dropout,
    check_run_flags,
    encoder_flops,
    finite_loss,
    synthetic_blocks,
)
from minispanbert.engine.bench.torch_reference import (
    to_torch_classification_batch,
    torch_classification_step_factory,
)
from minispanbert.engine.parallel.shards import task_forward_backward
from minispanbert.finetune import sst2
from minispanbert.finetune.loop import FinetuneConfig
from minispanbert.finetune.recipes import SST2
from minispanbert.keyed_random import dropout_random
from minispanbert.optim import adamw_init, no_decay_mask

NUM_LABELS = len(sst2.LABELS)
RECIPE = FinetuneConfig(task="sst2")  # the finetune command's defaults: --max-grad-norm, --weight-decay


def finetune_flops(config, *, batch_size: int, seq_len: int, num_labels: int) -> dict:
    """Matrix-multiply FLOPs of one fine-tuning step, by part, and their total (the conventions of
    :func:`bench.training_flops`): the encoder, then the pooler (H x H) and the classifier (C x H)
    on the B first positions,

        classifier_head = 6 * (H^2 + H C) * B
    """
    H, B = config.hidden_size, batch_size
    parts = {**encoder_flops(config, batch_size=batch_size, seq_len=seq_len),
             "classifier_head": 6 * (H * H + H * num_labels) * B}
    parts["total"] = sum(parts.values())
    return parts


class FinetuneStepper:
    """Our fine-tuning step on one fixed batch, as the finetune loop runs it (module docstring);
    ``step(index)`` -> (loss, total, forward, backward, optimizer seconds), as bench.EngineStepper."""

    def __init__(self, work: "Sst2Workload", params, batch: dict, *, shards: int, xp, pool_peak, now):
        self.work, self.params, self.batch, self.shards, self.xp, self.now = work, params, batch, shards, xp, now
        self.phases = PhaseClock(pool_peak, now)
        self.task = dataclasses.replace(SST2, backward=self.phases.timed(SST2.backward))
        self.opt_state = adamw_init(params, xp=xp)
        self.decay_mask = no_decay_mask(params)

    def step(self, index: int):
        dropout_rng = dropout_random(self.work.seed, index, xp=self.xp)
        self.phases.reset()
        synchronize(self.xp)
        start = self.now()
        loss, grads = task_forward_backward(self.task, self.params, self.batch, self.work.model_config, xp=self.xp,
                                            shards=self.shards, dropout_rng=dropout_rng)
        loss = finite_loss(float(loss), index)  # the loop's one read per step, before the update
        optim.clip_and_step(self.params, grads, self.opt_state, lr=LEARNING_RATE,  # the installed kernel
                            max_grad_norm=RECIPE.max_grad_norm, weight_decay=RECIPE.weight_decay,
                            decay_mask=self.decay_mask, xp=self.xp)
        synchronize(self.xp)
        end = self.now()
        self.phases.pool_peak.sample()
        return (loss, *self.phases.split(start, end))


class Sst2Workload:
    """The fine-tuning row, with the interface of :class:`bench.PretrainingWorkload`: initial
    weights and batch, our stepper, the twin's step, the report's fields."""

    task = "sst2"
    batch_type = dict  # the batch is a dict of host arrays, as the finetune loop's

    def __init__(self, args):
        base = FINETUNE_SHAPES.get(args.preset) or preset(args.preset)
        dropout = bench_dropout(args)
        if dropout is not None:
            base = base.replace(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                                classifier_dropout_prob=dropout)
        if not 3 <= args.seq_len <= base.max_position_embeddings:
            raise ValueError(f"--seq-len {args.seq_len} is outside [3, {base.max_position_embeddings}] for "
                             f"--preset {args.preset}: [CLS], at least one token and [SEP] must fit")
        for flag in ("batch_size", "steps"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
        check_run_flags(args)
        self.model_config, self.dtype = base, "float32"
        self.seed, self.batch_size, self.seq_len = args.seed, args.batch_size, args.seq_len

    def params(self, xp) -> dict:
        return SST2.init_params(self.model_config, self.seed, xp=xp, dtype=self.dtype)

    def batch(self) -> dict:
        """Full-length sentences [CLS] ids [SEP] and random 0/1 labels, drawn from the seed."""
        rng = np.random.default_rng([self.seed, 0, 7])
        blocks, _ = synthetic_blocks(self.batch_size, self.seq_len - 2, self.model_config.vocab_size, rng)
        ids = np.array([[CLS_ID, *block, SEP_ID] for block in blocks], dtype=np.int64)
        return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids),
                "labels": rng.integers(0, NUM_LABELS, size=self.batch_size, dtype=np.int64)}

    def stepper(self, params, batch, *, threads: int, xp, pool_peak, now) -> FinetuneStepper:
        """Our step with the batch split over ``threads`` shards (1: whole, on one thread)."""
        return FinetuneStepper(self, params, batch, shards=threads, xp=xp, pool_peak=pool_peak, now=now)

    def torch_step(self, torch, params, batch, device):
        """-> (the twin's TorchTrainStep from ``params``, the batch converted once for it)."""
        step = torch_classification_step_factory(
            torch, params, self.model_config, lr=LEARNING_RATE, weight_decay=RECIPE.weight_decay,
            decay_mask=no_decay_mask(params), max_grad_norm=RECIPE.max_grad_norm, dtype=self.dtype, device=device)
        return step, to_torch_classification_batch(torch, batch, self.model_config, device=device)

    def report_fields(self, batch) -> dict:
        return {"labels": NUM_LABELS, "flops_per_step": finetune_flops(
            self.model_config, batch_size=self.batch_size, seq_len=self.seq_len, num_labels=NUM_LABELS)}
