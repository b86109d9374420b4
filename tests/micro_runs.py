"""Helpers for the fault tests: a micro model preset (a few thousand parameters, so a training step
and a checkpoint take milliseconds), a small corpus, and the signal harness.

The harness (``python tests/micro_runs.py signals WORKDIR TRIALS SEED``) imports minispanbert once,
then for each trial forks a real child process that runs ``python -m minispanbert.train``'s
``main`` with ``--save-every 1`` on the micro preset (so the child spends most of its time saving),
waits until the child has completed a save, sleeps a random 0-40 ms and sends it SIGINT or SIGKILL.
The parent then records what the child printed, how it ended, and whether the run folder still
loads. Forking (instead of a fresh ``python`` per trial) saves the 1-2 s of imports per trial; the
signals and processes are real. It prints one JSON list; tests/test_faults.py asserts on it.

``python tests/micro_runs.py kills COMMAND WORKDIR TRIALS SEED`` (COMMAND: export_hf, finetune or
coursework) kills each of TRIALS forked writers with SIGKILL at a random moment of its run and
prints what its folder held afterwards (``kill_trials``).

``python tests/micro_runs.py train ARGS...`` is ``python -m minispanbert.train ARGS...`` with the
micro presets known (``--preset micro``, ``--preset micro-family``), for runs under ``mpiexec``.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

WORDS = tuple(("the cat sat on a mat while dogs barked loudly at passing cars and people walked home "
               "slowly through heavy rain under grey skies near old stone bridges").split())


def micro_config(vocab_size: int = 200, hidden_size: int = 8):
    """The micro preset. "micro-family" is wider: RoBERTa's byte-level BPE needs more than 261 ids,
    and ALBERT's E = H / 4 must not be 2 (a LayerNorm over two values is ill-conditioned)."""
    from minispanbert.config import ModelConfig

    return ModelConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=2 * hidden_size, max_position_embeddings=32, sbo_position_dim=4)


def register_micro():
    """Add the "micro" and "micro-family" presets to minispanbert's table (tests use
    monkeypatch.setitem instead)."""
    from minispanbert import config

    config.PRESETS["micro"] = micro_config()
    config.PRESETS["micro-family"] = micro_config(vocab_size=320, hidden_size=32)


