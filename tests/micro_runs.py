"""Helpers for the fault tests: a micro model preset (a few thousand parameters, so a training step
and a checkpoint take milliseconds), a small corpus, and the signal harness.

The harness (``python tests/micro_runs.py signals WORKDIR TRIALS SEED``) imports minispanbert once,
then for each trial forks a real child process that runs ``python -m minispanbert.train``'s
``main`` with ``--save-every 1`` on the micro preset (so the child spends most of its time saving),
waits until the child has completed a save, sleeps a random 0-40 ms and sends it SIGINT or SIGKILL.
The parent then records what the child printed, how it ended, and whether the run folder still
loads. Forking (instead of a fresh ``python`` per trial) saves the 1-2 s of imports per trial; the
signals and processes are real. It prints one JSON list; tests/test_faults.py asserts on it.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

WORDS = tuple(("the cat sat on a mat while dogs barked loudly at passing cars and people walked home "
               "slowly through heavy rain under grey skies near old stone bridges").split())


def micro_config():
    from minispanbert.config import ModelConfig

    return ModelConfig(vocab_size=200, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=16, max_position_embeddings=32, sbo_position_dim=4)


def register_micro():
    """Add the "micro" preset to minispanbert's table (tests use monkeypatch.setitem instead)."""
    from minispanbert import config

    config.PRESETS["micro"] = micro_config()


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


if __name__ == "__main__":
    if sys.argv[1:2] == ["signals"]:
        print(json.dumps(signal_trials(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
    else:
        sys.exit("usage: python tests/micro_runs.py signals WORKDIR TRIALS SEED")
