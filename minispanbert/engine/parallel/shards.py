"""Data parallelism inside one process: the batch split over CPU threads (NumPy).

    shard k          = rows [k*B//N, (k+1)*B//N) of the batch            (N = --threads shards)
    thread k         forward + backward of shard k, its GEMMs on a single-threaded BLAS
    counts           n_kh = head h's targets in shard k;  N_h = sum_k n_kh
    term_scales      shard k scales head h's upstream gradient by n_kh / N_h
    gradient         g = sum_k g_k                                         (= the whole batch's)
    loss             L_h = sum_k (n_kh / N_h) L_kh,   L = sum_h w_h L_h

This is :mod:`minispanbert.distributed`'s scheme (the same normalisation trap, the same fix), with
threads in place of processes and a sum of in-memory dicts in place of the all-reduce.

**Why.** With NumPy, BLAS is the only part that runs on more than one core: every elementwise op
between the GEMMs (erf/GeLU, LayerNorm, softmax, cross-entropy) runs on one, while the other
core's BLAS worker spins idle waiting for the next GEMM. Half a batch per thread puts *everything*
on both cores: NumPy releases the GIL inside every GEMM and every ufunc loop, so two threads run
side by side except for the Python glue between the ops. Measured against PyTorch eager on the
2-core machine of the README's table (``python -m minispanbert.bench --table --threads 2``, with
and without ``--no-split-batch``): tiny 0.71x -> 1.07x, mini 0.78x -> 1.08x, small 0.93x -> level.

**What differs from one thread.** The gradient is the whole batch's, up to float rounding (the
per-shard sums are added in another order). Dropout: shard k draws the masks of its rows of the
batch from the step's keyed generator (:mod:`minispanbert.keyed_random`), exactly the masks one
thread draws for those rows, so N threads reach one thread's weights to rounding, dropout on or
off (``tests/engine/test_same_weights.py``).

Fine-tuning (``python -m minispanbert.finetune TASK --threads N``) splits its batches the same way
(:func:`task_forward_backward`): each task's loss is a weighted sum of means over counted labels
(QA: (CE_start + CE_end) / 2), and each shard's terms get their share of the counts.
"""
from __future__ import annotations

import numpy as np

from minispanbert.engine.parallel.distributed import slice_batch
from minispanbert.engine.parallel.threads import map_dealt, map_threads, part_of, work_items


def shard_slices(rows: int, shards: int) -> list[slice]:
    """``min(shards, rows)`` consecutive row slices of ``range(rows)``, sizes differing by at most one."""
    shards = max(1, min(shards, rows))
    return [slice(k * rows // shards, (k + 1) * rows // shards) for k in range(shards)]


def term_scales(counts: list[dict]) -> list[dict]:
    """Per shard, per head: n_kh / N_h (0 where no shard has a target of head h)."""
    totals = {h: sum(c[h] for c in counts) for h in counts[0]}
    return [{h: (c[h] / totals[h] if totals[h] else 0.0) for h in c} for c in counts]


def combine_outputs(outs: list, scales: list[dict], *, heads, weights: dict | None):
    """One output for the whole batch from the shards' outputs (each a dataclass, as the
    objective's model returns): ``{h}_loss`` = sum_k s_kh L_kh, ``loss`` = sum_h w_h L_h,
    arrays with a batch axis (ELECTRA's ``corrupt_ids``, ...) concatenated along it, and every
    other field (counts, correct predictions, ratio numerators) summed."""
    weights = {h: 1.0 for h in heads} | (weights or {})
    fields = {}
    for name in vars(outs[0]):
        values = [getattr(out, name) for out in outs]
        if name == "loss":
            continue
        if name.endswith("_loss") and name[:-len("_loss")] in heads:
            head = name[:-len("_loss")]
            fields[name] = sum(s[head] * v for s, v in zip(scales, values))
        elif getattr(values[0], "ndim", 0) >= 1:
            fields[name] = np.concatenate(values, axis=0)
        else:
            fields[name] = sum(values[1:], values[0])
    fields["loss"] = sum(weights[h] * fields[f"{h}_loss"] for h in heads)
    return type(outs[0])(**fields)


def forward_backward(model, batch, *, shards: int, heads, weights=None, dropout_rng=None):
    """The whole batch's (output, gradients), computed as ``shards`` shards on as many threads
    (:func:`backend.map_threads`). ``model``: any pretraining model of :mod:`minispanbert.objectives`
    on NumPy; ``batch``: its batch dataclass of host arrays; ``heads``/``weights``: the
    objective's ``HEADS`` and ``term_weights``."""
    slices = shard_slices(batch.mlm_labels.shape[0], shards)
    outs, scales, grads = run_shards(
        [slice_batch(batch, r) for r in slices], slices, dropout_rng,
        forward=lambda part, rng: model.forward(part, train=True, rng=rng),
        counts=lambda part, out: {h: getattr(out, f"{h}_count") for h in heads},
        backward=lambda cache, scales: model.backward(cache, term_scales=scales))
    return combine_outputs(outs, scales, heads=heads, weights=weights), grads


def task_forward_backward(task, params, batch: dict, config, *, xp, shards: int, dropout_rng=None):
    """Fine-tuning's version: the whole batch's (loss, gradients) for a task of
    :mod:`minispanbert.tasks.recipes` (its ``forward``/``backward`` on a dict of host arrays, rows on
    axis 0, and its loss sum_t w_t L_t described by ``term_counts``, ``term_losses`` and
    ``term_weights``), computed as ``shards`` shards on as many threads."""
    slices = shard_slices(len(batch["input_ids"]), shards)
    outs, scales, grads = run_shards(
        [{name: value[r] for name, value in batch.items()} for r in slices], slices, dropout_rng,
        forward=lambda part, rng: task.forward(params, part, config, xp=xp, train=True, rng=rng),
        counts=lambda part, out: task.term_counts(part),
        backward=lambda cache, scales: task.backward(cache, xp=xp, term_scales=scales))
    losses = [task.term_losses(out) for out in outs]
    loss = sum(w * sum(s[t] * l[t] for s, l in zip(scales, losses)) for t, w in task.term_weights.items())
    return loss, grads


def run_shards(parts: list, slices: list[slice], dropout_rng, *, forward, counts, backward):
    """The shared core: ``forward(part, rng) -> (out, cache)`` for every shard on the threads (shard k,
    the batch's rows ``slices[k]``, draws those rows' dropout masks: ``dropout_rng.rows``), then each
    term's scale n_kt / N_t from ``counts(part, out)``, then ``backward(cache, scales) -> grads`` on
    the threads, and the gradients summed. Returns (the shards' outputs, their scales, the summed
    gradients)."""
    rngs = [dropout_rng.rows(s) if dropout_rng is not None else None for s in slices]
    forwards = map_threads(lambda k: forward(parts[k], rngs[k]), range(len(parts)))
    scales = term_scales([counts(part, out) for part, (out, _) in zip(parts, forwards)])
    grads = map_threads(lambda k: backward(forwards[k][1], scales[k]), range(len(parts)))
    return [out for out, _ in forwards], scales, sum_gradients(grads)


def sum_gradients(grads: list[dict]) -> dict:
    """The shards' gradient dicts added into the first one, in cache-sized pieces shared among the threads."""
    total = grads[0]

    def add_shards(item):
        name, part = item
        into = part_of(total[name], part)
        for other in grads[1:]:
            into += part_of(other[name], part)

    map_dealt(add_shards, work_items(grads))
    return total
