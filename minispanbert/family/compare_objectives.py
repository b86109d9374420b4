"""Compare pretraining objectives on equal terms:
``python -m minispanbert.compare_objectives --data WIKITEXT --out DIR [--finetune sst2 --sst2-dir D]``

Every objective (default: spanbert, bert, roberta, albert, electra) is pretrained by ``python -m
minispanbert.train`` on the same corpus with the same preset, steps, batch size, sequence length,
learning rate and seed, so each sees the same number of token positions; then, if asked, each
checkpoint is fine-tuned on the same downstream task(s) with the same ``python -m
minispanbert.finetune`` settings. The table (``DIR/comparison.md``, also printed) and
``DIR/comparison.json`` give per objective: parameter count, training tokens/s (mean over the run,
the first step excluded), wall time, the objective's own held-out MLM loss and accuracy (with the
most-frequent-token floor), its second loss (SBO / NSP / SOP / ELECTRA's DISC) and the downstream scores. ELECTRA's parameter
count includes its generator (discarded after pretraining; fine-tuning takes the discriminator).

Read it with care: the held-out MLM numbers are each objective's own task (different masking
schemes; RoBERTa also a different tokenizer, byte-level BPE), so they are comparable only roughly;
the downstream scores are the common yardstick. At the tiny scale the runs are short and a single
seed: differences smaller than the spread between seeds (``--seeds 0,1,2`` runs each objective per
seed and reports mean and standard deviation) are noise.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from minispanbert.config import PRESETS
from minispanbert.engine import trainer as train
from minispanbert.engine.cli import Parser
from minispanbert.engine.runs.atomic import describe_os_error, write_text_atomic
from minispanbert.engine.runs.runlog import read_metrics
from minispanbert.family.objectives import OBJECTIVES
from minispanbert.finetune import loop as finetune

TASK_FILES = {"sst2": ("train.tsv", "dev.tsv"), "wnut17": ("wnut17train.conll", "emerging.dev.conll")}


def pretrain(objective, args, seed, out: Path, log) -> dict:
    cfg = train.RunConfig(objective=objective, preset=args.preset, data=args.data, out=str(out), overwrite=True,
                            steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, seed=seed,
                            eval_every=args.steps, save_every=args.steps, eval_batches=args.eval_batches,
                            log_every=max(1, min(50, args.steps)), print_every=max(1, args.steps // 5))
    started = time.perf_counter()
    result = train.run(cfg, log=log)
    seconds = time.perf_counter() - started
    records = [r for r in read_metrics(out / train.METRICS_FILE) if r["split"] == "train"]
    tokens_per_s = float(np.mean([r["tokens_per_s"] for r in records[1:]] or [records[0]["tokens_per_s"]]))
    from minispanbert.engine.runs.checkpoint import load_checkpoint

    params = sum(int(np.prod(w.shape)) for w in load_checkpoint(out, xp=np).params.values())
    last = result["last_eval"]
    second = next((h for h in ("sbo", "nsp", "sop", "disc") if f"{h}_loss" in last), None)
    return dict(parameters=params, tokens_per_s=tokens_per_s, pretrain_seconds=seconds,
                mlm_loss=last.get("mlm_loss"), mlm_acc=last.get("mlm_acc"), baseline_acc=last.get("baseline_acc"),
                second_head=second, second_loss=last.get(f"{second}_loss") if second else None,
                second_acc=last.get(f"{second}_acc") if second else None)


def finetune_scores(task, checkpoint: Path, args, seed, out: Path) -> dict:
    folder = Path(getattr(args, f"{task}_dir"))
    train_file, dev_file = TASK_FILES[task]
    argv = [task, "--checkpoint", str(checkpoint), "--train", str(folder / train_file), "--dev", str(folder / dev_file),
            "--out", str(out), "--overwrite", "--seed", str(seed), "--max-seq-len", str(args.seq_len)]
    if args.finetune_steps:
        argv += ["--steps", str(args.finetune_steps)]
    if args.max_train_examples:
        argv += ["--max-train-examples", str(args.max_train_examples)]
    result = finetune.main(argv)
    return finetune.headline(result["scores"]["dev"])  # scores per evaluation set


def summarise(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return (float(np.mean(values)), float(np.std(values)) if len(values) > 1 else None)


def fmt(summary, scale=1.0, digits=3):
    if summary is None:
        return "-"
    mean, std = summary
    return f"{mean * scale:.{digits}f}" + ("" if std is None else f" ± {std * scale:.{digits}f}")


def table(rows: dict, tasks) -> str:
    head = ["objective", "parameters", "tokens/s", "held-out MLM loss", "held-out MLM acc", "floor acc", "2nd loss (acc)"]
    task_keys = sorted({(t, k) for row in rows.values() for t in tasks for k in row.get(t, {})})  # (sst2, accuracy)
    head += [f"{t} {k}" for t, k in task_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        second = "-" if row["second_head"] is None else \
            f"{row['second_head'].upper()} {fmt(row['second_loss'])} ({fmt(row['second_acc'])})"
        cells = [name, f"{row['parameters']:,}", fmt(row["tokens_per_s"], digits=0), fmt(row["mlm_loss"]),
                 fmt(row["mlm_acc"]), fmt(row["baseline_acc"]), second]
        cells += [fmt(row.get(t, {}).get(k), digits=2) for t, k in task_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args, log=print) -> dict:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ValueError(f"--out {out} already holds files (an earlier comparison?): choose another --out, or pass "
                         "--overwrite to replace the runs in it")
    objectives = args.objectives.split(",")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. --seeds 0,1,2") from None
    tasks = [t for t in (args.finetune.split(",") if args.finetune else []) if t]
    for name in objectives:
        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r} in --objectives: choose from {', '.join(OBJECTIVES)}")
    for task in tasks:
        if task not in TASK_FILES:
            raise ValueError(f"--finetune {task}: choose from {', '.join(TASK_FILES)}")
        folder = getattr(args, f"{task}_dir")
        if folder is None or not all((Path(folder) / f).is_file() for f in TASK_FILES[task]):
            raise ValueError(f"--finetune {task} needs --{task}-dir holding {' and '.join(TASK_FILES[task])}")
    rows = {}
    for name in objectives:
        runs = []
        for seed in seeds:
            run_dir = out / f"{name}-seed{seed}"
            log(f"== pretraining {name} (seed {seed}) -> {run_dir}")
            result = pretrain(name, args, seed, run_dir, log)
            for task in tasks:
                log(f"== fine-tuning {name} (seed {seed}) on {task}")
                result[task] = finetune_scores(task, run_dir, args, seed, out / f"{name}-seed{seed}-{task}")
            runs.append(result)
        row = {k: summarise([r[k] for r in runs]) for k in ("tokens_per_s", "mlm_loss", "mlm_acc", "baseline_acc",
                                                            "second_loss", "second_acc", "pretrain_seconds")}
        row.update(parameters=runs[0]["parameters"], second_head=runs[0]["second_head"], runs=runs)
        for task in tasks:
            row[task] = {k: summarise([r[task].get(k) for r in runs]) for k in runs[0][task]}
        rows[name] = row
    text = table(rows, tasks)
    header = (f"preset {args.preset}, {args.steps} steps x {args.batch_size} x {args.seq_len} tokens, lr {args.lr}, "
              f"seeds {args.seeds}, data {args.data}")
    write_text_atomic(out / "comparison.md", header + "\n\n" + text + "\n")
    write_text_atomic(out / "comparison.json", json.dumps({"settings": vars(args), "rows": rows}, indent=1, default=str))
    log(header)
    log(text)
    return rows


def main(argv=None) -> None:
    p = Parser("python -m minispanbert.compare_objectives", __doc__)
    p.add_argument("--data", required=True, help="pretraining corpus (e.g. WikiText-2 wiki.train.tokens)")
    p.add_argument("--out", required=True, help="a new or empty folder for the runs and comparison.{md,json}")
    p.add_argument("--overwrite", action="store_true", help="replace the runs and comparison an --out already holds")
    p.add_argument("--objectives", default="spanbert,bert,roberta,albert,electra", help="comma-separated")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny")
    p.add_argument("--steps", type=int, default=1000, help="pretraining steps, the same for every objective")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0", help="comma-separated; several give mean ± std")
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--finetune", default="", help="comma-separated downstream tasks: sst2, wnut17")
    p.add_argument("--sst2-dir", default=None, help="folder with train.tsv and dev.tsv")
    p.add_argument("--wnut17-dir", default=None, help="folder with wnut17train.conll and emerging.dev.conll")
    p.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps (default: the task recipe's)")
    p.add_argument("--max-train-examples", type=int, default=None, help="fine-tune on the first N examples only")
    args = p.parse_args(argv)
    if args.steps < 1 or not math.isfinite(args.lr) or args.lr <= 0:
        sys.exit("error: --steps must be at least 1 and --lr a positive number")
    try:
        run(args)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    except OSError as exc:  # a full disk while writing comparison.md / .json
        sys.exit(f"error: {describe_os_error(exc, f'cannot write {exc.filename or args.out}')}")


if __name__ == "__main__":
    main()