def write_corpus(path: Path, documents: int = 12, seed: int = 0, extra_words=(), lines: int = 4,
                 words_per_line=(5, 15)) -> Path:
    """``documents`` documents of ``lines`` lines of random WORDS (``words_per_line``: [low, high)
    words a line), blank-line separated: the toy corpus every training test uses."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = WORDS + tuple(extra_words)
    docs = ["\n".join(" ".join(rng.choice(words, size=rng.integers(*words_per_line))) + " ." for _ in range(lines))
            for _ in range(documents)]
    Path(path).write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return Path(path)


MICRO_ARGS = ["--preset", "micro", "--batch-size", "2", "--seq-len", "16", "--eval-batches", "1"]


def _child(argv, stderr_path):
    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    code = 0
    try:
        from minispanbert.engine import trainer as train

        train.main(argv)
    except SystemExit as exc:  # what the interpreter does with sys.exit("message")
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code + "\n")
            code = 1
        else:
            code = exc.code or 0
    except BaseException:  # a traceback is a failure of the test
        traceback.print_exc()
        code = 70
    sys.stderr.flush()
    os._exit(code)


def signal_trials(workdir: Path, trials: int, seed: int) -> list[dict]:
    import numpy as np

    from minispanbert.engine.runs.checkpoint import CHECKPOINTS_DIR, latest_step, load_checkpoint

    # The fused numba kernels load their compiled code in each new process (seconds); the plain
    # NumPy ops are the reference and make no difference to what is tested here.
    os.environ["MINISPANBERT_FUSED_CPU"] = "0"
    import tqdm.auto  # noqa: F401  (imported once here, not in every child)

    from minispanbert.engine import trainer as train  # noqa: F401

    register_micro()
    corpus = write_corpus(workdir / "corpus.txt")
    run = workdir / "run"
    rng = random.Random(seed)
    results = []
    for trial in range(trials):
        sig = signal.SIGINT if trial % 2 == 0 else signal.SIGKILL
        before = latest_step(run)
        argv = ["--data", str(corpus), *MICRO_ARGS, "--steps", "1000000", "--save-every", "1",
                "--eval-every", "1000000", "--print-every", "1000000", "--out", str(run)]
        if before is not None and trial % 5 != 4:
            argv += ["--resume", str(run)]
        elif run.exists():
            argv += ["--overwrite"]  # every 5th trial: a new run meant to replace the old one
        stderr_path = workdir / f"stderr-{trial}.txt"
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(argv, stderr_path)
        deadline = time.monotonic() + 20
        while latest_step(run) in (None, before) and time.monotonic() < deadline:  # until this child has saved
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(pid, sig)
        _, status = os.waitpid(pid, 0)
        first_save_s = time.monotonic() - started
        checkpoints = run / CHECKPOINTS_DIR
        leftovers = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith(".")) if checkpoints.is_dir() else []
        try:
            loaded, error = load_checkpoint(run, xp=np).step, None
        except ValueError as exc:
            loaded, error = None, str(exc)
        siblings = sorted(p.name for p in workdir.iterdir()
                          if p.name.startswith(".run.") and p.name != ".run.lock")  # a killed run's, reused next
        results.append(dict(
            trial=trial, signal=sig.name, seconds=round(first_save_s, 3), before=before, loaded=loaded, error=error, leftovers=leftovers, siblings=siblings,
            overwrite="--overwrite" in argv,
            exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            killed_by=signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None,
            stderr=stderr_path.read_text(encoding="utf-8")))
    return results


def _run_quietly(action) -> None:
    """The body of a forked writer: no output, and no Python cleanup when it ends (os._exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        action()
        code = 0
    except BaseException:  # noqa: BLE001 -- the parent checks what is on disk, not how the child ended
        code = 1
    os._exit(code)


def kill_trials(command: str, workdir: Path, trials: int, seed: int) -> dict:
    """``trials`` real processes running ``command`` (export_hf into one folder with --overwrite,
    fine-tuning into one folder with --overwrite and --save-every 1, or coursework build into a new
    folder), each sent SIGKILL after a random delay within the command's own duration (measured
    first, uninterrupted). After each kill, what the command's folder holds is recorded: "absent",
    "complete" (it loads, or for a build holds exactly the reference files) or the one-line error a
    reader gives. Finally one uninterrupted run, and the hidden leftovers after it."""
    import numpy as np

    from minispanbert.coursework.build import build
    from minispanbert.engine.runs.checkpoint import load_checkpoint
    from minispanbert.engine.trainer import RunConfig, run
    from minispanbert.finetune.loop import main as finetune_main
    from minispanbert.interop.export_hf import main as export_main
    from minispanbert.interop.huggingface import load_pretrained

    os.environ["MINISPANBERT_FUSED_CPU"] = "0"
    register_micro()
    source = workdir / "source"
    run(RunConfig(preset="micro", data=str(write_corpus(workdir / "corpus.txt")), out=str(source), steps=1,
                  batch_size=2, seq_len=16, eval_batches=1, print_every=1000), log=lambda _line: None)
    sst2 = workdir / "sst2.tsv"
    sst2.write_text("sentence\tlabel\nthe cat sat on a mat .\t1\ndogs barked loudly .\t0\n", encoding="utf-8")

    def files_of(folder: Path) -> list[str]:
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    out = workdir / {"export_hf": "hf", "finetune": "ft"}.get(command, "hw")
    reference = files_of(build("A1", workdir / "reference")) if command == "coursework" else None

    def action():
        if command == "export_hf":
            export_main(["--checkpoint", str(source), "--out", str(out), "--overwrite"])
        elif command == "finetune":
            finetune_main(["sst2", "--checkpoint", str(source), "--train", str(sst2), "--dev", str(sst2), "--steps",
                           "40", "--save-every", "1", "--max-seq-len", "16", "--threads", "1", "--out", str(out),
                           "--overwrite"])
        else:
            build("A1", out)

    def read() -> str:
        if command == "export_hf":
            load_pretrained(out)
        elif command == "finetune":
            load_checkpoint(out, xp=np)
        elif files_of(out) != reference:
            return f"incomplete: {len(files_of(out))} files"
        return "complete"

    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _run_quietly(action)
    os.waitpid(pid, 0)
    duration = time.monotonic() - started
    rng = random.Random(seed)
    results, mid_write = [], 0
    for _ in range(trials):
        if command == "coursework":
            shutil.rmtree(out, ignore_errors=True)  # a build never replaces: each trial builds afresh
        pid = os.fork()
        if pid == 0:
            _run_quietly(action)
        time.sleep(rng.uniform(0.0, duration))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if not out.exists():
            state = "absent"
        else:
            try:
                state = read()
            except ValueError as exc:
                state = f"refused: {exc}"
        staging = [p.name for p in workdir.iterdir() if p.name.startswith(f".{out.name}.new")]
        results.append(state)
        mid_write += bool(staging)  # the kill landed while the new folder was being filled
    pid = os.fork()
    if pid == 0:
        _run_quietly(action if command != "coursework" else lambda: (shutil.rmtree(out, ignore_errors=True), action()))
    os.waitpid(pid, 0)
    leftovers = sorted(p.name for p in workdir.iterdir() if p.name.startswith(f".{out.name}."))
    return {"duration": round(duration, 3), "states": results, "mid_write": mid_write, "final": read(),
            "leftovers": leftovers}


if __name__ == "__main__":
    if sys.argv[1:2] == ["signals"]:
        print(json.dumps(signal_trials(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
    elif sys.argv[1:2] == ["kills"]:
        print(json.dumps(kill_trials(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))))
    elif sys.argv[1:2] == ["train"]:
        register_micro()
        from minispanbert.engine.trainer import main

        main(sys.argv[2:])
    else:
        sys.exit("usage: python tests/micro_runs.py signals WORKDIR TRIALS SEED | kills COMMAND WORKDIR TRIALS SEED"
                 " | train ARGS...")
