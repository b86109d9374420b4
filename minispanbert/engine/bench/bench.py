"""Training-throughput benchmark: ``python -m minispanbert.bench --backend numpy --preset tiny``.

Times the real training step (``minispanbert.train.train_step``: forward, backward, global-norm clipping, AdamW,
float32) on a synthetic batch, or with ``--task sst2`` the fine-tuning step of ``python -m minispanbert.finetune
sst2`` (:mod:`minispanbert.engine.bench.finetune_bench`; ``--preset minilm-shape`` is MiniLM's shape), and
reports what a reader needs to judge the engine's speed:

* tokens/s and the median step time over ``--steps`` timed steps after ``--warmup-steps``;
* the forward / backward / optimizer split of those steps;
* a per-op profile (top 10 by self time) from ONE extra step in which every ``*_forward`` and
  ``*_backward`` function of ``minispanbert.layers`` and ``minispanbert.model`` (and the backend's
  ``scatter_add`` and ``erf``, and the optimizer) is temporarily wrapped with a timer, after one
  unwrapped step on the same one-thread stepper (so page faults of its first step are not counted);
  the timed steps run unwrapped;
* peak memory: host RSS, and on CuPy the high-water mark of the default memory pool;
* achieved GFLOP/s and model-FLOPs utilisation (MFU), against a peak MEASURED here with one large
  float32 GEMM on the same backend (not a vendor figure), with BLAS on every thread the step uses
  (a split batch runs one-thread BLAS per shard; its peak is still all the threads'), see
  :func:`training_flops`;
* the CPU: its model and widest vector ISA (AMX, AVX-512, AVX2; from /proc/cpuinfo);
* ``--compare-torch``: the fair yardstick. The same weights, batch and optimizer in PyTorch eager
  (fp32, :mod:`minispanbert.engine.bench.torch_reference`: fused AdamW, scaled_dot_product_attention),
  and the same twin under ``torch.compile`` (inductor; ``--no-compile`` leaves it out), each engine
  in a FRESH PROCESS of its own (``--engine numpy|torch|torch-compile``, internal), the weights
  handed over as a safetensors file and the batch as an npz, every thread pool of the child set to
  the same count (OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS, torch.set_num_threads), ``--rounds`` rounds
  rotating which engine goes first; each process warms up and then times its steps (torch.compile
  compiles in its warm-up, and a recompile among the timed steps fails it); the report pools each
  engine's timed steps (median) and lists every round's ratio. A twin that does not compile on the
  machine is one line, "did not compile: ...", and the rest of the report stands. Running the
  engines in one process was unfair to PyTorch: OpenBLAS's spinning threads and PyTorch's OpenMP
  pool fought over the same cores. The first-step losses are printed and checked.
* ``--table``: the README's CPU table as Markdown (pretraining tiny 16, mini 16, small 8 at seq 128;
  the SST-2 fine-tuning step on minilm-shape, batch 32, seq 64), one --compare-torch per row,
  below a line naming the CPU, ISA, threads, PyTorch version, date and command: one command
  re-measures the whole table.

The batch: ``--batch-size`` blocks of ``--seq-len - 2`` random word-piece ids (Zipf-distributed
ids, words of 1-4 pieces; no tokenizer is needed), masked once by the real
:func:`minispanbert.masking.make_pretraining_batch` (15%, ``--masking`` scheme), so the MLM and SBO
heads see realistic target counts. Every sequence is full, so tokens = batch x seq_len.

Timing: ``time.perf_counter`` around each step, with :func:`backend.synchronize` before and after
(a no-op on NumPy). On a machine shared with other work, wall time measures the neighbours too;
``--clock cpu`` (NumPy, one thread) times each step in CPU seconds of this process instead
(``time.process_time``), which waiting for a core does not inflate. Inside the step nothing is
added, and ``train_step`` itself never waits for the device. On NumPy every phase time is exact;
on CuPy the phase boundaries are only when the work was queued, so the forward / backward /
optimizer split is approximate (their sum is exact).

Threads: ``--threads N`` (default: the count OpenBLAS chose at import, OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS, else the cores) is what ``python -m minispanbert.train --threads N`` does: the
batch split into N shards computed on N threads, each with a single-threaded BLAS
(:mod:`minispanbert.thread_parallel`). ``--no-split-batch`` runs the whole batch on one thread with
BLAS on N threads instead (how the engine ran before; it is the comparison the README reports).
Both are set in the running process through threadpoolctl (:func:`backend.set_cpu_threads`).
PyTorch gets ``torch.set_num_threads(N)``. The per-op profile step runs one thread, unsplit (its
timers are not thread-safe): read its shares, not its total.

Dropout: the preset's 0.1 as in training, except with --compare-torch, where it is 0 for both
engines (the PyTorch reference has no dropout), so they do the same work and their losses agree.

The kernels of ``engine/kernels`` are installed, as in the command-line tools: on CuPy, GeLU,
LayerNorm, softmax and cross-entropy run as fused kernels; AdamW updates in place.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from minispanbert.backend import BACKENDS, backend_name, get_backend, synchronize
from minispanbert.config import PRESETS, ModelConfig
from minispanbert.data import CLS_ID, SEP_ID, unigram_distribution
from minispanbert.engine import kernels
from minispanbert.engine.allocator import keep_freed_memory
from minispanbert.engine.bench.torch_reference import to_torch_batch, torch_train_step_factory
from minispanbert.engine.cli import Parser
from minispanbert.engine.parallel.distributed import World
from minispanbert.engine.parallel.threads import BLAS_THREAD_VARS, cpu_threads, cpu_threads_set, set_cpu_threads
from minispanbert.engine.runs.atomic import describe_os_error, temp_file, write_text_atomic
from minispanbert.engine.runs.checkpoint import load_params, save_params
from minispanbert.engine.trainer import SCHEMES, RunConfig, device_description, sharded_forward_backward
from minispanbert.keyed_random import dropout_random
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.masking import NUM_SPECIAL_IDS, PretrainingBatch, make_pretraining_batch
from minispanbert.model.spanbert_loss import SpanBertForPretraining, init_pretraining_params
from minispanbert.optim import adamw_init, no_decay_mask
from minispanbert.train import train_step

LEARNING_RATE = 1e-4                  # constant: the schedule costs nothing and would only blur the loss check
WORD_PIECES_PMF = (0.72, 0.18, 0.07, 0.03)  # P(a word has 1, 2, 3, 4 pieces): ~1.4 pieces a word, as English WordPiece
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
PEAK_GEMM_SIZE = {"numpy": 1024, "cupy": 8192}  # n of the n x n x n float32 GEMM that measures the peak
PROFILE_TOP = 10
LOSS_RTOL = 1e-4                      # float32 losses of two engines on the same batch and weights


# --------------------------------------------------------------------------- the synthetic batch


def synthetic_blocks(n_blocks: int, block_len: int, vocab_size: int, rng: np.random.Generator):
    """Random blocks shaped like WordPiece text -> (blocks, word_starts), lists of (block_len,) arrays.

    Ids are ordinary tokens (>= 5) drawn from a Zipf law (p ∝ 1/rank, as word frequencies are),
    so the embedding gradient sees realistic repeats; words have 1-4 pieces (``WORD_PIECES_PMF``),
    so whole-word and span masking have words to respect.
    """
    ranks = np.arange(1, vocab_size - NUM_SPECIAL_IDS + 1, dtype=np.float64)
    cdf = np.cumsum(1.0 / ranks)
    cdf /= cdf[-1]  # exactly 1.0 at the end, so a uniform draw in [0, 1) always lands on a rank
    ids = NUM_SPECIAL_IDS + np.searchsorted(cdf, rng.random((n_blocks, block_len)), side="right")
    blocks, starts = [], []
    for row in ids:
        pieces = 1 + rng.choice(len(WORD_PIECES_PMF), size=block_len, p=WORD_PIECES_PMF)
        word_start_positions = np.concatenate([[0], np.cumsum(pieces)[:-1]])
        word_starts = np.zeros(block_len, dtype=bool)
        word_starts[word_start_positions[word_start_positions < block_len]] = True
        blocks.append(row.astype(np.int64))
        starts.append(word_starts)
    return blocks, starts


def synthetic_batch(cfg: RunConfig, model_config):
    """One masked batch (:class:`masking.PretrainingBatch`) of full-length synthetic blocks."""
    rng = np.random.default_rng([cfg.seed, 0, 7])
    blocks, starts = synthetic_blocks(cfg.batch_size, cfg.seq_len - 2, model_config.vocab_size, rng)
    return make_pretraining_batch(
        blocks, starts, cfg.masking, rng, seq_len=cfg.seq_len, vocab_size=model_config.vocab_size,
        cls_id=CLS_ID, sep_id=SEP_ID, unigram=unigram_distribution(blocks, model_config.vocab_size),
        max_pair_targets=model_config.sbo_max_targets,
    )


# --------------------------------------------------------------------------- FLOPs and peak


def training_flops(config, *, batch_size: int, seq_len: int, mlm_targets: int, sbo_targets: int) -> dict:
    """Matrix-multiply FLOPs of one training step (forward + backward), by part, and their total.

    A product (m, k) @ (k, n) costs 2mkn FLOPs forward and 4mkn backward (one product for the
    input's gradient, one for the weight's), so every dense layer costs 6 x weights x rows per
    step. Elementwise work (softmax, LayerNorm, GeLU, AdamW) and lookups are not counted, as in
    the usual MFU convention (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022, app. B).
    With H hidden, F intermediate, L layers, T seq_len, B batch, V vocab, D SBO position dim,
    N masked (MLM) tokens and P SBO targets:

        encoder_dense = 6 * L * (4 H^2 + 2 H F) * B T          Q, K, V, O and the two FFN layers
        attention     = 12 * L * T^2 * H * B                   Q K^T and A V: 2 x 2 T^2 H fwd, x3
        mlm_head      = 6 * (H^2 + H V) * N                    transform + tied decoder, masked only
        sbo_head      = 6 * ((2H + D) H + H^2 + H V) * P       two MLP layers + tied decoder
    """
    H, V, D = config.hidden_size, config.vocab_size, config.sbo_position_dim
    parts = {
        **encoder_flops(config, batch_size=batch_size, seq_len=seq_len),
        "mlm_head": 6 * (H * H + H * V) * mlm_targets,
        "sbo_head": 6 * ((2 * H + D) * H + H * H + H * V) * sbo_targets,
    }
    parts["total"] = sum(parts.values())
    return parts


def encoder_flops(config, *, batch_size: int, seq_len: int) -> dict:
    """The encoder's parts of :func:`training_flops`, ``encoder_dense`` and ``attention`` (every
    task's model has them)."""
    H, F, L, T, B = config.hidden_size, config.intermediate_size, config.num_hidden_layers, seq_len, batch_size
    return {"encoder_dense": 6 * L * (4 * H * H + 2 * H * F) * B * T, "attention": 12 * L * T * T * H * B}


