"""``python -m minispanbert.train``: the loop of ``minispanbert/train.py`` as a command, with what a
long run needs and a student does not: run folders, checkpoints and ``--resume``, faults and
Ctrl-C, every objective of the BERT family (``--objective``), threads and MPI ranks, metrics read
back from a GPU in batches, and the faster kernels of ``engine/kernels``.

All of it reaches the loop through :class:`minispanbert.train.Hooks`:

    forward_backward   the batch split over ``--threads`` (engine/parallel/shards.py) or over MPI
                       ranks with their gradients all-reduced (engine/parallel/distributed.py)
    log                each step's device values kept and read back every ``--log-every`` steps,
                       metrics.jsonl, the progress bar and the progress line; a non-finite loss
                       stops the run before its weights are saved
    evaluate           held-out batches on the threads, their sums all-reduced over the ranks
    save               a checkpoint (engine/runs), all or nothing, Ctrl-C held back meanwhile

With no data flag the run uses WikiText-2 from ``data/`` if it is there, else tries to download it,
else trains on the Python documentation topics that ship with every Python (and says so).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from minispanbert import train as loop
from minispanbert.backend import BACKENDS, backend_name, check_dtype, get_backend, to_numpy
from minispanbert.config import PRESETS, ModelConfig, preset
from minispanbert.data import read_corpus, split_documents
from minispanbert.engine import kernels
from minispanbert.engine.allocator import keep_freed_memory
from minispanbert.engine.cli import Parser, run_or_exit
from minispanbert.engine.datasets import resolve_default_corpus
from minispanbert.engine.parallel import shards
from minispanbert.engine.parallel.distributed import TRANSPORTS, World, init_world, shard_rows, slice_batch
from minispanbert.engine.parallel.threads import cpu_threads, cpu_threads_set, map_threads
from minispanbert.engine.runs.atomic import describe_os_error, interrupts_deferred
from minispanbert.engine.runs.checkpoint import (
    DEFAULT_KEEP,
    MODEL_FILE,
    VOCAB_SHA256,
    check_compatible,
    check_tensors,
    check_vocab,
    data_fingerprint,
    latest_step,
    load_checkpoint,
    save_checkpoint,
    step_dir_name,
    vocab_fingerprint,
)
from minispanbert.engine.runs.rundir import RunDir, open_run_dir
from minispanbert.engine.runs.runlog import append_metrics, new_figure, read_metrics, save_figure, truncate_metrics
from minispanbert.family.objectives import OBJECTIVES, get_objective

SCHEMES = ("span", "word", "token", "ngram")  # each objective accepts some of them (its SCHEMES)
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_OUT = "runs/spanbert"
DEFAULT_OVERFIT_OUT = "runs/overfit-batch"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
# Settings that must match for --resume to continue the same run bit for bit.
# --steps may change: training then continues (or stops earlier) with the schedule recomputed for
# the new total, which is no longer bit-identical to a straight run of either length.
RESUME_MUST_MATCH = ("objective", "preset", "dtype", "masking", "sbo_weight", "batch_size", "seq_len", "seed", "dropout",
                     "lr", "warmup", "weight_decay", "max_grad_norm", "overfit_batch", "generator_size", "disc_weight")
ELECTRA_DEFAULTS = {"generator_size": 0.25, "disc_weight": 50.0}  # --objective electra's own flags


@dataclass(frozen=True)
class RunConfig(loop.TrainConfig):
    """The loop's :class:`~minispanbert.train.TrainConfig` and the command's own flags (``--help``
    describes each).

    ``log_every``: each step's losses and gradient norm stay on the device and are read back all
    at once every ``log_every`` steps, and always before an evaluation, before a checkpoint is
    saved and at the last step. metrics.jsonl still gets one record per step, the same whatever the
    value, except ``tokens_per_s``, which is the average over the steps read together. On a GPU
    every read waits for the device to finish all queued work, so N > 1 lets the host prepare the
    next batches while the device computes. It changes no number, so a resumed run may change it.
    """

    objective: str = "spanbert"
    backend: str = "numpy"
    masking: str | None = None         # None: the objective's default (spanbert: span)
    generator_size: float = ELECTRA_DEFAULTS["generator_size"]  # ELECTRA: H_G / H_D
    disc_weight: float = ELECTRA_DEFAULTS["disc_weight"]        # ELECTRA: lambda in L_MLM + lambda L_Disc
    data: str | None = None
    data_dir: str = "data"
    out: str | None = None             # None: the --resume run's folder, else runs/spanbert (runs/overfit-batch)
    resume: str | None = None
    overwrite: bool = False
    tokenizer: str | None = None       # a tokenizer.json (or a run folder) to reuse instead of training one
    keep_checkpoints: int = DEFAULT_KEEP
    log_every: int = 1
    distributed: str | None = None     # None: MPI when launched by mpiexec with N > 1, else one process
    threads: int | None = None         # NumPy: CPU threads, the batch split over them; None: cpu_threads()

    def __post_init__(self):
        if self.masking is None and self.objective in OBJECTIVES:
            object.__setattr__(self, "masking", get_objective(self.objective).SCHEMES[0])

    @property
    def out_dir(self) -> str | None:
        """The --out folder, defaulted; None means "the --resume run's own folder"."""
        if self.out is not None or self.resume is not None:
            return self.out
        return DEFAULT_OVERFIT_OUT if self.overfit_batch else DEFAULT_OUT

    def model_config(self) -> ModelConfig:
        return get_objective(self.objective).model_config(super().model_config(), self)

    def validate(self) -> None:
        """Every problem with the flags, one line each, before any work is done."""
        preset(self.preset)
        check_dtype(self.dtype)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        objective = get_objective(self.objective)  # an unknown objective is named before its masking default
        if self.masking not in SCHEMES:
            raise ValueError(f"unknown masking scheme {self.masking!r}: choose one of {', '.join(SCHEMES)}")
        objective.check_flags(self)
        for name, default in ELECTRA_DEFAULTS.items():
            if self.objective != "electra" and getattr(self, name) != default:
                raise ValueError(f"--{name.replace('_', '-')} applies to --objective electra only: drop the flag")
        for name in ("steps", "batch_size", "eval_every", "save_every", "log_every", "eval_batches",
                     "keep_checkpoints", "print_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        max_positions = preset(self.preset).max_position_embeddings
        if not 3 <= self.seq_len <= max_positions:
            raise ValueError(
                f"--seq-len {self.seq_len} is outside [3, {max_positions}] for preset {self.preset!r}: "
                f"lower it or choose a preset with more positions"
            )
        for name, value, ok, rule in (("lr", self.lr, self.lr > 0, "a positive number such as 1e-3"),
                                      ("max-grad-norm", self.max_grad_norm, self.max_grad_norm > 0,
                                       "a positive number such as 1.0"),
                                      ("sbo-weight", self.sbo_weight, self.sbo_weight >= 0, "0 (off) or more"),
                                      ("weight-decay", self.weight_decay, self.weight_decay >= 0, "0 or more")):
            if not (math.isfinite(value) and ok):
                raise ValueError(f"--{name} {value} is not allowed: give {rule}")
        if self.seed < 0:
            raise ValueError(f"--seed {self.seed} is negative: give an integer >= 0")
        if not (math.isfinite(self.valid_fraction) and 0.0 <= self.valid_fraction < 1.0):
            raise ValueError(f"--valid-fraction {self.valid_fraction} must lie in [0, 1) (0: no held-out documents)")
        if self.resume is not None and self.tokenizer is not None:
            raise ValueError("--tokenizer and --resume exclude each other: a resumed run keeps its checkpoint's "
                             "tokenizer; drop --tokenizer")
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            raise ValueError(f"--warmup {self.warmup} must lie in [0, --steps {self.steps}]")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must lie in [0, 1), got {self.dropout}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.threads not in (None, 1) and self.backend != "numpy":
            raise ValueError("--threads applies to --backend numpy (a GPU is parallel already): drop --threads")


def read_tokenizer_flag(path, objective="spanbert") -> object:
    """``--tokenizer PATH``: a tokenizer.json file, or a run / checkpoint folder holding one."""
    path = Path(path)
    if path.is_dir():
        from minispanbert.engine.runs.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(path) / TOKENIZER_FILE
    return get_objective(objective).load_tokenizer(path)


# --------------------------------------------------------------------------- data


def load_documents(cfg: RunConfig, log):
    """-> (train documents, validation documents, description)."""
    if cfg.data is not None:
        documents = read_corpus(cfg.data)
        train_docs, valid_docs, description = documents, None, f"{cfg.data} ({len(documents)} documents)"
    else:
        train_docs, valid_docs, description = resolve_default_corpus(cfg.data_dir, log=log)
    if not valid_docs:
        if len(train_docs) >= 2 and cfg.valid_fraction > 0:
            train_docs, valid_docs = split_documents(train_docs, cfg.valid_fraction, cfg.seed)
            description += f"; {len(valid_docs)} documents held out for validation"
        else:
            valid_docs = []
    return train_docs, valid_docs, description


def prepare_data(cfg: RunConfig, model_config: ModelConfig, tokenizer, log,
                 world: World = World()) -> loop.PretrainingData:
    """Read, tokenize and pack with the objective's own tokenizer and packing. ``tokenizer`` is None
    for a fresh run (then one is trained; data parallel: by rank 0, whose tokenizer every rank then
    uses, so all share one vocabulary)."""
    train_docs, valid_docs, description = load_documents(cfg, log)
    objective = get_objective(cfg.objective)
    if tokenizer is None:
        tokenizer = world.share_from_main(
            lambda: objective.train_tokenizer((line for doc in train_docs for line in doc), model_config.vocab_size),
            encode=lambda tok: tok.to_str(), decode=Tokenizer.from_str)
    return loop.prepare_data(cfg, model_config.vocab_size, train_docs, valid_docs, tokenizer, description=description,
                             encode=objective.encode_documents, pack=objective.pack,
                             min_valid_documents=getattr(objective, "MIN_DOCUMENTS", 1))


def batch_maker(cfg: RunConfig, model_config: ModelConfig, data: loop.PretrainingData):
    """(examples, rng) -> the objective's masked batch of host arrays."""
    objective = get_objective(cfg.objective)
    return lambda examples, rng: objective.make_batch(examples, rng, cfg=cfg, model_config=model_config,
                                                      unigram=data.unigram)


