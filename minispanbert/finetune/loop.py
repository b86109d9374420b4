"""Fine-tune a pretrained encoder on a downstream task, one loop for every task:

    python -m minispanbert.finetune sst2   --checkpoint runs/wt2-tiny --train data/sst2/train.tsv --dev data/sst2/dev.tsv
    python -m minispanbert.finetune wnut17 --checkpoint runs/wt2-tiny --train data/wnut17/wnut17train.conll \
        --dev data/wnut17/emerging.dev.conll --test data/wnut17/emerging.test.annotated
    python -m minispanbert.finetune squad  --checkpoint runs/wt2-tiny --train train-v1.1.json --dev dev-v1.1.json
    python -m minispanbert.finetune squad  --checkpoint runs/wt2-tiny --dev dev-v1.1.json --split-dev-by-article 0.2
    python -m minispanbert.finetune TASK ... --random-init     # the same from a random encoder (the baseline)
    python -m minispanbert.finetune TASK ... --resume runs/x   # continue an interrupted run in its folder

``--checkpoint`` is a pretraining run folder or a Hugging Face BERT folder
(`pretrained.load_pretrained_encoder`). The task (`tasks.recipes`) supplies the data, the head
and the official metric; the loop is BERT's recipe for all of them: AdamW with weight decay except
on biases and LayerNorm, linear warmup over ``--warmup-fraction`` of the steps then linear decay to
0, gradient clipping at ``--max-grad-norm``, dropout as in the model config (``--dropout`` overrides),
a fresh batch order every epoch. The held-out files are scored every ``--eval-every`` steps and at
the end; ``--test`` is scored once, at the end.

Written to ``--out`` (a new or empty folder, or any folder with ``--overwrite``, replaced only once
the run has saved; see `rundir`): checkpoints/step-N/ (weights, AdamW moments, run config and
tokenizer, every ``--save-every`` steps and at the end, atomically; ``--resume`` continues from
the latest bit for bit), the predictions (predictions.json + gold.json for SQuAD,
predictions.<split>.tsv / .conll), metrics.jsonl and finetune.png. Every random stream (head init, batch order, dropout) derives from
``--seed``, so a pretrained and a --random-init run differ only in the encoder. Bad input ends with
one line ``error: ...``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minispanbert import optim
from minispanbert.backend import BACKENDS, check_dtype, get_backend, synchronize
from minispanbert.config import ModelConfig
from minispanbert.engine import kernels
from minispanbert.engine.allocator import keep_freed_memory
from minispanbert.engine.cli import Parser, run_or_exit
from minispanbert.engine.parallel.shards import task_forward_backward
from minispanbert.engine.parallel.threads import cpu_threads, cpu_threads_set
from minispanbert.engine.runs.atomic import describe_os_error, interrupts_deferred
from minispanbert.engine.runs.checkpoint import (
    VOCAB_SHA256,
    check_compatible,
    check_vocab,
    data_fingerprint,
    latest_step,
    load_checkpoint,
    save_checkpoint,
    vocab_fingerprint,
)
from minispanbert.engine.runs.rundir import open_run_dir
from minispanbert.engine.runs.runlog import append_metrics, new_figure, read_metrics, save_figure, truncate_metrics
from minispanbert.engine.trainer import METRICS_FILE, device_description
from minispanbert.finetune.pretrained_weights import load_encoder_weights
from minispanbert.finetune.recipes import TASKS, take
from minispanbert.interop.pretrained import TOKENIZER_FILE, load_pretrained_encoder
from minispanbert.interop.tokenizer import read_tokenizer_json
from minispanbert.keyed_random import dropout_random
from minispanbert.optim import adamw_init, linear_warmup_decay, no_decay_mask

PLOT_FILE = "finetune.png"
# Settings a --resume must share with the saved run (the rest, e.g. --steps or --eval-every, may change).
RESUME_MUST_MATCH = ("task", "train", "dev", "split_dev_by_article", "random_init", "dtype",
                     "batch_size", "lr", "warmup_fraction", "weight_decay", "max_grad_norm", "dropout",
                     "max_seq_len", "doc_stride", "max_query_len", "seed", "max_train_examples")


@dataclass(frozen=True)
class FinetuneConfig:
    task: str
    checkpoint: str | None = None      # required unless --resume
    dev: str | None = None
    train: str | None = None
    test: str | None = None
    split_dev_by_article: float | None = None  # squad: held-out fraction of the dev file's articles
    random_init: bool = False
    resume: str | None = None          # a fine-tuning run folder to continue
    overwrite: bool = False
    backend: str = "numpy"
    dtype: str = "float32"
    out: str | None = None             # None: the --resume run's folder, else runs/<task>
    epochs: int = 2
    steps: int | None = None           # overrides --epochs
    batch_size: int = 32
    lr: float | None = None            # None: default_lr(the model's hidden size)
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dropout: float | None = None       # None: the checkpoint's config (0.1)
    max_seq_len: int = 128
    seed: int = 0
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    eval_every: int | None = None
    save_every: int | None = None
    threads: int | None = None         # NumPy: CPU threads, each batch split over them; None: cpu_threads()
    # squad only
    doc_stride: int = 64
    max_query_len: int = 32
    n_best: int = 20
    max_answer_len: int = 30

    def validate(self) -> None:
        """Every problem with the flags, one line each, before any work is done."""
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: choose one of {', '.join(TASKS)}")
        if self.checkpoint is None and self.resume is None:
            raise ValueError("--checkpoint is required: pass a pretraining run folder or a Hugging Face BERT folder")
        check_dtype(self.dtype)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.task == "squad":
            if self.dev is None:
                raise ValueError("--dev is required: pass the SQuAD v1.1 evaluation file (dev-v1.1.json)")
            if self.split_dev_by_article is None and self.train is None:
                raise ValueError("--train is required: pass a SQuAD v1.1 training file, or use --split-dev-by-article "
                                 "F to train and evaluate on disjoint articles of the --dev file")
            if self.split_dev_by_article is not None:
                if self.train is not None:
                    raise ValueError("--train and --split-dev-by-article exclude each other: the split trains on "
                                     "the --dev file's other articles")
                if not 0.0 < self.split_dev_by_article < 1.0:
                    raise ValueError(f"--split-dev-by-article is the held-out fraction of articles, in (0, 1), "
                                     f"got {self.split_dev_by_article}")
            if self.test is not None:
                raise ValueError("--test is for sst2 and wnut17: SQuAD v1.1 has no public test set")
        elif self.split_dev_by_article is not None:
            raise ValueError("--split-dev-by-article is for squad only")
        for name in ("epochs", "batch_size", "max_seq_len", "doc_stride", "max_query_len", "n_best", "max_answer_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("steps", "max_train_examples", "max_eval_examples", "eval_every", "save_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not ((self.lr is None or self.lr > 0) and self.max_grad_norm > 0 and self.weight_decay >= 0):
            raise ValueError("--lr and --max-grad-norm must be positive and --weight-decay non-negative")
        if not 0.0 <= self.warmup_fraction <= 1.0:
            raise ValueError(f"--warmup-fraction must lie in [0, 1], got {self.warmup_fraction}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must lie in [0, 1), got {self.dropout}")
        for name in ("lr", "max_grad_norm", "weight_decay", "warmup_fraction", "split_dev_by_article", "dropout"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"--{name.replace('_', '-')} {value} is not a number: give a finite value")
        if self.seed < 0:
            raise ValueError(f"--seed {self.seed} is negative: give an integer >= 0")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.threads not in (None, 1) and self.backend != "numpy":
            raise ValueError("--threads applies to --backend numpy (a GPU is parallel already): drop --threads")
        if self.out_dir is not None and self.checkpoint is not None \
                and Path(self.out_dir).resolve() == Path(self.checkpoint).resolve():
            raise ValueError("--out is the --checkpoint folder: saving would overwrite the pretrained model; "
                             "choose another --out")

    @property
    def out_dir(self) -> str | None:
        """The --out folder, defaulted; None means "the --resume run's own folder"."""
        if self.out is not None or self.resume is not None:
            return self.out
        return f"runs/{self.task}"


def default_lr(model_config: ModelConfig) -> float:
    """The peak learning rate when --lr is not given, by model size: 3e-4 for the tiny presets
    (hidden < 384), 1e-4 for MiniLM-sized models (hidden < 768), 5e-5 for BERT-base and larger
    (BERT §4.1 and App. A.3 pick among 5e-5, 3e-5, 2e-5)."""
    if model_config.hidden_size < 384:
        return 3e-4
    return 1e-4 if model_config.hidden_size < 768 else 5e-5


def model_setup(cfg: FinetuneConfig, xp):
    """-> (starting params, model config, tokenizer, description, unused pretrained tensor names).

    The head is drawn from ``cfg.seed`` after the encoder, so a --random-init run has the same head
    as the pretrained one. --random-init still reads the checkpoint: it supplies config and tokenizer."""
    task = TASKS[cfg.task]
    pretrained = load_pretrained_encoder(cfg.checkpoint, xp=xp, dtype=cfg.dtype)
    model_config = pretrained.config
    if cfg.dropout is not None:
        model_config = model_config.replace(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                                            classifier_dropout_prob=cfg.dropout)
    if cfg.max_seq_len > model_config.max_position_embeddings:
        raise ValueError(f"--max-seq-len {cfg.max_seq_len} exceeds the model's max_position_embeddings "
                         f"{model_config.max_position_embeddings}: use --max-seq-len "
                         f"{model_config.max_position_embeddings} or less")
    params = task.init_params(model_config, cfg.seed, xp=xp, dtype=cfg.dtype)
    if cfg.random_init:
        return params, model_config, pretrained.tokenizer, \
            f"random encoder (--random-init; config and tokenizer from {cfg.checkpoint})", sorted(pretrained.params)
    params, unused = load_encoder_weights(params, pretrained.params, xp=xp)
    return params, model_config, pretrained.tokenizer, f"pretrained encoder from {pretrained.description}", unused


def batch_indices(step: int, n_rows: int, cfg: FinetuneConfig) -> np.ndarray:
    """Rows for ``step``: a fresh permutation each epoch, drawn from (seed, epoch); the last batch
    of an epoch may be smaller (every row is seen once per epoch)."""
    steps_per_epoch = math.ceil(n_rows / cfg.batch_size)
    epoch, index = divmod(step, steps_per_epoch)
    order = np.random.default_rng([cfg.seed, epoch, 0]).permutation(n_rows)
    return order[index * cfg.batch_size:(index + 1) * cfg.batch_size]


def progress_line(step: int, total: int, recent_losses: list, lr: float, seconds_per_step: float) -> str:
    """One plain line for a log file: the mean training loss since the last line, the speed and the
    time the remaining steps will take at that speed (evaluations not included)."""
    left = (total - step) * seconds_per_step
    when = f"about {left / 60:.0f} min left" if left >= 90 else f"about {left:.0f} s left"
    return (f"step {step}/{total}: train loss {np.mean(recent_losses):.3f} (mean of the last {len(recent_losses)} "
            f"steps) | lr {lr:.2e} | {seconds_per_step:.2f} s/step, {when if step < total else 'done'}")


def headline(scores: dict) -> dict:
    """The flat numbers of a score dict, rounded, for one log line."""
    flat = {k: round(v, 2) for k, v in scores.items() if isinstance(v, float)}
    if "surface_form" in scores:
        flat["surface_f1"] = round(scores["surface_form"]["f1"], 2)
    return flat


def plot_metrics(metrics_path: Path, plot_path: Path, task) -> None:
    """Training loss and the held-out headline metric against the step -> PNG."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r["split"] == "train"]
    fig, axes = new_figure(2, (11, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.7, label=f"train {task.loss_title}")
    axes[0].set(xlabel="step", ylabel="loss (nats)", title=f"{task.title}: fine-tuning loss")
    axes[0].legend()
    for label in dict.fromkeys(r["split"] for r in records if r["split"] != "train"):
        scores = [r for r in records if r["split"] == label]
        axes[1].plot([r["step"] for r in scores], [r[task.metric] for r in scores], "o-", label=label)
    axes[1].set(xlabel="step", ylabel=task.metric_title, title=f"{task.title}: held-out {task.metric}")
    axes[1].legend()
    save_figure(fig, plot_path)


def resume_state(cfg: FinetuneConfig, xp):
    """The run ``--resume`` names, checked against ``cfg`` -> (checkpoint, model config, tokenizer)."""
    saved = load_checkpoint(cfg.resume, xp=xp)
    if "finetune" not in saved.config or saved.optimizer_state is None:
        raise ValueError(f"{saved.directory} holds no resumable fine-tuning run (no optimizer state): --resume takes "
                         "the --out folder of an interrupted python -m minispanbert.finetune run")
    requested = dataclasses.asdict(cfg)
    if cfg.lr is None:  # no --lr: the run's own
        requested["lr"] = saved.config["finetune"]["lr"]
    check_compatible(saved.config["finetune"], requested, RESUME_MUST_MATCH)
    try:
        tokenizer = read_tokenizer_json(saved.directory / TOKENIZER_FILE)  # any special ids (a run from a HF folder)
    except ValueError:
        raise ValueError(f"the checkpoint in {saved.directory} has no readable {TOKENIZER_FILE}: resume from another "
                         "checkpoint folder (checkpoints/step-*)") from None
    check_vocab(saved.extra, tokenizer, saved.directory / TOKENIZER_FILE)
    return saved, ModelConfig.from_dict(saved.config["model"]), tokenizer


def run(cfg: FinetuneConfig, log=print) -> dict:
    """Fine-tune as ``cfg`` says. Returns {"scores": {split: last scores}, "train_losses": [...], "steps": n}.
    A KeyboardInterrupt leaves as KeyboardInterrupt(message), the message saying what is on disk."""
    cfg.validate()
    cfg = dataclasses.replace(cfg, threads=(cfg.threads or cpu_threads()) if cfg.backend == "numpy" else 1)
    run_dir = open_run_dir(cfg.out_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    try:
        with kernels.installed():
            if cfg.backend != "numpy":
                return _run(cfg, run_dir, log)
            with cpu_threads_set(cfg.threads, blas_threads=1):  # the batch split over them (engine/parallel/shards.py)
                return _run(cfg, run_dir, log)
    except KeyboardInterrupt:
        step = None if run_dir.staged else latest_step(run_dir.path)  # the disk, wherever the signal landed
        if run_dir.staged:
            where = f"the run that was in {run_dir.final} is untouched"
        elif step is not None:
            where = f"{run_dir.path} holds a complete checkpoint at step {step} (continue with --resume {run_dir.path})"
        else:
            where = (f"nothing was saved in {run_dir.path} (start again with --overwrite; --save-every N saves "
                     "during training)")
        run_dir.discard()
        raise KeyboardInterrupt(f"interrupted: {where}") from None
    except OSError as exc:  # a full disk or a folder gone read-only while appending metrics or saving
        run_dir.discard()
        raise ValueError(describe_os_error(exc, f"cannot write {exc.filename or run_dir.path}")) from None
    except BaseException:
        run_dir.discard()
        raise
    finally:
        run_dir.release()


def _run(cfg: FinetuneConfig, run_dir, log) -> dict:
    task = TASKS[cfg.task]
    xp = get_backend(cfg.backend)
    resumed = resume_state(cfg, xp) if cfg.resume else None
    if resumed is None:
        params, model_config, tokenizer, init, unused = model_setup(cfg, xp)
        opt_state, start_step = adamw_init(params, xp=xp), 0
    else:
        saved, model_config, tokenizer = resumed
        params, opt_state, start_step = saved.params, saved.optimizer_state, saved.step
        init, unused = f"resumed from {saved.directory} at step {start_step} ({saved.extra['encoder_init']})", []
    lr_source = "--lr"
    if cfg.lr is None:
        lr = resumed[0].config["finetune"]["lr"] if resumed else default_lr(model_config)
        lr_source = "the run's" if resumed else f"the default for hidden size {model_config.hidden_size}; --lr sets it"
        cfg = dataclasses.replace(cfg, lr=lr)

    data = task.load(cfg, tokenizer)
    fingerprint = data_fingerprint(data.train_arrays[name] for name in sorted(data.train_arrays))
    if resumed is not None:
        saved = resumed[0]
        if saved.extra.get("data_sha256", fingerprint) != fingerprint:
            raise ValueError(f"the training data differs from what the run in {saved.directory} was trained on "
                             f"(--train {cfg.train or cfg.dev}): resume with the run's file, or start a fresh run")
        if saved.config["finetune"].get("threads") not in (None, cfg.threads):
            log(f"note: --threads {cfg.threads}, the run used {saved.config['finetune']['threads']}: dropout masks "
                "are drawn per thread, so the run goes on along another path than an uninterrupted one would")
    n_train = len(data.train_arrays["input_ids"])
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.steps or cfg.epochs * steps_per_epoch
    if total_steps <= start_step:
        raise ValueError(f"the run in {run_dir.path} is already at step {start_step}: pass a larger --steps to extend it")
    warmup_steps = round(cfg.warmup_fraction * total_steps)
    for note in data.notes:
        log(note)
    log(f"init: {init}; fresh {task.name} head; {len(unused)} checkpoint tensors unused")
    log(f"model: {model_config.model_type}, {model_config.num_hidden_layers} layers, hidden {model_config.hidden_size}, "
        f"{sum(int(w.size) for w in params.values()):,} parameters with the head, dtype {cfg.dtype}, dropout "
        f"{model_config.hidden_dropout_prob:g} (every setting: python -m minispanbert.finetune --help; all of them are "
        f"saved with each checkpoint)")
    log(f"backend: {cfg.backend} on {device_description(xp)}, dtype {cfg.dtype}"
        + (f", {cfg.threads} threads (each batch split over them)" if cfg.threads > 1 else ""))
    log(f"steps: {total_steps} ({total_steps / steps_per_epoch:.2f} epochs of {steps_per_epoch} batches of "
        f"{cfg.batch_size}), warmup {warmup_steps}, peak lr {cfg.lr:g} ({lr_source})")

    truncate_metrics(run_dir.path / METRICS_FILE, start_step)  # a fresh run starts an empty log
    decay_mask = no_decay_mask(params)
    run_config = {"model": model_config.to_dict(), "finetune": dataclasses.asdict(cfg)}
    encoder_init = resumed[0].extra["encoder_init"] if resumed else ("random" if cfg.random_init else init)
    eval_seconds = 0.0
    last_scores: dict = {}

    def evaluate_and_report(step: int, evals) -> None:
        nonlocal eval_seconds
        t_eval = time.perf_counter()
        for eval_set in evals:
            scores = task.evaluate(params, model_config, eval_set, cfg, xp=xp, out_dir=run_dir.path)
            last_scores[eval_set.label] = scores
            append_metrics(run_dir.path / METRICS_FILE, dict(split=eval_set.label, step=step, examples=eval_set.size, **scores))
            bar.write(f"step {step}/{total_steps} {eval_set.label}: {json.dumps(headline(scores))}")
        plot_metrics(run_dir.path / METRICS_FILE, run_dir.path / PLOT_FILE, task)
        eval_seconds += time.perf_counter() - t_eval

    def save(step: int) -> None:
        with interrupts_deferred():  # a Ctrl-C waits until the checkpoint is saved and in place
            save_checkpoint(run_dir.path, params=params, optimizer_state=opt_state, step=step, config=run_config,
                            extra={**last_scores, "encoder_init": encoder_init, "data_sha256": fingerprint,
                                   VOCAB_SHA256: vocab_fingerprint(tokenizer)},
                            files={TOKENIZER_FILE: tokenizer.to_str()})
            run_dir.committed()  # an --overwrite run replaces the old folder at its first save

    from tqdm.auto import tqdm

    history = []
    bar = tqdm(range(start_step, total_steps), desc=f"fine-tuning {task.name}", dynamic_ncols=True, disable=None)
    say = bar.write if not bar.disable else log
    print_every = max(1, (total_steps - start_step) // 10)
    t_start = time.perf_counter()
    for step in bar:
        batch = take(data.train_arrays, batch_indices(step, n_train, cfg), trim=task.trim)
        lr = linear_warmup_decay(step, peak_lr=cfg.lr, warmup_steps=warmup_steps, total_steps=total_steps)
        dropout_rng = dropout_random(cfg.seed, step, xp=xp)
        if cfg.threads > 1:  # shards on threads: forward and backward together (minispanbert/thread_parallel.py)
            loss, grads = task_forward_backward(task, params, batch, model_config, xp=xp, shards=cfg.threads,
                                                dropout_rng=dropout_rng)
        else:
            out, cache = task.forward(params, batch, model_config, xp=xp, train=True, rng=dropout_rng)
            loss, grads = out.loss, None
        loss = float(loss)  # one sync per step: a non-finite loss must not reach the weights
        if not math.isfinite(loss):
            bar.close()
            raise ValueError(f"the loss became {loss} at step {step}; the weights of this step were not saved: "
                             "lower --lr or use --dtype float64")
        if grads is None:
            grads = task.backward(cache, xp=xp)
        grad_norm = optim.clip_and_step(params, grads, opt_state, lr=lr, max_grad_norm=cfg.max_grad_norm,
                                        weight_decay=cfg.weight_decay, decay_mask=decay_mask, xp=xp)
        history.append(loss)
        append_metrics(run_dir.path / METRICS_FILE, dict(split="train", step=step + 1, loss=loss, lr=lr, grad_norm=float(grad_norm)))
        bar.set_postfix(loss=f"{loss:.3f}")
        done = step + 1
        if (done - start_step) % print_every == 0 or done == total_steps:
            say(progress_line(done, total_steps, history[-print_every:], lr,
                              (time.perf_counter() - t_start - eval_seconds) / (done - start_step)))
        if cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps:
            evaluate_and_report(done, [e for e in data.evals if e.label != "test"])
        if cfg.save_every and done % cfg.save_every == 0 and done < total_steps:
            save(done)
    synchronize(xp)
    train_seconds = time.perf_counter() - t_start - eval_seconds
    evaluate_and_report(total_steps, data.evals)
    bar.close()
    save(total_steps)
    trained = total_steps - start_step
    log(f"trained {trained} steps in {train_seconds:.0f} s ({train_seconds / trained:.3f} s/step), evaluated in "
        f"{eval_seconds:.0f} s; wrote checkpoints/ (weights, optimizer, tokenizer), predictions, {METRICS_FILE} and "
        f"{PLOT_FILE} to {run_dir.path}")
    for label, scores in last_scores.items():
        log(f"{label}: {json.dumps(headline(scores))}")
        for entity_type, s in scores.get("per_type", {}).items():
            log(f"  {entity_type:>14}: precision {s['precision']:6.2f}  recall {s['recall']:6.2f}  F1 {s['f1']:6.2f}  "
                f"({s['gold']} gold, {s['predicted']} predicted)")
        if "confusion" in scores:
            log(f"  confusion (rows gold 0/1, columns predicted 0/1): {scores['confusion']}")
    return {"scores": last_scores, "train_losses": history, "steps": total_steps, "train_seconds": train_seconds}


def build_parser(prog="python -m minispanbert.finetune", tasks=tuple(TASKS)) -> Parser:
    d = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    p = Parser(prog, __doc__)
    if len(tasks) > 1:
        p.add_argument("task", choices=tasks, help="sst2, wnut17 or squad")
    p.add_argument("--checkpoint", default=None,
                   help="a pretraining run folder (its latest checkpoint), one of its checkpoints/step-* folders, "
                        "or a Hugging Face BERT folder (required unless --resume)")
    p.add_argument("--train", default=None, help="training file (SST-2 train.tsv, WNUT-17 wnut17train.conll, SQuAD json)")
    p.add_argument("--dev", default=None, help="evaluation file, scored every --eval-every steps and at the end")
    p.add_argument("--test", default=None, help="sst2/wnut17: a labelled test file, scored once at the end")
    p.add_argument("--split-dev-by-article", type=float, default=None, metavar="F",
                   help="squad: hold out fraction F of the --dev file's articles for evaluation, train on the rest")
    p.add_argument("--random-init", action="store_true",
                   help="ignore the pretrained weights (keep config and tokenizer): the no-pretraining baseline")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue this fine-tuning run folder from its latest checkpoint (same settings)")
    p.add_argument("--backend", choices=BACKENDS, default=d["backend"])
    p.add_argument("--dtype", choices=["float32", "float64"], default=d["dtype"])
    p.add_argument("--out", default=None,
                   help="output folder, new or empty unless --overwrite (default: runs/TASK, or the --resume run)")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds, once this run has saved")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps (default: --epochs passes over the training set)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: 3e-4 below hidden size 384, 1e-4 below 768, else 5e-5)")
    p.add_argument("--warmup-fraction", type=float, default=d["warmup_fraction"])
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="not on biases and LayerNorm")
    p.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"])
    p.add_argument("--dropout", type=float, default=None, help="default: the checkpoint's config (0.1)")
    p.add_argument("--max-seq-len", type=int, default=d["max_seq_len"], help="in word pieces, [CLS] and [SEP] included")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="NumPy: compute on N threads, each batch split into N shards trained side by side "
                        "(default: the cores, or OPENBLAS_NUM_THREADS); with dropout on, the masks depend on N")
    p.add_argument("--max-train-examples", type=int, default=None,
                   help="use only the first N training examples (default: all)")
    p.add_argument("--max-eval-examples", type=int, default=None, help="evaluate only the first N examples (default: all)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="also evaluate --dev every N steps (default: only at the end)")
    p.add_argument("--save-every", type=int, default=None,
                   help="also save a resumable checkpoint every N steps (default: only at the end)")
    p.add_argument("--doc-stride", type=int, default=d["doc_stride"], help="squad: window stride in tokens")
    p.add_argument("--max-query-len", type=int, default=d["max_query_len"], help="squad: question tokens kept")
    p.add_argument("--n-best", type=int, default=d["n_best"], help="squad: start/end candidates when decoding")
    p.add_argument("--max-answer-len", type=int, default=d["max_answer_len"], help="squad: in tokens")
    return p


def main(argv=None, *, task: str | None = None) -> dict:
    """CLI entry; ``task`` fixes the task (the ``finetune_qa`` alias) instead of reading it from argv."""
    parser = build_parser(**({} if task is None else dict(prog="python -m minispanbert.finetune_qa", tasks=(task,))))
    args = vars(parser.parse_args(argv))
    cfg = FinetuneConfig(**({"task": task} if task else {}), **args)
    keep_freed_memory()
    return run_or_exit(lambda: run(cfg))


if __name__ == "__main__":
    main()