def measure_peak_gflops(xp, *, now=time.perf_counter, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` n x n x n float32 GEMMs on ``xp`` (n from PEAK_GEMM_SIZE):
    the yardstick for MFU, measured on this machine rather than taken from a data sheet."""
    n = PEAK_GEMM_SIZE[backend_name(xp)]
    rng = np.random.default_rng(0)
    a, b = (xp.asarray(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
    out = a @ b  # first call: BLAS thread start-up, cuBLAS handle and kernel selection
    best = math.inf
    for _ in range(repeats):
        synchronize(xp)
        start = now()
        xp.matmul(a, b, out=out)
        synchronize(xp)
        best = min(best, now() - start)
    return 2 * n**3 / best / 1e9


# --------------------------------------------------------------------------- the machine


ISA_FLAGS = (("amx_tile", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))  # /proc/cpuinfo flag, name; widest first


def cpu_from_cpuinfo(text: str) -> dict:
    """The text of /proc/cpuinfo -> {"model": its first ``model name``, "isa": the widest vector ISA
    its first ``flags`` line names (AMX, AVX-512, AVX2, else "below AVX2")}; None for a line it lacks."""
    fields = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    flags = fields["flags"].split() if "flags" in fields else None
    isa = None if flags is None else next((name for flag, name in ISA_FLAGS if flag in flags), "below AVX2")
    return {"model": fields.get("model name") or None, "isa": isa}


def machine_cpu() -> dict:
    """{"model", "isa"} of this machine's CPU from /proc/cpuinfo (Linux); elsewhere the model is
    ``platform.processor()`` and the ISA "unknown"."""
    try:
        cpu = cpu_from_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        cpu = {"model": None, "isa": None}
    return {"model": cpu["model"] or platform.processor() or "unknown", "isa": cpu["isa"] or "unknown"}


# --------------------------------------------------------------------------- threads and memory


def host_peak_rss_bytes() -> int | None:
    """The process's peak resident set size (getrusage maxrss: KiB on Linux, bytes on macOS);
    None where ``resource`` does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class DevicePoolPeak:
    """High-water mark of CuPy's default memory pool (``total_bytes``: what the pool holds from the
    driver, in use or cached), sampled at the phase boundaries of every step; None on NumPy."""

    def __init__(self, xp):
        self.pool = None if backend_name(xp) == "numpy" else xp.get_default_memory_pool()
        self.peak = None if self.pool is None else 0

    def sample(self):
        if self.pool is not None:
            self.peak = max(self.peak, self.pool.total_bytes())


# --------------------------------------------------------------------------- timing


class PhaseClock:
    """Stamps when the backward pass starts and ends with the clock ``now``: a step whose backward
    function is wrapped by :meth:`timed` gives, with the step's own start and end, the forward /
    backward / optimizer split of one unmodified step (:meth:`split`)."""

    def __init__(self, pool_peak: DevicePoolPeak, now):
        self.pool_peak, self.now = pool_peak, now
        self.lock = threading.Lock()  # the shards of a split batch call backward from several threads
        self.reset()

    def reset(self):
        self.backward_start = self.backward_end = None

    def timed(self, backward):
        """``backward`` with its start and end stamped (and the device pool sampled at both)."""

        @functools.wraps(backward)
        def stamped(*args, **kwargs):
            start = self.now()  # when the forward was queued (all done, on NumPy)
            self.pool_peak.sample()  # every activation is alive here
            grads = backward(*args, **kwargs)
            end = self.now()
            self.pool_peak.sample()
            with self.lock:  # with shards: backward runs from the first shard's start to the last one's end
                self.backward_start = start if self.backward_start is None else min(self.backward_start, start)
                self.backward_end = end if self.backward_end is None else max(self.backward_end, end)
            return grads

        return stamped

    def split(self, start: float, end: float) -> tuple:
        """(total, forward, backward, optimizer) seconds of the step that ran from ``start`` to ``end``."""
        forward, backward = self.backward_start - start, self.backward_end - self.backward_start
        return end - start, forward, backward, end - self.backward_end


def finite_loss(loss: float, index: int) -> float:
    """``loss``; a one-line ValueError if it is nan or infinite (a bug, not a speed problem)."""
    if not math.isfinite(loss):
        raise ValueError(f"the loss became {loss} at benchmark step {index}: this is a bug, not a "
                         "speed problem; run python -m pytest tests/ to find it")
    return loss


class EngineStepper:
    """Our pretraining step on one fixed batch: ``step(index)`` runs train_step once and returns
    (loss, total seconds, forward, backward, optimizer seconds)."""

    def __init__(self, cfg: RunConfig, model, batch, pool_peak: DevicePoolPeak, now):
        self.cfg, self.batch, self.xp, self.now = cfg, batch, model.xp, now
        self.opt_state = adamw_init(model.params, xp=model.xp)
        self.decay_mask = no_decay_mask(model.params)
        self.phases = PhaseClock(pool_peak, now)
        # train_step reads only the model's xp, params, forward and backward: the same, backward stamped
        self.model = SimpleNamespace(xp=model.xp, params=model.params, forward=model.forward,
                                     backward=self.phases.timed(model.backward))
        self.forward_backward = sharded_forward_backward(cfg, World())

    def step(self, index: int):
        dropout_rng = dropout_random(self.cfg.seed, index, xp=self.xp)
        self.phases.reset()
        synchronize(self.xp)
        start = self.now()
        out, _ = train_step(self.model, self.batch, self.opt_state, lr=LEARNING_RATE, cfg=self.cfg,
                            decay_mask=self.decay_mask, dropout_rng=dropout_rng,
                            forward_backward=self.forward_backward)
        synchronize(self.xp)
        end = self.now()
        self.phases.pool_peak.sample()
        loss = finite_loss(float(out.loss), index)  # read after the clock stops: train_step never waits
        return (loss, *self.phases.split(start, end))


class OpProfiler:
    """Self time per op during the ``with`` block, attributed by wrapping functions with timers.

    Wrapped: every ``*_forward`` / ``*_backward`` function found in the loaded ``minispanbert.layers.*``,
    ``minispanbert.model.*`` and ``minispanbert.finetune.*`` modules and in ``minispanbert.train``, plus
    ``scatter_add``, ``erf``, ``clip_grad_norm``, ``adamw_update`` and ``clip_and_step`` wherever they were
    imported. The names are replaced in every module that imported them (``from x import f`` binds a name
    per module) and restored on exit. Nested calls are subtracted from their caller, so ``self_time`` is
    exclusive: a matmul written inline in ``self_attention_forward`` counts there, the ``linear_forward``
    it calls does not.
    Each wrapped call synchronises the device before and after (CuPy), so the profiled step is slower
    than a timed one; only the shares are meant to be read.
    """

    EXTRA = ("scatter_add", "erf", "clip_grad_norm", "adamw_update", "clip_and_step")

    def __init__(self, xp, now=time.perf_counter):
        self.xp, self.now = xp, now
        self.self_time = defaultdict(float)
        self.calls = Counter()
        self._children = []  # stack: time spent in wrapped callees of each active call
        self._patched = []

    def _wrap(self, fn):
        name = fn.__name__

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            synchronize(self.xp)
            self._children.append(0.0)
            start = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                synchronize(self.xp)
                elapsed = self.now() - start
                self.self_time[name] += elapsed - self._children.pop()
                self.calls[name] += 1
                if self._children:
                    self._children[-1] += elapsed

        return timed

    @staticmethod
    def _profiled_modules():
        prefixes = ("minispanbert.layers.", "minispanbert.model.", "minispanbert.finetune.")
        modules = ("minispanbert.train", "minispanbert.optim")
        return [m for name, m in sorted(sys.modules.items())
                if m is not None and (name.startswith(prefixes) or name in modules)]

    def __enter__(self):
        wrappers = {}
        for module in self._profiled_modules():
            for attr, value in list(vars(module).items()):
                if not callable(value) or not getattr(value, "__module__", "").startswith("minispanbert"):
                    continue
                if attr.endswith(("_forward", "_backward")) or attr in self.EXTRA:
                    if value not in wrappers:
                        wrappers[value] = self._wrap(value)
                    self._patched.append((module, attr, value))
                    setattr(module, attr, wrappers[value])
        return self

    def __exit__(self, *exc):
        for module, attr, original in reversed(self._patched):
            setattr(module, attr, original)
        self._patched.clear()
        return False

    def top(self, total_seconds: float, n: int = PROFILE_TOP) -> list[dict]:
        """The ``n`` ops with the most self time, plus the step's time in no wrapped op."""
        rows = [dict(op=name, ms=1e3 * t, share=t / total_seconds, calls=self.calls[name])
                for name, t in sorted(self.self_time.items(), key=lambda kv: -kv[1])]
        unwrapped = total_seconds - sum(self.self_time.values())
        return rows[:n] + [dict(op="(outside wrapped ops)", ms=1e3 * unwrapped, share=unwrapped / total_seconds, calls=1)]


# --------------------------------------------------------------------------- what a row times


class PretrainingWorkload:
    """The pretraining rows: SpanBERT's ``train_step`` (MLM + SBO, clipping, AdamW) on a masked
    synthetic batch, against ``torch_reference.torch_train_step_factory``.

    A workload is what the processes of one comparison share: the initial weights (``params``) and
    batch (``batch``, host arrays, handed over as files), our step (``stepper``), the twin's step
    (``torch_step``) and the report's fields that describe the work (``report_fields``: its FLOPs
    among them). The fine-tuning row's is :class:`minispanbert.engine.bench.finetune_bench.Sst2Workload`.
    """

    task = "pretrain"
    batch_type = PretrainingBatch  # what read_handoff rebuilds the batch as

    def __init__(self, args):
        self.cfg = bench_config(args)
        self.model_config, self.dtype = self.cfg.model_config(), self.cfg.dtype

    def params(self, xp) -> dict:
        return init_pretraining_params(self.model_config, self.cfg.seed, xp=xp, dtype=self.dtype)

    def batch(self) -> PretrainingBatch:
        return synthetic_batch(self.cfg, self.model_config)

    def stepper(self, params, batch, *, threads: int, xp, pool_peak, now) -> EngineStepper:
        """Our step with the batch split over ``threads`` shards (1: whole, on one thread)."""
        model = SpanBertForPretraining(self.model_config, params, xp=xp, sbo_weight=self.cfg.sbo_weight)
        return EngineStepper(dataclasses.replace(self.cfg, threads=threads), model, batch, pool_peak, now)

    def torch_step(self, torch, params, batch, device):
        """-> (the twin's TorchTrainStep from ``params``, the batch converted once for it)."""
        step = torch_train_step_factory(
            torch, params, self.model_config, lr=LEARNING_RATE, weight_decay=self.cfg.weight_decay,
            decay_mask=no_decay_mask(params), max_grad_norm=self.cfg.max_grad_norm,
            sbo_weight=self.cfg.sbo_weight, dtype=self.dtype, device=device)
        return step, to_torch_batch(torch, batch, self.model_config, device=device)

    def report_fields(self, batch) -> dict:
        mlm_targets = int(np.count_nonzero(batch.mlm_labels != IGNORE_INDEX))
        sbo_targets = int(batch.sbo_target.size)
        flops = training_flops(self.model_config, batch_size=self.cfg.batch_size, seq_len=self.cfg.seq_len,
                               mlm_targets=mlm_targets, sbo_targets=sbo_targets)
        return {"masking": self.cfg.masking, "mlm_targets": mlm_targets, "sbo_targets": sbo_targets,
                "flops_per_step": flops}


def workload_for(args):
    """The workload ``--task`` names. (finetune_bench imports this module, hence the import here.)"""
    if args.task == "sst2":
        from minispanbert.engine.bench.finetune_bench import Sst2Workload
        return Sst2Workload(args)
    return PretrainingWorkload(args)


def bench_dropout(args) -> float | None:
    """The dropout both engines run with: ``--dropout``, else None (the model's own, 0.1); 0 in a
    comparison and its processes, as the PyTorch twin has none."""
    if args.compare_torch or args.engine != "numpy":
        if args.dropout:
            raise ValueError("--compare-torch runs without dropout (the PyTorch reference has none): "
                             "drop --dropout or --compare-torch")
        return 0.0
    return args.dropout


def check_run_flags(args) -> None:
    """The flags every workload shares: one line for a bad one."""
    if args.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be at least 0, got {args.warmup_steps}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {args.rounds}")


def bench_config(args) -> RunConfig:
    """The RunConfig the benchmarked train_step runs under (validated: bad flags are one line)."""
    if args.preset in FINETUNE_SHAPES:
        raise ValueError(f"--preset {args.preset} is a fine-tuning shape: add --task sst2, or pretrain one of "
                         f"{', '.join(PRESETS)}")
    cfg = RunConfig(preset=args.preset, backend=args.backend, masking=args.masking, steps=args.steps,
                    batch_size=args.batch_size, seq_len=args.seq_len, dropout=bench_dropout(args), seed=args.seed)
    cfg.validate()
    check_run_flags(args)
    return cfg


# --------------------------------------------------------------------------- PyTorch yardstick


def import_torch():
    """PyTorch, or None if it is not installed."""
    try:
        # torch is an optional yardstick for --compare-torch, never a dependency of minispanbert:
        # it is imported here, at call time, and nowhere else in the package.
        return importlib.import_module("torch")
    except ImportError:
        return None


class TorchStepper:
    """A PyTorch twin's step (``torch_reference.TorchTrainStep``) on its converted batch;
    ``step(index)`` -> (loss, seconds)."""

    def __init__(self, torch, train_step, batch, *, device, now):
        self.torch, self.train_step, self.batch, self.device, self.now = torch, train_step, batch, device, now

    def step(self, index: int):
        self.synchronize()
        start = self.now()
        parts = self.train_step(self.batch)  # returns floats: .item() waits for the device
        return parts["loss"], self.now() - start

    def synchronize(self):
        if self.device != "cpu":
            self.torch.cuda.synchronize()


def torch_device(torch, backend: str):
    """"cpu" beside NumPy, "cuda" beside CuPy (comparing a GPU with a CPU says nothing); None when
    this torch cannot run there."""
    if backend == "numpy":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


@contextlib.contextmanager
def compile_failures_in_one_line():
    """Inside, any exception (inductor's, a missing C++ compiler, a recompile that ``torch._dynamo``'s
    ``error_on_recompile`` refused) becomes the ValueError "did not compile: <type>: <its first line>"."""
    try:
        yield
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or ["(no message)"])[0]
        raise ValueError(f"did not compile: {type(exc).__name__}: {first_line}"[:300]) from None


# --------------------------------------------------------------------------- the benchmark


def median_ms(seconds) -> float:
    return 1e3 * float(np.median(seconds))


def run_steps(step, warmup_steps: int, steps: int, *, before_timing=lambda: None):
    """``step(index)`` -> (loss, *seconds) for the warm-up and then the timed steps -> (every step's
    loss, every step's seconds as a row: the first ``warmup_steps`` rows are the warm-up's);
    ``before_timing()`` runs between the two."""
    losses, rows = [], []
    for index in range(warmup_steps + steps):
        if index == warmup_steps:
            before_timing()
        loss, *seconds = step(index)
        losses.append(loss)
        rows.append(seconds)
    return losses, rows


def split_batch(args, threads: int) -> bool:
    """Whether our step splits the batch over the threads (NumPy, more than one thread, and not
    ``--no-split-batch``)."""
    return args.backend == "numpy" and threads > 1 and args.split_batch


def bench_threads(args) -> int:
    """The thread count this process runs: ``--threads``, else the count OpenBLAS chose at import.
    On NumPy the pools are set for it through threadpoolctl (:func:`backend.set_cpu_threads`):
    one BLAS thread per shard when the batch is split (:func:`split_batch`), else BLAS on all of
    them. ``--clock cpu`` needs one thread on NumPy (CPU seconds = step time only then)."""
    threads = args.threads or cpu_threads()
    split = split_batch(args, threads)
    if args.backend == "numpy" and (threads != cpu_threads() or split):
        set_cpu_threads(threads, blas_threads=1 if split else threads)
    if args.clock == "cpu" and (args.backend != "numpy" or threads != 1):
        raise ValueError(
            "--clock cpu counts this process's CPU seconds, which equal step time only for one thread on "
            "NumPy: run python -m minispanbert.bench --threads 1 --clock cpu ..."
        )
    return threads


HANDOFF_PARAMS, HANDOFF_BATCH = "params.safetensors", "batch.npz"


def write_handoff(directory: Path, params: dict, batch) -> None:
    """The initial weights (safetensors) and the batch (npz of its arrays; ``batch`` a dataclass or a
    dict of arrays) that every engine's process reads, so they start from the same bytes. No pickle:
    the npz holds plain arrays."""
    arrays = batch if isinstance(batch, dict) else {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    save_params(directory / HANDOFF_PARAMS, params)
    np.savez(directory / HANDOFF_BATCH, **{name: np.asarray(value) for name, value in arrays.items()})


def read_handoff(directory: Path, *, xp, batch_type=PretrainingBatch):
    """-> (params on ``xp``, the batch as ``batch_type(**arrays)``) written by :func:`write_handoff`."""
    params = load_params(Path(directory) / HANDOFF_PARAMS, xp=xp)
    with np.load(Path(directory) / HANDOFF_BATCH, allow_pickle=False) as saved:
        batch = batch_type(**{name: saved[name] for name in saved.files})
    return params, batch


COMPILE_WARMUP_STEPS = 3  # at least: step 1 compiles forward and backward, the later ones show it holds


def run_torch_engine(args) -> dict:
    """A PyTorch twin alone, in this process (``--engine torch|torch-compile``, started by
    --compare-torch): the same flags, weights and batch (``--handoff``), warm-up, then the timed steps.

    ``torch-compile`` applies ``torch.compile`` to the twin's forward and loss
    (``TorchTrainStep.compile``); compiling happens in the first warm-up step (at least
    ``COMPILE_WARMUP_STEPS`` of them), and the timed steps run with ``torch._dynamo``'s
    ``error_on_recompile``, so a compile that would land among them fails the run instead. Any
    failure (no C++ compiler, an inductor error) is one line, "did not compile: ...".
    """
    work = workload_for(args)
    if args.handoff is None:
        raise ValueError(f"--engine {args.engine} needs --handoff DIR (written by --compare-torch)")
    threads = args.threads or cpu_threads()
    torch = import_torch()
    if torch is None:
        raise ValueError("PyTorch is not installed: pip install torch, or drop --compare-torch")
    device = torch_device(torch, args.backend)
    if device is None:
        raise ValueError("this PyTorch build has no CUDA: install a CUDA build of torch to compare on a GPU")
    torch.set_num_threads(threads)
    params, batch = read_handoff(Path(args.handoff), xp=np, batch_type=work.batch_type)
    train_step, torch_batch = work.torch_step(torch, params, batch, device)
    stepper = TorchStepper(torch, train_step, torch_batch, device=device, now=CLOCKS[args.clock])
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    compiled = args.engine == "torch-compile"
    warmup_steps = max(args.warmup_steps, COMPILE_WARMUP_STEPS) if compiled else args.warmup_steps

    def forbid_recompiles():
        if compiled:
            torch._dynamo.config.error_on_recompile = True

    with compile_failures_in_one_line() if compiled else contextlib.nullcontext():
        if compiled:
            train_step.compile()
        losses, rows = run_steps(stepper.step, warmup_steps, args.steps, before_timing=forbid_recompiles)
    seconds = [row[0] for row in rows[warmup_steps:]]
    return {
        "engine": args.engine, "pid": os.getpid(), "version": torch.__version__, "device": device,
        "threads": torch.get_num_threads(), "optimizer": train_step.optimizer_kind,
        "warmup_steps": warmup_steps, "compile_seconds": rows[0][0] if compiled else None,
        "step_ms": median_ms(seconds), "step_ms_all": [1e3 * s for s in seconds], "losses": losses,
        "host_peak_rss_bytes": host_peak_rss_bytes(),
        "device_peak_reserved_bytes": torch.cuda.max_memory_reserved() if device != "cpu" else None,
        "device_peak_allocated_bytes": torch.cuda.max_memory_allocated() if device != "cpu" else None,
    }


def run_benchmark(args) -> dict:
    """Run the benchmark described by the parsed flags; returns the report as a JSON-ready dict."""
    if args.compare_torch:
        return run_comparison(args)
    if args.engine != "numpy":
        return run_torch_engine(args)
    work = workload_for(args)
    threads = bench_threads(args)
    split = split_batch(args, threads)
    xp = get_backend(args.backend)
    if args.handoff is None:
        params, batch = work.params(xp), work.batch()
    else:
        params, batch = read_handoff(Path(args.handoff), xp=xp, batch_type=work.batch_type)
    tokens = args.batch_size * args.seq_len

    now = CLOCKS[args.clock]
    pool_peak = DevicePoolPeak(xp)
    ours = work.stepper(params, batch, threads=threads if split else 1, xp=xp, pool_peak=pool_peak, now=now)
    our_losses, rows = run_steps(ours.step, args.warmup_steps, args.steps)
    rows = rows[args.warmup_steps:]

    one_thread = work.stepper(params, batch, threads=1, xp=xp, pool_peak=pool_peak, now=now)
    # Its first step faults in the pages of a new optimizer state and of the unsplit batch's arrays: not profiled.
    one_thread.step(args.warmup_steps + args.steps)
    with OpProfiler(xp, now) as profiler:  # one thread: the profiler's call stack is not thread-safe
        _, profiled_seconds, *_ = one_thread.step(args.warmup_steps + args.steps + 1)
    rows_arr = np.array(rows)
    step_ms = median_ms(rows_arr[:, 0])
    fields = work.report_fields(batch)
    # The peak of every core the step computes on: with a split batch the step runs `threads` one-thread
    # BLAS side by side, so its peak is BLAS on all `threads` (the 1-thread BLAS of the shards would halve it).
    peak_threads = threads if args.backend == "numpy" else None
    with cpu_threads_set(threads, blas_threads=threads) if split else contextlib.nullcontext():
        peak = measure_peak_gflops(xp, now=now)
    achieved = fields["flops_per_step"]["total"] / (step_ms / 1e3) / 1e9
    return {
        "engine": "minispanbert", "task": work.task, "pid": os.getpid(), "backend": args.backend,
        "device": device_description(xp), "cpu": machine_cpu(), "preset": args.preset,
        "batch_size": args.batch_size, "seq_len": args.seq_len, **fields, "dtype": work.dtype,
        "dropout": work.model_config.hidden_dropout_prob, "steps": args.steps, "warmup_steps": args.warmup_steps,
        "threads": threads, "split_batch": split, "clock": args.clock,
        "parameters": int(sum(p.size for p in params.values())), "tokens_per_step": tokens,
        "step_ms": step_ms, "step_ms_all": [1e3 * r[0] for r in rows],
        "tokens_per_s": tokens / (step_ms / 1e3),
        "forward_ms": median_ms(rows_arr[:, 1]), "backward_ms": median_ms(rows_arr[:, 2]),
        "optimizer_ms": median_ms(rows_arr[:, 3]),
        "losses": our_losses,
        "achieved_gflops": achieved, "peak_gflops_measured": peak, "peak_blas_threads": peak_threads,
        "mfu": achieved / peak,
        "profile_step_ms": 1e3 * profiled_seconds, "profile": profiler.top(profiled_seconds),
        "host_peak_rss_bytes": host_peak_rss_bytes(), "device_pool_peak_bytes": pool_peak.peak,
        "torch": None, "torch_compiled": None,
    }


def engine_argv(args, threads: int) -> list[str]:
    """The flags that make a child process benchmark the same step as this one."""
    return ["--task", args.task, "--backend", args.backend, "--preset", args.preset,
            "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--steps", str(args.steps),
            "--warmup-steps", str(args.warmup_steps), "--masking", args.masking, "--seed", str(args.seed),
            "--threads", str(threads), "--clock", args.clock,
            "--split-batch" if args.split_batch else "--no-split-batch",
            "--dropout", "0"]  # the PyTorch twin has no dropout


def thread_environment(threads: int) -> dict:
    """This process's environment with every CPU thread pool (OpenBLAS, OpenMP, MKL, numba) set to
    ``threads``, for a child that benchmarks one engine."""
    env = dict(os.environ)
    for var in BLAS_THREAD_VARS + ("MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


def run_engine_process(engine: str, argv: list[str], handoff: Path, threads: int, timeout: float | None) -> dict:
    """Run ``python -m minispanbert.bench --engine ENGINE`` in a fresh process and return its report."""
    report = handoff / f"{engine}-{time.monotonic_ns()}.json"
    command = [sys.executable, "-m", "minispanbert.bench", *argv, "--engine", engine,
               "--handoff", str(handoff), "--json", str(report)]
    done = subprocess.run(command, env=thread_environment(threads), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ValueError(f"the {engine} benchmark process failed: {last}")
    return json.loads(report.read_text())


def compile_failure(exc: Exception) -> str:
    """The one line a --table cell and the report give a torch-compile process that failed."""
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"did not compile: no result within --process-timeout {exc.timeout:g} s"
    message = str(exc).split(": ", 1)[-1].removeprefix("error: ")  # the child's own line
    return message if message.startswith("did not compile") else f"did not compile: {message}"


def twin_summary(result: dict, ours_runs: list[dict], twin_runs: list[dict]) -> dict:
    """A PyTorch twin's numbers over all its processes beside ours (``result``, pooled): the median
    over every timed step, the ratio, each round's ratio and whether the first-step losses agree."""
    t = twin_runs[0]
    twin_all = [ms for run in twin_runs for ms in run["step_ms_all"]]
    twin_ms = float(np.median(twin_all))
    first_ours, first_twin = ours_runs[0]["losses"][0], t["losses"][0]
    return {
        "version": t["version"], "device": t["device"], "threads": t["threads"], "optimizer": t["optimizer"],
        "warmup_steps": t["warmup_steps"],
        **({"compile_seconds": [run["compile_seconds"] for run in twin_runs]} if t["compile_seconds"] else {}),
        "step_ms": twin_ms, "step_ms_all": twin_all, "tokens_per_s": result["tokens_per_step"] / (twin_ms / 1e3),
        "losses": t["losses"], "first_loss_ours": first_ours, "first_loss_torch": first_twin,
        "losses_agree": bool(abs(first_ours - first_twin) <= LOSS_RTOL * abs(first_twin)),
        "ratio_ours_over_torch": twin_ms / result["step_ms"],
        "round_ratios": [tr["step_ms"] / our["step_ms"] for our, tr in zip(ours_runs, twin_runs)],
        "pids": {"numpy": [run["pid"] for run in ours_runs], t["engine"]: [run["pid"] for run in twin_runs]},
        "host_peak_rss_bytes": max(run["host_peak_rss_bytes"] or 0 for run in twin_runs) or None,
        "device_peak_reserved_bytes": t["device_peak_reserved_bytes"],
        "device_peak_allocated_bytes": t["device_peak_allocated_bytes"],
    }


def run_comparison(args) -> dict:
    """``--compare-torch``: each engine in its own process (ours, the PyTorch eager twin and, unless
    --no-compile, the twin under torch.compile), ``--rounds`` times, the order rotating each round, on
    the same weights and batch handed over as files. Our report is the first round's (its profile,
    FLOPs, memory) with the step times of all rounds pooled; each ratio is the median over all timed
    steps of each engine, and each round's ratio is listed too. A torch.compile that fails is one
    line in the report (``torch_compiled``: {"skipped": ...}); the rest stands."""
    work = workload_for(args)
    threads = args.threads or cpu_threads()
    if args.clock == "cpu" and (args.backend != "numpy" or threads != 1):
        raise ValueError("--clock cpu counts one process's CPU seconds: use it with --threads 1 on numpy")
    torch = import_torch()
    skipped = ("PyTorch is not installed: --compare-torch skipped" if torch is None else
               "this PyTorch build has no CUDA: --compare-torch on cupy skipped"
               if torch_device(torch, args.backend) is None else None)
    if skipped:
        result = run_benchmark(argparse.Namespace(**{**vars(args), "compare_torch": False}))
        result["torch"] = {"skipped": skipped}
        return result
    engines = ("numpy", "torch", "torch-compile") if args.compile else ("numpy", "torch")
    runs, compile_failed = {engine: [] for engine in engines}, None
    with tempfile.TemporaryDirectory(prefix="minispanbert-bench-") as tmp:
        handoff = Path(tmp)
        write_handoff(handoff, work.params(np), work.batch())
        for index in range(args.rounds):
            for engine in engines[index % len(engines):] + engines[:index % len(engines)]:
                if engine == "torch-compile" and compile_failed:
                    continue
                try:
                    runs[engine].append(run_engine_process(engine, engine_argv(args, threads), handoff, threads,
                                                           args.process_timeout))
                except (ValueError, subprocess.TimeoutExpired) as exc:
                    if engine != "torch-compile":
                        raise
                    compile_failed = compile_failure(exc)
    ours_runs = runs["numpy"]
    result = dict(ours_runs[0])
    ours_all = [ms for run in ours_runs for ms in run["step_ms_all"]]
    result.update(step_ms=float(np.median(ours_all)), step_ms_all=ours_all,
                  tokens_per_s=result["tokens_per_step"] / (float(np.median(ours_all)) / 1e3))
    result["achieved_gflops"] = result["flops_per_step"]["total"] / (result["step_ms"] / 1e3) / 1e9
    result["mfu"] = result["achieved_gflops"] / result["peak_gflops_measured"]
    result["torch"] = twin_summary(result, ours_runs, runs["torch"])
    result["torch"]["method"] = (
        f"each engine in a fresh process (python -m minispanbert.bench --engine "
        f"{'|'.join(engines)}), {args.rounds} rounds rotating which runs first, the same weights (safetensors) "
        f"and batch (npz) read from files, {threads} threads in all (OPENBLAS/OMP/MKL/NUMBA_NUM_THREADS"
        f"={threads}, torch.set_num_threads({threads})), {args.warmup_steps} warm-up"
        + (f" (torch.compile: at least {COMPILE_WARMUP_STEPS})" if args.compile else "")
        + f" + {args.steps} timed steps per process, {args.clock} clock, median over all timed steps")
    if args.compile:
        result["torch_compiled"] = ({"skipped": compile_failed} if compile_failed else
                                    twin_summary(result, ours_runs, runs["torch-compile"]))
    return result


FINETUNE_SHAPES = {  # the fine-tuning row's model (--task sst2 --preset NAME): MiniLM-L6-H384's shape
    "minilm-shape": ModelConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                intermediate_size=1536, max_position_embeddings=512),
}
TABLE_ROWS = (  # task, preset, batch, seq, timed steps per process
    ("pretrain", "tiny", 16, 128, 10), ("pretrain", "mini", 16, 128, 6), ("pretrain", "small", 8, 128, 5),
    ("sst2", "minilm-shape", 32, 64, 5),
)


def run_table(args) -> list[dict]:
    """``--table``: --compare-torch for each row of the README's CPU table (the flags' threads,
    clock, rounds and --compile) -> one comparison report per row."""
    rows = []
    for task, preset_name, batch_size, seq_len, steps in TABLE_ROWS:
        row_args = argparse.Namespace(**{**vars(args), "task": task, "preset": preset_name, "batch_size": batch_size,
                                         "steps": steps, "seq_len": seq_len, "compare_torch": True, "table": False})
        rows.append(run_benchmark(row_args))
        print(format_table_row(rows[-1]), flush=True)
    return rows


# --------------------------------------------------------------------------- report


def _mib(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


FLOP_PARTS = {"encoder_dense": "encoder dense", "attention": "attention", "mlm_head": "MLM head",
              "sbo_head": "SBO head", "classifier_head": "pooler + classifier"}


def workload_line(r: dict) -> str:
    """What the step computes, in one line of the report."""
    shape = f"preset {r['preset']} ({r['parameters']:,} parameters), batch {r['batch_size']} x seq {r['seq_len']}"
    if r["task"] == "sst2":
        work = (f"SST-2 fine-tuning step (encoder + pooler + {r['labels']}-way classifier, clip + AdamW as "
                f"python -m minispanbert.finetune sst2), {shape}, random 0/1 labels")
    else:
        work = f"{shape}, {r['masking']} masking: {r['mlm_targets']} MLM / {r['sbo_targets']} SBO targets"
    return f"{work}, {r['dtype']}, dropout {r['dropout']}"


def twin_lines(t: dict) -> list[str]:
    """The report's lines for one PyTorch twin's summary (eager, or under torch.compile)."""
    compiled = "compile_seconds" in t
    how, name = ("under torch.compile (inductor)", "torch.compile") if compiled else ("eager", "torch eager")
    compiling = (f"; compiling step {', '.join(f'{s:.0f}' for s in t['compile_seconds'])} s, "
                 f"{t['warmup_steps']} warm-up steps" if compiled else "")
    return [
        f"PyTorch {t['version']} {how} on {t['device']}, {t['threads']} threads, {t['optimizer']}: "
        f"{t['step_ms']:.1f} ms = {t['tokens_per_s']:,.0f} tokens/s; peak host RSS {_mib(t['host_peak_rss_bytes'])}, "
        f"device reserved {_mib(t['device_peak_reserved_bytes'])}{compiling}",
        f"first-step loss: ours {t['first_loss_ours']:.6f}, {name} {t['first_loss_torch']:.6f} -> "
        f"{'agree' if t['losses_agree'] else 'DISAGREE'} (rtol {LOSS_RTOL:g})",
        f"ratio ours/{name} (tokens/s): {t['ratio_ours_over_torch']:.2f}x "
        f"(per round: {', '.join(f'{x:.2f}' for x in t['round_ratios'])})",
    ]


def format_report(r: dict) -> str:
    split_note = " (CuPy: backward/optimizer split approximate, sum exact)" if r["backend"] == "cupy" else ""
    f = r["flops_per_step"]
    lines = [
        f"minispanbert bench: {r['backend']} on {r['device']}, {r['threads']} threads"
        + (" (the batch split over them, 1 BLAS thread each)" if r["split_batch"] else " (BLAS; torch)"),
        f"CPU: {r['cpu']['model']}, widest vector ISA {r['cpu']['isa']}",
        workload_line(r),
        f"step (median of {r['steps']} after {r['warmup_steps']} warm-up, {r['clock']} clock): {r['step_ms']:.1f} ms = "
        f"{r['tokens_per_s']:,.0f} tokens/s",
        f"  forward {r['forward_ms']:.1f} ms | backward {r['backward_ms']:.1f} ms | "
        f"clip + AdamW {r['optimizer_ms']:.1f} ms{split_note}",
        f"FLOPs/step {f['total'] / 1e9:.2f} G ("
        + ", ".join(f"{FLOP_PARTS[part]} {n / 1e9:.2f}" for part, n in f.items() if part != "total")
        + f"): {r['achieved_gflops']:.1f} GFLOP/s achieved",
        f"MFU {100 * r['mfu']:.1f}% of {r['peak_gflops_measured']:.1f} GFLOP/s measured with a "
        f"{PEAK_GEMM_SIZE[r['backend']]}^3 float32 GEMM on this backend"
        + (f", BLAS on {r['peak_blas_threads']} threads" if r["peak_blas_threads"] else ""),
        f"peak memory: host RSS {_mib(r['host_peak_rss_bytes'])}, device pool {_mib(r['device_pool_peak_bytes'])}",
        f"per-op self time in one profiled step ({r['profile_step_ms']:.1f} ms, timers on, one thread, unsplit):",
    ]
    lines += [f"  {row['op']:<34} {row['ms']:8.2f} ms {100 * row['share']:5.1f}%  x{row['calls']}" for row in r["profile"]]
    t, c = r["torch"], r["torch_compiled"]
    if t and "skipped" in t:
        lines.append(t["skipped"])
    elif t:
        lines += twin_lines(t)
        lines += [f"torch.compile: {c['skipped']}"] if c and "skipped" in c else twin_lines(c) if c else []
        lines.append(f"how: {t['method']}")
    return "\n".join(lines)


TABLE_HEADER = ("| preset (batch) | threads | clock | minispanbert tok/s | PyTorch eager tok/s | ratio | "
                "per-round ratios | losses agree | torch.compile tok/s | ratio vs compiled |\n"
                "|---|---|---|---|---|---|---|---|---|---|")


def threads_cell(r: dict) -> str:
    return f"{r['threads']}" + (" split" if r["split_batch"] else " BLAS" if r["threads"] > 1 else "")


def row_cell(r: dict) -> str:
    if r["task"] == "sst2":
        return f"SST-2 fine-tune, {r['preset']} ({r['batch_size']}, seq {r['seq_len']})"
    return f"{r['preset']} ({r['batch_size']})"


def compiled_cells(c: dict | None) -> str:
    """The torch.compile columns: tokens/s and our ratio, or why there are none."""
    if c is None:
        return "not run (--no-compile) | |"
    if "skipped" in c:
        return f"{c['skipped'].replace('|', '/')} | |"
    return f"{c['tokens_per_s']:,.0f} | {c['ratio_ours_over_torch']:.2f} |"


def format_table_row(r: dict) -> str:
    """One Markdown row of the CPU table from a --compare-torch report."""
    t = r["torch"]
    ours = f"| {row_cell(r)} | {threads_cell(r)} | {r['clock']} | {r['tokens_per_s']:,.0f} |"
    if "skipped" in t:
        return f"{ours} skipped | | | | | |"
    rounds = " ".join(f"{x:.2f}" for x in t["round_ratios"])
    return (f"{ours} {t['tokens_per_s']:,.0f} | {t['ratio_ours_over_torch']:.2f} | {rounds} | {t['losses_agree']} | "
            f"{compiled_cells(r['torch_compiled'])}")


# --------------------------------------------------------------------------- command line


def parse_args(argv=None):
    p = Parser("python -m minispanbert.bench", __doc__)
    p.add_argument("--backend", choices=BACKENDS, default="numpy")
    p.add_argument("--task", choices=("pretrain", "sst2"), default="pretrain",
                   help="pretrain: SpanBERT's training step; sst2: the fine-tuning step of python -m "
                        "minispanbert.finetune sst2 (sentence classification, see finetune_bench.py)")
    p.add_argument("--preset", choices=[*PRESETS, *FINETUNE_SHAPES], default="tiny",
                   help=f"the model; {', '.join(FINETUNE_SHAPES)}: with --task sst2 only")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--warmup-steps", type=int, default=4,
                   help="untimed steps first (our process's heap reaches its steady size in its first three steps)")
    p.add_argument("--masking", choices=SCHEMES, default="span")
    p.add_argument("--dropout", type=float, default=None, help="default: the preset's 0.1 (0 with --compare-torch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of each engine (NumPy: set through threadpoolctl; PyTorch: "
                        "torch.set_num_threads); default: the count OpenBLAS detected")
    p.add_argument("--split-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="NumPy, N > 1 threads: split the batch over them, one BLAS thread each, as train.py "
                        "does (default); --no-split-batch: one batch, BLAS on N threads")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (NumPy, 1 thread; for shared machines)")
    p.add_argument("--compare-torch", action="store_true",
                   help="also time PyTorch eager (and torch.compile) on the same weights and batch, each engine in "
                        "its own process")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="--compare-torch and --table: also the PyTorch twin under torch.compile (inductor), compiled "
                        "in its warm-up; --no-compile skips it (compiling takes minutes on a few cores)")
    p.add_argument("--rounds", type=int, default=3,
                   help="--compare-torch: processes per engine, the order of the engines rotating each round")
    p.add_argument("--table", action="store_true",
                   help="the README's CPU table: --compare-torch for tiny (16), mini (16), small (8) at seq 128 and "
                        "the SST-2 fine-tuning step on minilm-shape (32) at seq 64")
    p.add_argument("--engine", choices=("numpy", "torch", "torch-compile"), default="numpy",
                   help=argparse.SUPPRESS)  # a child of --compare-torch
    p.add_argument("--handoff", default=None, help=argparse.SUPPRESS)  # the folder with the weights and batch files
    p.add_argument("--process-timeout", type=float, default=1800, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the report as JSON to this path")
    return p.parse_args(argv)


def table_provenance(args, argv: list[str]) -> str:
    """The line above a --table: the CPU, its ISA, the threads, PyTorch's version, the date and the
    command, so a table pasted into the README says where it came from."""
    cpu = machine_cpu()
    try:
        torch_version = importlib.metadata.version("torch")  # the version without importing torch
    except importlib.metadata.PackageNotFoundError:
        torch_version = "not installed"
    return (f"CPU {cpu['model']} ({cpu['isa']}), {args.threads or cpu_threads()} threads, PyTorch {torch_version}, "
            f"{datetime.date.today().isoformat()}: python -m minispanbert.bench {shlex.join(argv)}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    keep_freed_memory()  # in both engines' processes: the same allocator for PyTorch
    if args.json:  # try the folder before the benchmark runs (leaving any existing file as it is)
        _write_json(args.json, None)
    try:
        if args.table:
            print(table_provenance(args, argv), TABLE_HEADER, sep="\n\n", flush=True)
            result = run_table(args)
        else:
            with kernels.installed():  # the speed of the command-line tools, not of the reference ops
                result = run_benchmark(args)
    except (ValueError, OSError, subprocess.TimeoutExpired) as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        _write_json(args.json, result)
    if not args.table and args.engine == "numpy":
        print(format_report(result))
    return result


def _write_json(path: str, result) -> None:
    """Write the report to --json PATH atomically (``result`` None: only check that it can be
    written), with one line naming PATH, not the temporary file, when it cannot."""
    try:
        if result is None:
            fd, probe = temp_file(Path(path).parent, Path(path).name)
            os.close(fd)
            probe.unlink()
        else:
            write_text_atomic(Path(path), json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        sys.exit("error: " + describe_os_error(exc, f"cannot write --json {path}", "another --json path"))


if __name__ == "__main__":
    main()
