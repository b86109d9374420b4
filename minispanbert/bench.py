"""Training-throughput benchmark: ``python -m minispanbert.bench --backend numpy --preset tiny``.

Times the real training step (``train.train_step``: forward, backward, global-norm clipping, AdamW,
float32) on a synthetic batch and reports what a reader needs to judge the engine's speed:

* tokens/s and the median step time over ``--steps`` timed steps after ``--warmup-steps``;
* the forward / backward / optimizer split of those steps;
* a per-op profile (top 10 by self time) from ONE extra step in which every ``*_forward`` and
  ``*_backward`` function of ``minispanbert.layers`` and ``minispanbert.model`` (and the backend's
  ``scatter_add`` and ``erf``, and the optimizer) is temporarily wrapped with a timer; the timed
  steps run unwrapped;
* peak memory: host RSS, and on CuPy the high-water mark of the default memory pool;
* achieved GFLOP/s and model-FLOPs utilisation (MFU), against a peak MEASURED here with one large
  float32 GEMM on the same backend (not a vendor figure), see :func:`training_flops`;
* ``--compare-torch``: the same weights, batch and optimizer in PyTorch eager (fp32, the same
  thread count) through :mod:`minispanbert.torch_reference`; both first-step losses are printed and
  checked, and both throughputs and the ratio ours / torch come from one run, with the two
  engines' steps interleaved so background load hits both alike.

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

Threads: NumPy's BLAS (OpenBLAS) fixes its thread count when NumPy is imported, from
OPENBLAS_NUM_THREADS / GOTO_NUM_THREADS / OMP_NUM_THREADS, else the usable cores. A process cannot
change it afterwards without extra packages, so ``--threads N`` does not try: the bench reports the
count it detected and refuses an N that disagrees with it (set the variable when starting Python).
PyTorch, for --compare-torch, gets ``torch.set_num_threads(N)``.

Dropout: the preset's 0.1 as in training, except with --compare-torch, where it is 0 for both
engines (the PyTorch reference has no dropout), so they do the same work and their losses agree.

On CuPy, GeLU, LayerNorm, softmax and cross-entropy run as fused kernels (minispanbert/fused);
AdamW still launches one kernel per array operation of each parameter.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from .backend import BACKENDS, backend_name, cpu_threads, get_backend, make_rng, synchronize, to_numpy
from .config import PRESETS
from .data import CLS_ID, SEP_ID, unigram_distribution
from .atomic import write_text_atomic
from .layers.cross_entropy import IGNORE_INDEX
from .masking import NUM_SPECIAL_IDS, make_pretraining_batch
from .model.spanbert import SpanBertForPretraining
from .optim import adamw_init, no_decay_mask
from .train import SCHEMES, TrainConfig, device_description, train_step

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


def synthetic_batch(cfg: TrainConfig, model_config):
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
    H, F, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    D, T, B = config.sbo_position_dim, seq_len, batch_size
    parts = {
        "encoder_dense": 6 * L * (4 * H * H + 2 * H * F) * B * T,
        "attention": 12 * L * T * T * H * B,
        "mlm_head": 6 * (H * H + H * V) * mlm_targets,
        "sbo_head": 6 * ((2 * H + D) * H + H * H + H * V) * sbo_targets,
    }
    parts["total"] = sum(parts.values())
    return parts


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
    """Stands in for the model inside ``train_step`` (which only uses ``xp``, ``params``, ``forward``
    and ``backward``) and stamps when backward starts and ends with the clock ``now``, so one
    unmodified train_step gives the forward / backward / optimizer split."""

    def __init__(self, model, pool_peak: DevicePoolPeak, now):
        self.model, self.xp, self.params, self.pool_peak, self.now = model, model.xp, model.params, pool_peak, now
        self.backward_start = self.backward_end = None

    def forward(self, batch, **kwargs):
        return self.model.forward(batch, **kwargs)

    def backward(self, cache):
        self.backward_start = self.now()  # when the forward was queued (all done, on NumPy)
        self.pool_peak.sample()  # every activation is alive here
        grads = self.model.backward(cache)
        self.backward_end = self.now()
        self.pool_peak.sample()
        return grads


class EngineStepper:
    """Our training step on one fixed batch: ``step(index)`` runs train_step once and returns
    (loss, total seconds, forward, backward, optimizer seconds)."""

    def __init__(self, cfg: TrainConfig, model, batch, pool_peak: DevicePoolPeak, now):
        self.cfg, self.model, self.batch, self.xp, self.now = cfg, model, batch, model.xp, now
        self.opt_state = adamw_init(model.params, xp=model.xp)
        self.decay_mask = no_decay_mask(model.params)
        self.phases = PhaseClock(model, pool_peak, now)

    def step(self, index: int):
        dropout_rng = make_rng([self.cfg.seed, index, 3], xp=self.xp)
        synchronize(self.xp)
        start = self.now()
        out, _ = train_step(self.phases, self.batch, self.opt_state, lr=LEARNING_RATE, cfg=self.cfg,
                            decay_mask=self.decay_mask, dropout_rng=dropout_rng)
        synchronize(self.xp)
        end = self.now()
        self.phases.pool_peak.sample()
        loss = float(out.loss)  # read after the clock stops: train_step itself never waits for the device
        if not math.isfinite(loss):
            raise ValueError(f"the loss became {loss} at benchmark step {index}: this is a bug, not a "
                             "speed problem; run python -m pytest tests/ to find it")
        c = self.phases
        return loss, end - start, c.backward_start - start, c.backward_end - c.backward_start, end - c.backward_end


class OpProfiler:
    """Self time per op during the ``with`` block, attributed by wrapping functions with timers.

    Wrapped: every ``*_forward`` / ``*_backward`` function found in the loaded ``minispanbert.layers.*``
    and ``minispanbert.model.*`` modules and in ``minispanbert.train``, plus ``scatter_add``, ``erf``,
    ``clip_grad_norm`` and ``adamw_update`` wherever they were imported. The names are replaced in
    every module that imported them (``from x import f`` binds a name per module) and restored on
    exit. Nested calls are subtracted from their caller, so ``self_time`` is exclusive: a matmul
    written inline in ``self_attention_forward`` counts there, the ``linear_forward`` it calls does not.
    Each wrapped call synchronises the device before and after (CuPy), so the profiled step is slower
    than a timed one; only the shares are meant to be read.
    """

    EXTRA = ("scatter_add", "erf", "clip_grad_norm", "adamw_update")

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
        prefixes = ("minispanbert.layers.", "minispanbert.model.")
        return [m for name, m in sorted(sys.modules.items())
                if m is not None and (name.startswith(prefixes) or name in ("minispanbert.train", "minispanbert.optim"))]

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
    """The PyTorch eager twin (``torch_reference.torch_train_step_factory``) on the same initial
    weights, batch, optimizer settings and dtype; ``step(index)`` -> (loss, seconds)."""

    def __init__(self, torch, cfg: TrainConfig, initial_params, model_config, batch, *, device, now):
        from .torch_reference import to_torch_batch, torch_train_step_factory

        self.torch, self.device, self.now = torch, device, now
        self.train_step = torch_train_step_factory(
            torch, initial_params, model_config, lr=LEARNING_RATE, weight_decay=cfg.weight_decay,
            decay_mask=no_decay_mask(initial_params), max_grad_norm=cfg.max_grad_norm,
            sbo_weight=cfg.sbo_weight, dtype=cfg.dtype, device=device)
        self.batch = to_torch_batch(torch, batch, model_config, device=device)  # converted once, outside timing

    def step(self, index: int):
        start = self.now()
        parts = self.train_step(self.batch)  # returns floats: .item() waits for the device
        return parts["loss"], self.now() - start


def torch_device(torch, backend: str):
    """"cpu" beside NumPy, "cuda" beside CuPy (comparing a GPU with a CPU says nothing); None when
    this torch cannot run there."""
    if backend == "numpy":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


# --------------------------------------------------------------------------- the benchmark


def bench_config(args) -> TrainConfig:
    """The TrainConfig the benchmarked train_step runs under (validated: bad flags are one line)."""
    dropout = args.dropout
    if args.compare_torch:
        if dropout:
            raise ValueError("--compare-torch runs without dropout (the PyTorch reference has none): "
                             "drop --dropout or --compare-torch")
        dropout = 0.0
    cfg = TrainConfig(preset=args.preset, backend=args.backend, masking=args.masking, steps=args.steps,
                      batch_size=args.batch_size, seq_len=args.seq_len, dropout=dropout, seed=args.seed)
    cfg.validate()
    if args.warmup_steps < 0:
        raise ValueError(f"--warmup-steps must be at least 0, got {args.warmup_steps}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    return cfg


def median_ms(seconds) -> float:
    return 1e3 * float(np.median(seconds))


def torch_yardstick(cfg: TrainConfig, model, model_config, batch, threads: int, now):
    """-> (TorchStepper on a copy of the model's current weights, None), or (None, why it is skipped)."""
    torch = import_torch()
    if torch is None:
        return None, "PyTorch is not installed: --compare-torch skipped"
    device = torch_device(torch, cfg.backend)
    if device is None:
        return None, "this PyTorch build has no CUDA: --compare-torch on cupy skipped"
    torch.set_num_threads(threads)
    initial = {name: to_numpy(value).copy() for name, value in model.params.items()}
    return TorchStepper(torch, cfg, initial, model_config, batch, device=device, now=now), None


def run_benchmark(args) -> dict:
    """Run the benchmark described by the parsed flags; returns the report as a JSON-ready dict."""
    cfg = bench_config(args)
    threads = cpu_threads()
    if args.threads is not None and args.backend == "numpy" and args.threads != threads:
        raise ValueError(
            f"NumPy's BLAS runs {threads} threads, fixed when NumPy was imported: start the bench as "
            f"OPENBLAS_NUM_THREADS={args.threads} OMP_NUM_THREADS={args.threads} python -m minispanbert.bench ..."
        )
    threads = args.threads or threads
    if args.clock == "cpu" and (args.backend != "numpy" or threads != 1):
        raise ValueError(
            "--clock cpu counts this process's CPU seconds, which equal step time only for one thread on "
            "NumPy: run OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m minispanbert.bench --clock cpu ..."
        )
    xp = get_backend(cfg.backend)
    model_config = cfg.model_config()
    batch = synthetic_batch(cfg, model_config)
    mlm_targets = int(np.count_nonzero(batch.mlm_labels != IGNORE_INDEX))
    sbo_targets = int(batch.sbo_target.size)
    tokens = cfg.batch_size * cfg.seq_len

    model = SpanBertForPretraining.initialise(model_config, seed=cfg.seed, xp=xp, dtype=cfg.dtype,
                                              sbo_weight=cfg.sbo_weight)
    now = CLOCKS[args.clock]
    torch_stepper, torch_note = (torch_yardstick(cfg, model, model_config, batch, threads, now)
                                 if args.compare_torch else (None, None))
    pool_peak = DevicePoolPeak(xp)
    ours = EngineStepper(cfg, model, batch, pool_peak, now)
    our_losses, rows, torch_losses, torch_seconds = [], [], [], []
    # Interleave the two engines step by step: on a shared machine a burst of background load then
    # slows both, not one, and the ratio stays meaningful.
    for index in range(args.warmup_steps + cfg.steps):
        loss, *timing = ours.step(index)
        our_losses.append(loss)
        if index >= args.warmup_steps:
            rows.append(timing)
        if torch_stepper is not None:
            loss, seconds = torch_stepper.step(index)
            torch_losses.append(loss)
            if index >= args.warmup_steps:
                torch_seconds.append(seconds)

    with OpProfiler(xp, now) as profiler:
        _, profiled_seconds, *_ = ours.step(args.warmup_steps + cfg.steps)
    rows_arr = np.array(rows)
    step_ms = median_ms(rows_arr[:, 0])
    flops = training_flops(model_config, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                           mlm_targets=mlm_targets, sbo_targets=sbo_targets)
    peak = measure_peak_gflops(xp, now=now)
    achieved = flops["total"] / (step_ms / 1e3) / 1e9
    result = {
        "backend": cfg.backend, "device": device_description(xp), "preset": cfg.preset,
        "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "masking": cfg.masking, "dtype": cfg.dtype,
        "dropout": model_config.hidden_dropout_prob, "steps": cfg.steps, "warmup_steps": args.warmup_steps,
        "threads": threads, "clock": args.clock, "parameters": model.num_parameters(),
        "mlm_targets": mlm_targets, "sbo_targets": sbo_targets, "tokens_per_step": tokens,
        "step_ms": step_ms, "step_ms_all": [1e3 * r[0] for r in rows],
        "tokens_per_s": tokens / (step_ms / 1e3),
        "forward_ms": median_ms(rows_arr[:, 1]), "backward_ms": median_ms(rows_arr[:, 2]),
        "optimizer_ms": median_ms(rows_arr[:, 3]),
        "losses": our_losses,
        "flops_per_step": flops, "achieved_gflops": achieved, "peak_gflops_measured": peak,
        "mfu": achieved / peak,
        "profile_step_ms": 1e3 * profiled_seconds, "profile": profiler.top(profiled_seconds),
        "host_peak_rss_bytes": host_peak_rss_bytes(), "device_pool_peak_bytes": pool_peak.peak,
        "torch": None,
    }
    if torch_stepper is not None:
        torch_ms = median_ms(torch_seconds)
        torch_tps = tokens / (torch_ms / 1e3)
        result["torch"] = {
            "version": torch_stepper.torch.__version__, "device": torch_stepper.device,
            "threads": torch_stepper.torch.get_num_threads(),
            "step_ms": torch_ms, "step_ms_all": [1e3 * s for s in torch_seconds], "tokens_per_s": torch_tps,
            "losses": torch_losses,
            "first_loss_ours": our_losses[0], "first_loss_torch": torch_losses[0],
            "losses_agree": bool(abs(our_losses[0] - torch_losses[0]) <= LOSS_RTOL * abs(torch_losses[0])),
            "ratio_ours_over_torch": result["tokens_per_s"] / torch_tps,
        }
    elif torch_note:
        result["torch"] = {"skipped": torch_note}
    return result


# --------------------------------------------------------------------------- report


def _mib(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def format_report(r: dict) -> str:
    split_note = " (CuPy: backward/optimizer split approximate, sum exact)" if r["backend"] == "cupy" else ""
    f = r["flops_per_step"]
    lines = [
        f"minispanbert bench: {r['backend']} on {r['device']}, {r['threads']} BLAS/torch threads",
        f"preset {r['preset']} ({r['parameters']:,} parameters), batch {r['batch_size']} x seq {r['seq_len']}, "
        f"{r['masking']} masking: {r['mlm_targets']} MLM / {r['sbo_targets']} SBO targets, {r['dtype']}, "
        f"dropout {r['dropout']}",
        f"step (median of {r['steps']} after {r['warmup_steps']} warm-up, {r['clock']} clock): {r['step_ms']:.1f} ms = "
        f"{r['tokens_per_s']:,.0f} tokens/s",
        f"  forward {r['forward_ms']:.1f} ms | backward {r['backward_ms']:.1f} ms | "
        f"clip + AdamW {r['optimizer_ms']:.1f} ms{split_note}",
        f"FLOPs/step {f['total'] / 1e9:.2f} G (encoder dense {f['encoder_dense'] / 1e9:.2f}, attention "
        f"{f['attention'] / 1e9:.2f}, MLM head {f['mlm_head'] / 1e9:.2f}, SBO head {f['sbo_head'] / 1e9:.2f}): "
        f"{r['achieved_gflops']:.1f} GFLOP/s achieved",
        f"MFU {100 * r['mfu']:.1f}% of {r['peak_gflops_measured']:.1f} GFLOP/s measured with a "
        f"{PEAK_GEMM_SIZE[r['backend']]}^3 float32 GEMM on this backend",
        f"peak memory: host RSS {_mib(r['host_peak_rss_bytes'])}, device pool {_mib(r['device_pool_peak_bytes'])}",
        f"per-op self time in one profiled step ({r['profile_step_ms']:.1f} ms, timers on):",
    ]
    lines += [f"  {row['op']:<34} {row['ms']:8.2f} ms {100 * row['share']:5.1f}%  x{row['calls']}" for row in r["profile"]]
    t = r["torch"]
    if t and "skipped" in t:
        lines.append(t["skipped"])
    elif t:
        lines += [
            f"PyTorch {t['version']} eager on {t['device']}, {t['threads']} threads: {t['step_ms']:.1f} ms = "
            f"{t['tokens_per_s']:,.0f} tokens/s",
            f"first-step loss: ours {t['first_loss_ours']:.6f}, torch {t['first_loss_torch']:.6f} -> "
            f"{'agree' if t['losses_agree'] else 'DISAGREE'} (rtol {LOSS_RTOL:g})",
            f"ratio ours/torch (tokens/s): {t['ratio_ours_over_torch']:.2f}x",
        ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m minispanbert.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=BACKENDS, default="numpy")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    p.add_argument("--masking", choices=SCHEMES, default="span")
    p.add_argument("--dropout", type=float, default=None, help="default: the preset's 0.1 (0 with --compare-torch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="expected BLAS threads (NumPy: must match OPENBLAS_NUM_THREADS/OMP_NUM_THREADS; "
                        "also torch.set_num_threads); default: the count detected")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (NumPy, 1 thread; for shared machines)")
    p.add_argument("--compare-torch", action="store_true", help="also time PyTorch eager on the same model and batch")
    p.add_argument("--json", default=None, help="also write the report as JSON to this path")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        result = run_benchmark(args)
        if args.json:
            write_text_atomic(Path(args.json), json.dumps(result, indent=2) + "\n")
    except (ValueError, OSError) as exc:
        sys.exit(f"error: {exc}")
    print(format_report(result))
    return result


if __name__ == "__main__":
    main()