# --------------------------------------------------------------------------- hooks: step, log, evaluate


def sharded_forward_backward(cfg: RunConfig, world: World):
    """The hook ``forward_backward``: the whole batch's output and gradients, computed

    * in one piece (one thread, CuPy),
    * as ``cfg.threads`` shards on as many threads (NumPy, :mod:`minispanbert.engine.parallel.shards`), or
    * on MPI ranks, each with its rows of the global batch (``world.size > 1``): each loss term is a
      mean over the targets of the WHOLE batch, so the per-term target counts are summed over the
      ranks first and each term's upstream gradient is scaled by local / global count; the
      all-reduced sum of the ranks' gradients is then exactly the single-process gradient
      (:mod:`minispanbert.engine.parallel.distributed`). A rank draws its rows' dropout masks from
      the step's keyed generator (``dropout_rng.rows``): the masks one process draws for them.
    """
    objective = get_objective(cfg.objective)
    weights = getattr(objective, "term_weights", lambda _cfg: None)(cfg)
    rows = shard_rows(cfg.batch_size, world)

    def forward_backward(model, batch, dropout_rng):
        if world.size > 1:
            batch = slice_batch(batch, rows)  # every rank masked the global batch, as one process would
            dropout_rng = dropout_rng.rows(rows) if dropout_rng is not None else None
            out, cache = model.forward(batch, train=True, rng=dropout_rng)
            counts = [getattr(out, f"{h}_count") for h in objective.HEADS]
            totals = world.sum_host(counts)
            term_scales = {h: (count / total if total else 0.0)
                           for h, count, total in zip(objective.HEADS, counts, totals)}
            grads = model.backward(cache, term_scales=term_scales)
            world.allreduce_gradients(grads, xp=model.xp)
            return out, grads
        if cfg.threads > 1 and backend_name(model.xp) == "numpy":
            return shards.forward_backward(model, batch, shards=cfg.threads, heads=objective.HEADS, weights=weights,
                                           dropout_rng=dropout_rng)
        return loop.forward_backward(model, batch, dropout_rng)

    return forward_backward


