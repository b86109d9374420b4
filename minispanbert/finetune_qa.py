"""Fine-tune a pretrained minispanbert on SQuAD v1.1 extractive QA (spec §6; authors' ``run_squad.py``).

    python -m minispanbert.finetune_qa --checkpoint runs/wt2-tiny --train train-v1.1.json --dev dev-v1.1.json
    python -m minispanbert.finetune_qa --checkpoint runs/wt2-tiny --dev dev-v1.1.json --split-dev-by-article 0.2
    python -m minispanbert.finetune_qa ... --random-init        # the same, from a random encoder (baseline)

The recipe: windows ``[CLS] question [SEP] passage [SEP]`` (`squad.make_features`), the encoder plus
a Linear(H, 2) start/end head (`model.qa_head`), loss (CE_start + CE_end) / 2, AdamW with weight
decay except on biases and LayerNorm, 10% linear warmup then linear decay to 0, gradient clipping at
1.0, dropout as in the model config. After training (and every ``--eval-every`` steps) the held-out
questions are decoded (n-best starts x ends, maximal context, <= ``--max-answer-len`` tokens), the
predictions written as ``predictions.json`` (official format) and scored with the official SQuAD
v1.1 exact match / F1.

``--split-dev-by-article F`` works offline from the dev file alone: F of its ARTICLES (never single
questions, whose paragraphs would leak) are held out for evaluation and the rest is used for
training. Every result is then labelled "dev split", because it is not the official dev score.

Written to ``--out`` (a fresh folder, or any folder with ``--overwrite``, replaced only once the
run has saved; see `rundir`): checkpoints/step-N/ (the fine-tuned weights, config and tokenizer,
`checkpoint.save_checkpoint`), predictions.json, gold.json (the evaluated questions in SQuAD v1.1
format, so ``evaluate_qa gold.json predictions.json`` rescores a dev split), metrics.jsonl,
finetune.png. Training uses only answers whose ``answer_start`` points at their text (the others
are counted); evaluation, like the official script, reads only the answer texts.
Every random stream (head init, batch order, dropout) derives from ``--seed``. Bad input ends with a
one-line ``error: ...``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import BACKENDS, check_dtype, get_backend, make_rng, synchronize, to_numpy
from .atomic import write_text_atomic
from .checkpoint import load_checkpoint, save_checkpoint
from .cli import Parser
from .config import ModelConfig
from .data import load_tokenizer
from .rundir import open_run_dir
from .model.qa_head import init_qa_params, qa_backward, qa_forward, qa_params_from_pretrained
from .optim import adamw_init, clip_and_step, linear_warmup_decay, no_decay_mask
from .squad import (
    answers_with_valid_offsets,
    decode_predictions,
    examples_to_squad,
    evaluate,
    features_to_arrays,
    make_features,
    read_squad,
    split_by_article,
    write_predictions,
)
from .runlog import append_metrics, new_figure, read_metrics, save_figure
from .train import METRICS_FILE, TOKENIZER_FILE, device_description

PREDICTIONS_FILE = "predictions.json"
GOLD_FILE = "gold.json"
PLOT_FILE = "finetune.png"


@dataclass(frozen=True)
class FinetuneConfig:
    checkpoint: str
    dev: str
    train: str | None = None
    split_dev_by_article: float | None = None  # held-out fraction of the dev file's articles
    random_init: bool = False
    backend: str = "numpy"
    dtype: str = "float32"
    out: str = "runs/qa"
    overwrite: bool = False
    epochs: int = 2
    steps: int | None = None           # overrides --epochs
    batch_size: int = 32
    lr: float = 3e-4                   # the paper's 2e-5 is for BERT-large; tiny models want more
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dropout: float | None = None       # None: the checkpoint's config (0.1)
    max_seq_len: int = 128
    doc_stride: int = 64
    max_query_len: int = 32
    n_best: int = 20
    max_answer_len: int = 30
    seed: int = 0
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    eval_every: int | None = None

    @property
    def eval_label(self) -> str:
        return "dev split" if self.split_dev_by_article is not None else "dev"

    def validate(self) -> None:
        """Every problem with the flags, one line each, before any work is done."""
        check_dtype(self.dtype)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.split_dev_by_article is None and self.train is None:
            raise ValueError("--train is required: pass a SQuAD v1.1 training file, or use --split-dev-by-article F "
                             "to train and evaluate on disjoint articles of the --dev file")
        if self.split_dev_by_article is not None:
            if self.train is not None:
                raise ValueError("--train and --split-dev-by-article exclude each other: the split trains on the "
                                 "--dev file's other articles")
            if not 0.0 < self.split_dev_by_article < 1.0:
                raise ValueError(f"--split-dev-by-article is the held-out fraction of articles, in (0, 1), "
                                 f"got {self.split_dev_by_article}")
        for name in ("epochs", "batch_size", "max_seq_len", "doc_stride", "max_query_len", "n_best", "max_answer_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("steps", "max_train_examples", "max_eval_examples", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.max_grad_norm > 0 and self.weight_decay >= 0):
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
        if Path(self.out).resolve() == Path(self.checkpoint).resolve():
            raise ValueError("--out is the --checkpoint folder: saving would overwrite the pretrained model; "
                             "choose another --out")


# --------------------------------------------------------------------------- model and data


def load_pretrained(cfg: FinetuneConfig, xp):
    """-> (checkpoint, model config with cfg's dropout, tokenizer), with one-line errors naming the
    missing file. ``--random-init`` still reads the checkpoint: it supplies the config and tokenizer."""
    if not Path(cfg.checkpoint).is_dir():
        raise ValueError(f"checkpoint folder {cfg.checkpoint} does not exist: pass the --out folder of a "
                         "python -m minispanbert.train run")
    checkpoint = load_checkpoint(cfg.checkpoint, xp=xp)
    directory = checkpoint.directory
    if not (directory / TOKENIZER_FILE).is_file():
        raise ValueError(f"{directory / TOKENIZER_FILE} is missing: the weights only fit the tokenizer they were "
                         "pretrained with, so pass a complete checkpoint folder (do not train a new tokenizer)")
    if "model" not in checkpoint.config:
        raise ValueError(f"{directory}: trainer_state.json has no model config; pass a minispanbert checkpoint")
    model_config = ModelConfig.from_dict(checkpoint.config["model"])
    if cfg.dropout is not None:
        model_config = model_config.replace(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    if cfg.max_seq_len > model_config.max_position_embeddings:
        raise ValueError(f"--max-seq-len {cfg.max_seq_len} exceeds the model's max_position_embeddings "
                         f"{model_config.max_position_embeddings}: use --max-seq-len "
                         f"{model_config.max_position_embeddings} or less")
    try:
        tokenizer = load_tokenizer(directory / TOKENIZER_FILE)
    except ValueError:
        raise ValueError(f"{directory / TOKENIZER_FILE} is corrupt: the weights only fit the tokenizer they were "
                         "pretrained with, so pass another checkpoint folder (do not train a new tokenizer)") from None
    if tokenizer.get_vocab_size() > model_config.vocab_size:
        raise ValueError(f"{directory / TOKENIZER_FILE} has {tokenizer.get_vocab_size()} tokens but the model only "
                         f"{model_config.vocab_size}: the tokenizer belongs to another checkpoint")
    return checkpoint, model_config, tokenizer


def initial_params(checkpoint, model_config, cfg: FinetuneConfig, *, xp) -> tuple[dict, list[str]]:
    """The starting QA parameters and the names of unused checkpoint tensors. The head is drawn from
    ``cfg.seed`` in both cases, so pretrained and --random-init runs differ only in the encoder."""
    if cfg.random_init:
        return init_qa_params(model_config, cfg.seed, xp=xp, dtype=cfg.dtype), sorted(checkpoint.params)
    return qa_params_from_pretrained(checkpoint.params, model_config, cfg.seed, xp=xp, dtype=cfg.dtype)


def load_examples(cfg: FinetuneConfig):
    """-> (training examples, evaluation examples, description)."""
    if cfg.split_dev_by_article is not None:
        train_examples, eval_examples = split_by_article(read_squad(cfg.dev), cfg.split_dev_by_article, cfg.seed)
        description = (f"{cfg.dev} split by article: {len({e.title for e in train_examples})} articles for training, "
                       f"{len({e.title for e in eval_examples})} held out")
    else:
        train_examples, eval_examples = read_squad(cfg.train), read_squad(cfg.dev)
        description = f"train {cfg.train}, evaluate on {cfg.dev}"
    train_examples, dropped = answers_with_valid_offsets(train_examples)
    if dropped:
        description += f"; {dropped} training answers skipped (answer_start does not point at their text)"
    if cfg.max_train_examples is not None:
        train_examples = train_examples[:cfg.max_train_examples]
    if cfg.max_eval_examples is not None:
        eval_examples = eval_examples[:cfg.max_eval_examples]
    return train_examples, eval_examples, description


def batch_indices(step: int, n_features: int, cfg: FinetuneConfig) -> np.ndarray:
    """Windows for ``step``: a fresh permutation each epoch, drawn from (seed, epoch); the last batch
    of an epoch may be smaller (every window is seen once per epoch)."""
    steps_per_epoch = math.ceil(n_features / cfg.batch_size)
    epoch, index = divmod(step, steps_per_epoch)
    order = np.random.default_rng([cfg.seed, epoch, 0]).permutation(n_features)
    return order[index * cfg.batch_size:(index + 1) * cfg.batch_size]


def take(arrays: dict, indices) -> dict:
    return {name: value[indices] for name, value in arrays.items()}


# --------------------------------------------------------------------------- evaluation and output


def predict_logits(params, arrays, model_config, *, xp, batch_size):
    """Start and end logits (N, T) on the host for every window, dropout off."""
    starts, ends = [], []
    for first in range(0, len(arrays["input_ids"]), batch_size):
        out, _ = qa_forward(params, take(arrays, slice(first, first + batch_size)), model_config, xp=xp, train=False)
        starts.append(to_numpy(out.start_logits))
        ends.append(to_numpy(out.end_logits))
    return np.concatenate(starts), np.concatenate(ends)


def evaluate_model(params, model_config, eval_examples, eval_features, eval_arrays, cfg: FinetuneConfig, *, xp,
                   out_dir: Path) -> dict:
    """Decode the held-out windows, write predictions.json, and return the official EM / F1."""
    start_logits, end_logits = predict_logits(params, eval_arrays, model_config, xp=xp, batch_size=cfg.batch_size)
    predictions = decode_predictions(eval_examples, eval_features, start_logits, end_logits,
                                     n_best=cfg.n_best, max_answer_len=cfg.max_answer_len)
    write_predictions(predictions, out_dir / PREDICTIONS_FILE)
    write_text_atomic(out_dir / GOLD_FILE, json.dumps(examples_to_squad(eval_examples)))
    return evaluate(eval_examples, predictions)


def plot_metrics(metrics_path: Path, plot_path: Path, eval_label: str) -> None:
    """Training loss and held-out EM / F1 against the step -> PNG."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r["split"] == "train"]
    scores = [r for r in records if r["split"] == eval_label]
    fig, axes = new_figure(2, (11, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], alpha=0.7,
                 label="train (CE_start + CE_end) / 2")
    axes[0].set(xlabel="step", ylabel="cross-entropy (nats)", title="QA fine-tuning loss")
    axes[0].legend()
    for key, style in (("exact_match", "s-"), ("f1", "o-")):
        axes[1].plot([r["step"] for r in scores], [r[key] for r in scores], style, label=f"{eval_label} {key}")
    axes[1].set(xlabel="step", ylabel="score (0-100)", title=f"SQuAD v1.1 official metric, {eval_label}")
    axes[1].legend()
    save_figure(fig, plot_path)


def rounded(scores: dict) -> dict:
    return {key: round(value, 2) for key, value in scores.items()}


# --------------------------------------------------------------------------- the run


def run(cfg: FinetuneConfig, log=print) -> dict:
    """Fine-tune as ``cfg`` says. Returns {"scores": last EM/F1, "train_losses": [...], "steps": n}.
    A KeyboardInterrupt leaves as KeyboardInterrupt(message), the message saying what is on disk."""
    cfg.validate()
    run_dir = open_run_dir(cfg.out, overwrite=cfg.overwrite)
    try:
        return _run(cfg, run_dir, log)
    except KeyboardInterrupt:
        where = (f"the run that was in {run_dir.final} is untouched" if run_dir.staged
                 else f"no fine-tuned weights were saved in {run_dir.path} (they are written when training ends)")
        run_dir.discard()
        raise KeyboardInterrupt(f"interrupted: {where}") from None
    except BaseException:
        run_dir.discard()
        raise


def _run(cfg: FinetuneConfig, run_dir, log) -> dict:
    xp = get_backend(cfg.backend)
    out_dir = run_dir.path
    checkpoint, model_config, tokenizer = load_pretrained(cfg, xp)
    params, unused = initial_params(checkpoint, model_config, cfg, xp=xp)

    train_examples, eval_examples, description = load_examples(cfg)
    feature_args = dict(max_seq_len=cfg.max_seq_len, doc_stride=cfg.doc_stride, max_query_len=cfg.max_query_len)
    train_arrays = features_to_arrays(make_features(train_examples, tokenizer, training=True, **feature_args))
    eval_features = make_features(eval_examples, tokenizer, training=False, **feature_args)
    eval_arrays = features_to_arrays(eval_features)
    n_train = len(train_arrays["input_ids"])
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = cfg.steps or cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_fraction * total_steps)

    init = (f"random encoder (--random-init; config and tokenizer from {cfg.checkpoint})" if cfg.random_init
            else f"pretrained encoder from {cfg.checkpoint} (pretraining step {checkpoint.step})")
    log(f"data: {description}")
    log(f"train: {len(train_examples)} questions -> {n_train} windows; {cfg.eval_label}: {len(eval_examples)} "
        f"questions -> {len(eval_features)} windows (max_seq_len {cfg.max_seq_len}, stride {cfg.doc_stride})")
    log(f"init: {init}; fresh qa_outputs head; {len(unused)} checkpoint tensors unused")
    log(f"config: {json.dumps(dataclasses.asdict(cfg))}")
    log(f"model: {json.dumps(model_config.to_dict())}")
    log(f"backend: {cfg.backend} on {device_description(xp)}, dtype {cfg.dtype}")
    log(f"steps: {total_steps} ({total_steps / steps_per_epoch:.2f} epochs of {steps_per_epoch} batches of "
        f"{cfg.batch_size}), warmup {warmup_steps}, peak lr {cfg.lr}")

    metrics_path = out_dir / METRICS_FILE
    metrics_path.unlink(missing_ok=True)
    opt_state = adamw_init(params, xp=xp)
    decay_mask = no_decay_mask(params)

    eval_seconds = 0.0

    def evaluate_and_report(step: int, final: bool) -> dict:
        nonlocal eval_seconds
        t_eval = time.perf_counter()
        scores = evaluate_model(params, model_config, eval_examples, eval_features, eval_arrays, cfg, xp=xp,
                                out_dir=out_dir)
        append_metrics(metrics_path, dict(split=cfg.eval_label, step=step, questions=len(eval_examples), **scores))
        plot_metrics(metrics_path, out_dir / PLOT_FILE, cfg.eval_label)
        prefix = "" if final else f"step {step}/{total_steps} "
        bar.write(f"{prefix}{cfg.eval_label}: {json.dumps(rounded(scores))}")
        eval_seconds += time.perf_counter() - t_eval
        return scores

    from tqdm.auto import tqdm

    history = []
    bar = tqdm(range(total_steps), desc="fine-tuning QA", dynamic_ncols=True, disable=None)
    t_start = time.perf_counter()
    for step in bar:
        batch = take(train_arrays, batch_indices(step, n_train, cfg))
        lr = linear_warmup_decay(step, peak_lr=cfg.lr, warmup_steps=warmup_steps, total_steps=total_steps)
        dropout_rng = make_rng([cfg.seed, step, 3], xp=xp)
        out, cache = qa_forward(params, batch, model_config, xp=xp, train=True, rng=dropout_rng)
        loss = float(out.loss)  # one sync per step: a non-finite loss must not reach the weights
        if not math.isfinite(loss):
            bar.close()
            raise ValueError(f"the loss became {loss} at step {step}; no fine-tuned weights were saved: "
                             "lower --lr or use --dtype float64")
        grads = qa_backward(cache, xp=xp)
        grad_norm = clip_and_step(params, grads, opt_state, lr=lr, max_grad_norm=cfg.max_grad_norm,
                                  weight_decay=cfg.weight_decay, decay_mask=decay_mask, xp=xp)
        history.append(loss)
        append_metrics(metrics_path, dict(split="train", step=step + 1, loss=loss, lr=lr, grad_norm=float(grad_norm)))
        bar.set_postfix(loss=f"{loss:.3f}")
        done = step + 1
        if cfg.eval_every and done % cfg.eval_every == 0 and done < total_steps:
            evaluate_and_report(done, final=False)
    synchronize(xp)
    train_seconds = time.perf_counter() - t_start - eval_seconds
    scores = evaluate_and_report(total_steps, final=True)
    bar.close()

    run_config = {"model": model_config.to_dict(), "finetune": dataclasses.asdict(cfg)}
    saved = save_checkpoint(out_dir, params=params, step=total_steps, config=run_config,
                            extra={cfg.eval_label: scores,
                                   "encoder_init": "random" if cfg.random_init else f"pretraining step {checkpoint.step}"},
                            files={TOKENIZER_FILE: tokenizer.to_str()})
    run_dir.committed()
    log(f"trained {total_steps} steps in {train_seconds:.0f} s ({train_seconds / total_steps:.3f} s/step), evaluated "
        f"in {eval_seconds:.0f} s; wrote {saved.relative_to(out_dir)} (weights, tokenizer), "
        f"{PREDICTIONS_FILE}, {GOLD_FILE}, {METRICS_FILE} and {PLOT_FILE} to {run_dir.path}")
    return {"scores": scores, "train_losses": history, "steps": total_steps}


