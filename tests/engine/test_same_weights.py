"""The same run reaches the same weights however it is split (dropout on): 1 thread, 2 and 3
threads (the batch's rows split over them) and 2 MPI ranks, for every objective of the family.

Every random number a step draws is keyed by what it is for and by its global batch row
(minispanbert/keyed_random.py: dropout masks; ELECTRA's samples: Gumbel noise keyed per masked
position), so a split only changes the order in which the shards' gradients are added. In float64
that moves a weight by a few ulps: after 20 steps of AdamW every parameter equals the one-thread
run's to 1e-12 (measured: ~1e-15). In float32 the same reorderings move the weights by about
1e-7 relative per step, and AdamW's normalised update carries them along: FLOAT32_TOLERANCE below
is the bound, measured on the tiny preset (docs/reproducibility.md).

A resumed run continues the same trajectory on another thread or rank count.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minispanbert import config as config_module
from minispanbert.engine.runs.checkpoint import load_checkpoint
from minispanbert.engine.trainer import RunConfig, run

from conftest import MPIEXEC, needs_mpi
from micro_runs import micro_config, write_corpus

OBJECTIVES = ("spanbert", "bert", "roberta", "albert", "electra")
STEPS = 20
COMMON = dict(preset="micro-family", steps=STEPS, batch_size=6, seq_len=24, dtype="float64", dropout=0.1, eval_every=STEPS,
              save_every=STEPS // 2, eval_batches=1, print_every=1000, keep_checkpoints=5)
FLOAT64_TOLERANCE = 1e-12
FLOAT32_TOLERANCE = 5e-6  # max |w_threads - w_one|, 20 tiny steps, lr 1e-3: measured <= 6.4e-7 (5 objectives)


@pytest.fixture(scope="module")
def micro_preset():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(config_module.PRESETS, "micro-family", micro_config(vocab_size=320, hidden_size=32))
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("same") / "corpus.txt", documents=30, lines=5, words_per_line=(5, 20))


@pytest.fixture(scope="module")
def one_thread(micro_preset, corpus, tmp_path_factory):
    """objective -> the one-thread run's folder (its tokenizer is every other run's)."""
    root = tmp_path_factory.mktemp("one")
    for objective in OBJECTIVES:
        run(RunConfig(objective=objective, data=str(corpus), out=str(root / objective), threads=1, **COMMON),
            log=lambda _message: None)
    return {objective: root / objective for objective in OBJECTIVES}


def train(objective, corpus, out, reference, **overrides):
    """A run of ``objective`` in this process, on the vocabulary of the run in ``reference``."""
    cfg = RunConfig(**{**COMMON, **dict(objective=objective, data=str(corpus), out=str(out),
                                        tokenizer=str(reference) if reference else None), **overrides})
    run(cfg, log=lambda _message: None)
    return out


def params(folder):
    return load_checkpoint(folder, xp=np).params


def worst_difference(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_threads_reach_the_weights_of_one_thread(one_thread, corpus, tmp_path, objective, threads):
    split = train(objective, corpus, tmp_path / "split", one_thread[objective], threads=threads)
    difference = worst_difference(params(split), params(one_thread[objective]))
    print(f"{objective}, {threads} threads against 1, float64: max |w difference| = {difference:.1e}")  # pytest -s
    assert difference <= FLOAT64_TOLERANCE


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_dropout_was_on_in_these_runs(one_thread, corpus, tmp_path, objective):
    """Without dropout the same run ends elsewhere: the matrix above compares runs that drew masks."""
    plain = train(objective, corpus, tmp_path / "plain", one_thread[objective], threads=1, dropout=0.0)
    assert worst_difference(params(plain), params(one_thread[objective])) > 1e-4


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_a_resume_on_three_threads_continues_the_one_thread_run(one_thread, corpus, tmp_path, objective):
    halfway = one_thread[objective] / "checkpoints" / f"step-{STEPS // 2:06d}"
    resumed = train(objective, corpus, tmp_path / "resumed", None, threads=3, resume=str(halfway))
    assert worst_difference(params(resumed), params(one_thread[objective])) <= FLOAT64_TOLERANCE


def mpi_train(args, ranks=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("PYTHONWARNINGS", None)
    helper = Path(__file__).resolve().parents[1] / "micro_runs.py"
    done = subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(helper), "train", *args],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr


def cli_args(objective, corpus, out, reference, **overrides):
    values = {**COMMON, **dict(objective=objective, data=str(corpus), out=str(out), tokenizer=reference), **overrides}
    return [item for name, value in values.items() if value is not None
            for item in (f"--{name.replace('_', '-')}", str(value))]


@needs_mpi
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_ranks_reach_the_weights_of_one_process(one_thread, corpus, tmp_path, objective):
    mpi_train(cli_args(objective, corpus, tmp_path / "ranks", one_thread[objective]))
    assert worst_difference(params(tmp_path / "ranks"), params(one_thread[objective])) <= FLOAT64_TOLERANCE


@needs_mpi
def test_a_resume_on_two_ranks_continues_the_one_process_run(one_thread, corpus, tmp_path):
    halfway = one_thread["spanbert"] / "checkpoints" / f"step-{STEPS // 2:06d}"
    mpi_train(cli_args("spanbert", corpus, tmp_path / "resumed", None, resume=halfway))
    assert worst_difference(params(tmp_path / "resumed"), params(one_thread["spanbert"])) <= FLOAT64_TOLERANCE


def test_float32_threads_stay_within_the_stated_rounding(corpus, tmp_path):
    """The float32 row: the tiny preset, 20 steps, 1 against 2 threads."""
    tiny = dict(preset="tiny", dtype="float32", seq_len=32, save_every=STEPS, lr=1e-3)
    one = train("spanbert", corpus, tmp_path / "one", None, threads=1, **tiny)
    two = train("spanbert", corpus, tmp_path / "two", one, threads=2, **tiny)
    difference = worst_difference(params(one), params(two))
    print(f"spanbert (tiny), 2 threads against 1, float32: max |w difference| = {difference:.1e}")  # pytest -s
    assert 0 < difference <= FLOAT32_TOLERANCE