def read_train_records(pending, *, xp, since: float, tokens_per_step: int, heads=("mlm", "sbo"), ratios=None,
                       world: World = World(), weights=None) -> list[dict]:
    """metrics.jsonl records for the steps not yet read back, with ONE device -> host copy.

    ``pending``: one (step, lr, output, grad_norm) per step, step counted from 1 (updates done, as
    in the checkpoints), lr a host float, the rest as :func:`train_step` returned them. ``since``:
    when this interval's first step began; each record gets the interval's average tokens/s.
    ``heads``: the objective's loss terms, logged as ``{head}_loss``. ``ratios``: the objective's
    optional RATIOS, {name: (numerator attribute, denominator attribute)} of its output, logged
    as numerator / max(denominator, 1) (ELECTRA: accuracy on replaced tokens, ...).

    Data parallel: each rank holds its shard's means; the records are the global batch's. Head h's
    global loss is sum_r (n_rh / N_h) L_rh (counts all-reduced first, as in :func:`train_step`),
    ratios sum their numerators and denominators over the ranks, and the total is rebuilt as
    sum_h w_h L_h from the objective's ``weights`` (1 each by default). The gradient norm is the
    same on every rank (taken after the all-reduce).
    """
    ratios = ratios or {}
    ratio_attributes = [a for pair in ratios.values() for a in pair]
    keys = ["loss", *(f"{h}_loss" for h in heads), *ratio_attributes]
    stacked = xp.stack([xp.asarray(v, dtype=xp.float64) for _, _, out, grad_norm in pending
                        for v in (*(getattr(out, k) for k in keys), grad_norm)])
    values = to_numpy(stacked).reshape(len(pending), len(keys) + 1)  # waits for the device
    losses, numerators = values[:, 1:1 + len(heads)], values[:, 1 + len(heads):-1]
    if world.size > 1:
        counts = np.array([[getattr(out, f"{h}_count") for h in heads] for _, _, out, _ in pending], dtype=np.float64)
        totals = world.sum_host(counts)
        scales = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        reduced = world.sum_host(np.concatenate([scales * losses, numerators], axis=1))
        losses, numerators = reduced[:, :len(heads)], reduced[:, len(heads):]
        weights = {h: 1.0 for h in heads} | (weights or {})
        values[:, 0] = losses @ np.array([weights[h] for h in heads])
    tokens_per_s = tokens_per_step * len(pending) / max(time.perf_counter() - since, 1e-9)
    records = []
    for (step, lr, _, _), row, head_losses, pairs in zip(pending, values, losses, numerators):
        record = dict(split="train", step=step, loss=float(row[0]), **{f"{h}_loss": float(v) for h, v in zip(heads, head_losses)})
        record.update({name: float(pairs[2 * i] / max(pairs[2 * i + 1], 1)) for i, name in enumerate(ratios)})
        records.append(dict(record, lr=lr, grad_norm=float(row[-1]), tokens_per_s=tokens_per_s))
    return records