def parse_args(argv=None) -> FinetuneConfig:
    d = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    p = Parser("python -m minispanbert.finetune_qa", __doc__)
    p.add_argument("--checkpoint", required=True, help="a pretraining run folder (its latest checkpoint) or one of its checkpoints/step-* folders")
    p.add_argument("--dev", required=True, help="SQuAD v1.1 evaluation file (dev-v1.1.json)")
    p.add_argument("--train", default=None, help="SQuAD v1.1 training file (not with --split-dev-by-article)")
    p.add_argument("--split-dev-by-article", type=float, default=None, metavar="F",
                   help="hold out fraction F of the --dev file's articles for evaluation and train on the rest")
    p.add_argument("--random-init", action="store_true",
                   help="ignore the pretrained weights (keep config and tokenizer): the no-pretraining baseline")
    p.add_argument("--backend", choices=BACKENDS, default=d["backend"])
    p.add_argument("--dtype", choices=["float32", "float64"], default=d["dtype"])
    p.add_argument("--out", default=d["out"], help="output folder (must be new or empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds, once this run has saved its weights")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate")
    p.add_argument("--warmup-fraction", type=float, default=d["warmup_fraction"])
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="not on biases and LayerNorm")
    p.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"])
    p.add_argument("--dropout", type=float, default=None, help="default: the checkpoint's config (0.1)")
    p.add_argument("--max-seq-len", type=int, default=d["max_seq_len"])
    p.add_argument("--doc-stride", type=int, default=d["doc_stride"])
    p.add_argument("--max-query-len", type=int, default=d["max_query_len"])
    p.add_argument("--n-best", type=int, default=d["n_best"])
    p.add_argument("--max-answer-len", type=int, default=d["max_answer_len"], help="in tokens")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--max-train-examples", type=int, default=None, help="use only the first N training questions")
    p.add_argument("--max-eval-examples", type=int, default=None, help="evaluate only the first N questions")
    p.add_argument("--eval-every", type=int, default=None, help="also evaluate every N steps")
    return FinetuneConfig(**vars(p.parse_args(argv)))


def main(argv=None) -> dict:
    cfg = parse_args(argv)
    try:
        return run(cfg)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt as exc:
        sys.exit(str(exc) or "interrupted")


if __name__ == "__main__":
    main()