def non_finite_error(record: dict, last_saved) -> ValueError:
    """The one-line error for the first step whose loss or gradient norm is not finite.
    ``last_saved``: (folder, step) of the newest checkpoint the run can go back to, or None."""
    if math.isfinite(record["loss"]):
        what, value = "gradient norm", record["grad_norm"]
    else:
        what, value = "loss", record["loss"]
    kept = ("no checkpoint was written yet" if last_saved is None
            else f"the last good checkpoint in {last_saved[0]} (step {last_saved[1]}) is kept")
    return ValueError(f"the {what} became {value} at step {record['step']}; {kept}: "
                      "lower --lr or train with --dtype float64")


def evaluate(model, eval_batches, heads=("mlm", "sbo"), ratios=None, world: World = World(), threads: int = 1) -> dict:
    """:func:`minispanbert.train.evaluate` over many threads and ranks: rank r evaluates batches
    r, r + N, ... (their forwards on ``threads`` threads, NumPy), and the sums and counts are
    all-reduced before the division, so every rank gets the numbers of the whole held-out set."""
    eval_batches = eval_batches[world.rank::world.size]
    xp = getattr(model, "xp", np)  # a stand-in model without xp gives host floats
    if threads > 1:
        outputs = map_threads(lambda batch: model.forward(batch, train=False)[0], eval_batches)
    else:
        outputs = (model.forward(batch, train=False)[0] for batch in eval_batches)
    sums, counts = loop.evaluation_sums(outputs, heads, ratios, xp=xp)
    if world.size > 1:
        reduced = world.sum_host([*sums, *(counts[h] for h in heads)]).tolist()
        sums, counts = reduced[:len(sums)], dict(zip(heads, reduced[len(sums):]))
    return loop.evaluation_results(sums, counts, heads, ratios)


# --------------------------------------------------------------------------- output


def plot_metrics(metrics_path: Path, plot_path: Path, heads=("mlm", "sbo"), title="SpanBERT", ratios=()) -> None:
    """Training and validation loss curves and held-out accuracies -> PNG."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r["split"] == "train"]
    valid = [r for r in records if r["split"] == "valid"]
    fig, axes = new_figure(2, (11, 4))
    for key, style in zip((f"{h}_loss" for h in heads), ("-", "--", ":")):
        axes[0].plot([r["step"] for r in train], [r[key] for r in train], style, label=f"train {key}", alpha=0.7)
        if valid:
            axes[0].plot([r["step"] for r in valid], [r[key] for r in valid], style + "o", label=f"valid {key}")
    axes[0].set(xlabel="step", ylabel="cross-entropy (nats)", title=f"{title} pretraining loss")
    axes[0].legend()
    if valid:
        for h, style in zip(heads, ("o-", "s-", "^-")):
            axes[1].plot([r["step"] for r in valid], [r[f"{h}_acc"] for r in valid], style,
                         label=f"valid {h.upper()} accuracy")
        for name in ratios:
            axes[1].plot([r["step"] for r in valid], [r[name] for r in valid], ".--", label=f"valid {name}")
        axes[1].axhline(valid[-1]["baseline_acc"], color="grey", ls=":", label="most frequent token")
        axes[1].legend()
    axes[1].set(xlabel="step", ylabel="accuracy", title="held-out accuracy" if valid else "no held-out text")
    save_figure(fig, plot_path)


def device_description(xp) -> str:
    if backend_name(xp) == "numpy":
        return f"CPU via NumPy {np.__version__} ({os.cpu_count()} cores)"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"GPU {name} via CuPy {xp.__version__}"


# --------------------------------------------------------------------------- the run


def interrupted_message(run_dir: RunDir | None) -> str:
    """What a Ctrl-C leaves, read from the disk so that it is true whenever the signal landed."""
    if run_dir is None:
        return "interrupted before the run folder was opened: nothing was written"
    if run_dir.staged:
        run_dir.discard()
        return (f"interrupted before the first checkpoint: nothing was written, and the run that was in "
                f"{run_dir.final} is untouched")
    step = latest_step(run_dir.path)
    if step is None:
        return (f"interrupted before the first checkpoint: {run_dir.path} holds nothing to resume; start the run "
                f"again with --overwrite")
    return f"interrupted: {run_dir.path} holds a complete checkpoint at step {step} (continue with --resume {run_dir.path})"


def run(cfg: RunConfig, log=print) -> dict:
    """Train as ``cfg`` says; returns the last evaluation's metrics (and the train loss history).

    The device values of each step (losses, gradient norm) wait in a list and are read back
    together every ``--log-every`` steps, and always before an evaluation, a save and the last
    step: on a GPU each read waits for the queue to drain, so reading every N steps lets the host
    prepare batch s+1 while the device still computes step s. Each read writes one metrics record
    per step and stops the run at the first non-finite loss or gradient norm; since it precedes
    every save, no checkpoint ever holds weights that a non-finite step updated.

    A KeyboardInterrupt leaves as KeyboardInterrupt(message), the message saying what is on disk.

    Under an MPI launcher (``mpiexec -n N``) the run is data parallel (:mod:`minispanbert.engine.parallel.distributed`):
    rank 0 alone opens the run folder and writes logs, metrics, plots and checkpoints; an error on
    any rank prints ``error: rank R: ...`` there and aborts every rank, so none waits forever.
    """
    run_dir, world = None, World()
    try:
        cfg.validate()
        world = init_world(cfg.distributed, backend=cfg.backend)
        world.check_same(dataclasses.asdict(cfg), "flags")
        shard_rows(cfg.batch_size, world)  # an uneven split is refused before any work
        cfg = dataclasses.replace(cfg, threads=resolve_threads(cfg, world))
        if world.is_main:
            run_dir = open_run_dir(cfg.out_dir, resume=cfg.resume, overwrite=cfg.overwrite)
        with thread_pools(cfg, world), kernels.installed():
            return _run(cfg, run_dir, log if world.is_main else (lambda _message: None), world)
    except KeyboardInterrupt:
        if not world.is_main:
            raise SystemExit(130) from None  # rank 0 says what is on disk
        message = interrupted_message(run_dir)
        if world.size > 1:  # a rank may wait for this one inside a collective forever: end them all
            world.interrupt_all(message)
        raise KeyboardInterrupt(message) from None
    except BaseException as exc:
        if run_dir is not None:
            run_dir.discard()  # an --overwrite run that failed before its first save leaves the old run
        if world.size > 1 and not isinstance(exc, SystemExit):
            world.abort(str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")
        if isinstance(exc, OSError):  # e.g. a full disk while appending metrics.jsonl or drawing loss.png
            where = exc.filename or (run_dir.path if run_dir is not None else cfg.out_dir)
            raise ValueError(describe_os_error(exc, f"cannot write {where}")) from None
        raise
    finally:
        if run_dir is not None:
            run_dir.release()


def _load_resumed(cfg: RunConfig, model_config: ModelConfig, xp):
    resumed = load_checkpoint(cfg.resume, xp=xp)
    if "train" not in resumed.config:
        raise ValueError(f"{resumed.directory} is not a pretraining checkpoint (it was written by fine-tuning): "
                         "--resume takes the --out folder of a python -m minispanbert.train run")
    check_compatible(resumed.config["train"], dataclasses.asdict(cfg), RESUME_MUST_MATCH)
    check_compatible(resumed.config["model"], model_config.to_dict(), model_config.to_dict().keys())
    try:
        tokenizer = get_objective(cfg.objective).load_tokenizer(resumed.directory / TOKENIZER_FILE)
    except ValueError:
        raise ValueError(f"the checkpoint in {resumed.directory} has no readable {TOKENIZER_FILE}, and the weights "
                         "only fit the tokenizer they were trained with: resume from another checkpoint folder "
                         "(checkpoints/step-*), do not train a new tokenizer") from None
    check_vocab(resumed.extra, tokenizer, resumed.directory / TOKENIZER_FILE)
    return resumed, tokenizer


def resolve_threads(cfg: RunConfig, world: World) -> int:
    """The run's ``--threads``: as given, else :func:`backend.cpu_threads` (the cores, or
    OPENBLAS_NUM_THREADS) on NumPy in one process; 1 on CuPy (a GPU is parallel already) and for
    data-parallel ranks (each computes its rows on the BLAS threads its launcher gave it)."""
    if world.size > 1:
        if cfg.threads not in (None, 1):
            raise ValueError("--threads applies to a single process: under mpiexec each rank computes its rows "
                             "itself; give every rank its BLAS threads with OPENBLAS_NUM_THREADS=N instead")
        return 1
    if cfg.backend != "numpy":
        return 1
    return cfg.threads or cpu_threads()


def thread_pools(cfg: RunConfig, world: World):
    """The thread settings of the run, for a ``with`` block: on NumPy in one process, ``cfg.threads``
    threads, each batch split into as many shards with a single-threaded BLAS each
    (:mod:`minispanbert.engine.parallel.shards`); elsewhere nothing changes."""
    if cfg.backend != "numpy" or world.size > 1:
        return contextlib.nullcontext()
    return cpu_threads_set(cfg.threads, blas_threads=1)


def _run(cfg: RunConfig, run_dir: RunDir | None, log, world: World) -> dict:
    xp = get_backend(cfg.backend)
    model_config = cfg.model_config()
    objective = get_objective(cfg.objective)
    heads, title = objective.HEADS, "SpanBERT" if cfg.objective == "spanbert" else cfg.objective
    ratios = getattr(objective, "RATIOS", {})
    weights = {h: 1.0 for h in heads} | (getattr(objective, "term_weights", lambda _cfg: {})(cfg) or {})

    resumed, tokenizer = _load_resumed(cfg, model_config, xp) if cfg.resume else (None, None)
    if cfg.tokenizer is not None:
        tokenizer = read_tokenizer_flag(cfg.tokenizer, cfg.objective)
    data = prepare_data(cfg, model_config, tokenizer, log, world)
    fingerprint = data_fingerprint(example[0] for example in data.train_examples)  # the packed token ids
    world.check_same({"data_sha256": fingerprint}, "training data (or tokenizer)")
    if resumed is not None:
        saved_fingerprint = resumed.extra.get("data_sha256")
        if saved_fingerprint is not None and saved_fingerprint != fingerprint:
            raise ValueError(f"the training data differs from the data the run in {cfg.resume} was trained on "
                             f"(--data {cfg.data}): resume with the run's --data, or start a fresh run")
        expected = objective.initialise(model_config, seed=0, xp=np, dtype="float32", cfg=cfg).params
        check_tensors(resumed.params, {name: tuple(w.shape) for name, w in expected.items()},
                      resumed.directory / MODEL_FILE)
        model = objective.from_params(model_config, resumed.params, xp=xp, cfg=cfg)
        opt_state, start_step = resumed.optimizer_state, resumed.step
        if start_step >= cfg.steps:
            raise ValueError(f"the checkpoint in {cfg.resume} is already at step {start_step}: "
                             f"ask for more --steps than that to continue training")
    else:
        model = objective.initialise(model_config, seed=cfg.seed, xp=xp, dtype=cfg.dtype, cfg=cfg)
        opt_state, start_step = None, 0

    make_batch = batch_maker(cfg, model_config, data)
    eval_batches = loop.held_out_batches(data.valid_examples, cfg, make_batch)
    baseline_acc = loop.most_frequent_token_accuracy(eval_batches, data.unigram) if eval_batches else None

    loss_formula = " + ".join(h.upper() if weights[h] == 1 else f"{weights[h]:g} x {h.upper()}" for h in heads)
    log(f"data: {data.description}")
    log(f"blocks: {len(data.train_examples)} train, {len(data.valid_examples)} valid; tokenizer vocabulary "
        f"{data.tokenizer.get_vocab_size()} (model {model_config.vocab_size})"
        + ("" if cfg.tokenizer is None else f", read from {cfg.tokenizer}"))
    if not eval_batches:
        log("no held-out text (one document, or --valid-fraction 0): the run reports training loss only")
    log(f"model: {cfg.objective}, preset {cfg.preset} ({model_config.num_hidden_layers} layers, hidden "
        f"{model_config.hidden_size}, {model.num_parameters():,} parameters), loss = {loss_formula}, --masking "
        f"{cfg.masking}; expected initial loss ln(V) = {math.log(model_config.vocab_size):.3f} for MLM"
        + (", ln 2 = 0.693 for NSP/SOP/DISC" if set(heads) & {"nsp", "sop", "disc"} else ""))
    log(f"training: {cfg.steps} steps of {cfg.batch_size} x {cfg.seq_len} tokens, peak lr {cfg.lr:g} after "
        f"{cfg.warmup_steps} warm-up steps, dropout {model_config.hidden_dropout_prob:g}, seed {cfg.seed} "
        f"(every setting: python -m minispanbert.train --help; all of them are saved with each checkpoint)")
    log(f"backend: {cfg.backend} on {device_description(xp)}, dtype {cfg.dtype}"
        + (f", {cfg.threads} threads (the batch split over them)" if cfg.threads > 1 else ""))
    if world.size > 1:
        log(f"data parallel: {world.size} ranks over {world.transport}, {cfg.batch_size // world.size} of the "
            f"{cfg.batch_size} rows of each step per rank; rank 0 writes")
    log(f"output: {cfg.out_dir if run_dir is None else run_dir.final}" + (
        " (replaced by this run at its first checkpoint; until then the old run is untouched)"
        if run_dir is not None and run_dir.staged else ""))
    if resumed is not None:
        log(f"resuming from {resumed.directory} at step {start_step}")
        if resumed.config["train"]["steps"] != cfg.steps:
            log(f"--steps changed from {resumed.config['train']['steps']} to {cfg.steps}: the learning-rate "
                f"schedule is recomputed for {cfg.steps} steps")

    if world.is_main:
        truncate_metrics(run_dir.path / METRICS_FILE, start_step)
    saved_cfg = {**dataclasses.asdict(cfg), "out": str(run_dir.final if world.is_main else cfg.out_dir)}
    saved_cfg.pop("distributed")  # a checkpoint continues on any number of ranks
    run_config = {"train": saved_cfg, "model": model_config.to_dict()}
    tokenizer_json = data.tokenizer.to_str()
    vocab_sha256 = vocab_fingerprint(data.tokenizer)

    from tqdm.auto import tqdm

    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="pretraining",
               dynamic_ncols=True, disable=None)
    say = bar.write if not bar.disable else log
    last_eval, history = {}, []
    pending = []  # (step, lr, output, grad_norm) of the steps not yet read back from the device
    recent = []  # train records since the last progress line
    clock = {"since": time.perf_counter()}  # when the steps not yet read back began

    def next_batch(step):
        indices = loop.batch_indices(step, len(data.train_examples), cfg)
        return make_batch([data.train_examples[i] for i in indices], loop.mask_rng(step, cfg))

    def log_step(done, lr, out, grad_norm):
        """Keep the step's device values; read them all back when a line, an evaluation or a save is due."""
        bar.update(1)
        pending.append((done, lr, out, grad_norm))
        evaluate_now = bool(eval_batches) and (done % cfg.eval_every == 0 or done == cfg.steps)
        save_now = done % cfg.save_every == 0 or done == cfg.steps
        print_now = done % cfg.print_interval == 0 or done == cfg.steps
        if not (evaluate_now or save_now or print_now or done % cfg.log_every == 0):
            return
        # Read back before evaluating or saving: a non-finite step must stop the run before its weights are written.
        records = read_train_records(pending, xp=xp, since=clock["since"], tokens_per_step=cfg.batch_size * cfg.seq_len,
                                     heads=heads, ratios=ratios, world=world, weights=weights)
        pending.clear()
        for record in records:
            if not (math.isfinite(record["loss"]) and math.isfinite(record["grad_norm"])):
                bar.close()
                step_on_disk = latest_step(run_dir.path) if run_dir is not None and not run_dir.staged else None
                raise non_finite_error(record, None if step_on_disk is None else (run_dir.path, step_on_disk))
            history.append(record["loss"])
            recent.append(record)
            if world.is_main:
                append_metrics(run_dir.path / METRICS_FILE, record)
        bar.set_postfix(loss=f"{records[-1]['loss']:.3f}", tok_s=f"{records[-1]['tokens_per_s']:.0f}")
        if print_now and recent:
            parts = " + ".join(f"{'' if weights[h] == 1 else f'{weights[h]:g} x '}{h.upper()} "
                               f"{np.mean([r[h + '_loss'] for r in recent]):.3f}" for h in heads)
            say(f"step {done}/{cfg.steps}: train loss {np.mean([r['loss'] for r in recent]):.3f} = {parts} "
                f"(mean of the last {len(recent)} steps) | lr {lr:.2e} | {records[-1]['tokens_per_s']:,.0f} tokens/s")
            recent.clear()
        clock["since"] = time.perf_counter()

    def evaluate_held_out(model, batches):
        results = dict(split="valid", baseline_acc=baseline_acc,
                       **evaluate(model, batches, heads, ratios, world, cfg.threads))
        clock["since"] = time.perf_counter()  # evaluating is not training throughput
        return results

    def log_evaluation(done, results):
        last_eval.clear()
        last_eval.update(split="valid", step=done, **{k: v for k, v in results.items() if k != "split"})
        if world.is_main:
            append_metrics(run_dir.path / METRICS_FILE, last_eval)
            plot_metrics(run_dir.path / METRICS_FILE, run_dir.path / PLOT_FILE, heads, title, ratios)
        say(f"step {done}: valid " + " | ".join(f"{h.upper()} loss {last_eval[h + '_loss']:.3f} acc "
                                                f"{last_eval[h + '_acc']:.3f}" for h in heads)
            + f" | most-frequent-token acc {baseline_acc:.3f}")

    def save(done, opt_state):
        if not world.same_parameters(model.params, xp=xp):  # every rank, at every save: cheap, and collective
            raise ValueError(f"the ranks' parameters differ at step {done}: a rank computed a different update "
                             "(different data, flags or library versions on some rank)")
        if world.is_main:
            with interrupts_deferred():  # a Ctrl-C waits until the checkpoint is saved and in place
                save_checkpoint(run_dir.path, params=model.params, optimizer_state=opt_state, step=done,
                                config=run_config, extra={"last_eval": dict(last_eval), "data_sha256": fingerprint,
                                                          VOCAB_SHA256: vocab_sha256},
                                files={TOKENIZER_FILE: tokenizer_json}, keep=cfg.keep_checkpoints)
                run_dir.committed()
        clock["since"] = time.perf_counter()  # saving is not training throughput

    hooks = loop.Hooks(forward_backward=sharded_forward_backward(cfg, world), log=log_step,
                       evaluate=evaluate_held_out, log_evaluation=log_evaluation, save=save)
    loop.train(model, next_batch, cfg, hooks=hooks, valid_batches=eval_batches, start_step=start_step,
               opt_state=opt_state, betas=objective.ADAM_BETAS, eps=objective.ADAM_EPS)
    bar.close()
    if not world.is_main:
        return {"last_eval": last_eval, "train_losses": history, "out": str(cfg.out_dir)}
    if not eval_batches:
        plot_metrics(run_dir.path / METRICS_FILE, run_dir.path / PLOT_FILE, heads, title, ratios)
    log(f"wrote checkpoints/{step_dir_name(cfg.steps)}, {METRICS_FILE} and {PLOT_FILE} to {run_dir.path}")
    if hasattr(objective, "after_run"):  # an objective's own exports (ELECTRA: Hugging Face folders)
        objective.after_run(run_dir.path, model, data.tokenizer, cfg, log)
    return {"last_eval": last_eval, "train_losses": history, "out": str(run_dir.path)}


def parse_args(argv=None) -> RunConfig:
    defaults = RunConfig()
    p = Parser("python -m minispanbert.train", loop.__doc__)
    p.add_argument("--objective", choices=list(OBJECTIVES), default=defaults.objective,
                   help="spanbert = span masking + SBO; bert = MLM + NSP; roberta = MLM, full sentences, byte-level "
                        "BPE; albert = factorised + shared, n-gram MLM + SOP; electra = a small generator MLM + a "
                        "discriminator of replaced tokens (--generator-size, --disc-weight)")
    p.add_argument("--backend", choices=BACKENDS, default=defaults.backend, help="array backend")
    p.add_argument("--preset", choices=list(PRESETS), default=defaults.preset, help="model size")
    p.add_argument("--masking", choices=SCHEMES, default=None,
                   help="span = SpanBERT; word = whole words; token = BERT subword tokens; ngram = ALBERT "
                        "(default: the objective's: span, token, token, ngram, token)")
    p.add_argument("--sbo-weight", type=float, default=defaults.sbo_weight, help="0 switches the SBO off")
    p.add_argument("--generator-size", type=float, default=defaults.generator_size,
                   help="electra: the generator's hidden size as a fraction of the discriminator's (paper: 1/4 to 1/2)")
    p.add_argument("--disc-weight", type=float, default=defaults.disc_weight,
                   help="electra: lambda in L_MLM + lambda L_Disc")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps in all")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="blocks per step")
    p.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per block, [CLS] and [SEP] included")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default: 10%% of --steps)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW decay, not on biases and LayerNorm")
    p.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm, help="clip the global gradient norm")
    p.add_argument("--dropout", type=float, default=None, help="default: the preset's 0.1 (0 with --overfit-batch)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="every random stream derives from it")
    p.add_argument("--dtype", choices=["float32", "float64"], default=defaults.dtype, help="parameter dtype")
    p.add_argument("--data", default=None, help="a WikiText .raw/.tokens file, a .txt file or a folder of .txt files "
                                                "(default: WikiText-2 in --data-dir, else pydoc topics)")
    p.add_argument("--data-dir", default=defaults.data_dir, help="where downloaded data sets live")
    p.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="reuse this tokenizer.json (or a run folder's) instead of training one, so that runs meant "
                        "to be compared share one vocabulary")
    p.add_argument("--out", default=None, help=f"run folder (default: {DEFAULT_OUT}; {DEFAULT_OVERFIT_OUT} with "
                                               "--overfit-batch; the resumed run's folder with --resume)")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue this run (its folder, or one of its checkpoints/step-* folders)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds, once this run has saved its first checkpoint")
    p.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints, metavar="K",
                   help="keep the newest K checkpoints/step-* folders")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every, help="evaluate on held-out text every N steps")
    p.add_argument("--eval-batches", type=int, default=defaults.eval_batches, help="held-out batches per evaluation")
    p.add_argument("--save-every", type=int, default=defaults.save_every, help="save a checkpoint every N steps")
    p.add_argument("--log-every", type=int, default=defaults.log_every, metavar="N",
                   help="read the losses back from the device every N steps (and before every evaluation and "
                        "save); N > 1 lets a GPU run ahead of the host. metrics.jsonl still has every step")
    p.add_argument("--print-every", type=int, default=None, metavar="N",
                   help="print the mean training loss every N steps (default: every 10%% of --steps)")
    p.add_argument("--valid-fraction", type=float, default=defaults.valid_fraction,
                   help="documents held out when the corpus has no validation split (0: none)")
    p.add_argument("--overfit-batch", action="store_true", help="train on one fixed batch (a sanity check)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="NumPy: compute on N threads, each batch split into N shards trained side by side "
                        "(default: the cores, or OPENBLAS_NUM_THREADS); with dropout on, the masks depend on N")
    p.add_argument("--distributed", choices=TRANSPORTS, default=None,
                   help="data parallel over the processes an MPI launcher started (mpiexec -n N python -m "
                        "minispanbert.train ...): mpi = CPU (mpi4py), nccl = one GPU per rank with --backend cupy, "
                        "none = a single process (default: mpi/nccl under a launcher with N > 1, else none)")
    args = p.parse_args(argv)
    return RunConfig(**{k: v for k, v in vars(args).items()})


def main(argv=None) -> None:
    cfg = parse_args(argv)
    keep_freed_memory()
    run_or_exit(lambda: run(cfg))


if __name__ == "__main__":
    main()
