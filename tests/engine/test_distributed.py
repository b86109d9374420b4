"""Data parallelism (minispanbert/engine/parallel/distributed.py).

Without MPI: the arithmetic that makes N shards equal one batch -- slicing a batch by rows (SBO
pairs renumbered) and the global-count renormalisation of each loss term -- checked in one process
against the full batch in float64. With mpi4py and an MPI (optional test dependencies; skipped
without them): real ``mpiexec -n 2`` runs of ``python -m minispanbert.train`` against one process.
"""
import numpy as np
import pytest

from minispanbert.engine.check_gradients import CHECK_CONFIG
from minispanbert.engine.parallel.distributed import World, shard_rows, slice_batch
from minispanbert.masking import make_pretraining_batch
from minispanbert.model.spanbert_loss import SpanBertForPretraining

CONFIG = CHECK_CONFIG.replace(max_position_embeddings=16)


def _batch(rows=4, seq_len=16, seed=0):
    rng = np.random.default_rng(seed)
    lengths = [seq_len - 2, seq_len - 2, 3, seq_len - 3][:rows]  # unequal rows: shards hold different counts
    blocks = [rng.integers(5, CONFIG.vocab_size, size=n) for n in lengths]
    starts = [np.ones(n, dtype=bool) for n in lengths]
    return make_pretraining_batch(blocks, starts, "span", np.random.default_rng([seed, 1]), seq_len=seq_len,
                                  vocab_size=CONFIG.vocab_size, mask_ratio=0.4,
                                  max_pair_targets=CONFIG.sbo_max_targets)



class GatheringComm:
    """A stand-in communicator whose allgather returns this rank's value and the other ranks' given ones."""

    def __init__(self, others):
        self.others = others

    def allgather(self, value):
        return [value, *self.others(value)]


def test_the_drift_check_sees_one_changed_parameter_on_another_rank():
    """``same_parameters`` compares every rank's checksum with rank 0's: equal values pass, a rank
    whose parameters differ by one float32 step fails, and a single process always passes."""
    params = {"a": np.ones((3, 4), dtype=np.float32), "b": np.arange(5, dtype=np.float32)}
    same = World(rank=0, size=2, transport="mpi", comm=GatheringComm(lambda v: [v]))
    one_step_up = GatheringComm(lambda v: [v + float(np.spacing(np.float32(v)))])
    drifted = World(rank=0, size=2, transport="mpi", comm=one_step_up)
    assert same.same_parameters(params, xp=np) and not drifted.same_parameters(params, xp=np)
    assert World().same_parameters(params, xp=np)


def test_slice_batch_keeps_rows_and_renumbers_pair_targets():
    batch = _batch()
    assert batch.sbo_target.size and set(batch.sbo_batch) >= {0, 3}, "the test batch needs SBO pairs in rows 0 and 3"
    part = slice_batch(batch, slice(2, 4))
    np.testing.assert_array_equal(part.input_ids, batch.input_ids[2:4])
    np.testing.assert_array_equal(part.mlm_labels, batch.mlm_labels[2:4])
    in_rows = batch.sbo_batch >= 2
    np.testing.assert_array_equal(part.sbo_batch, batch.sbo_batch[in_rows] - 2)
    for name in ("sbo_left", "sbo_right", "sbo_rel_pos", "sbo_target"):
        np.testing.assert_array_equal(getattr(part, name), getattr(batch, name)[in_rows])


def test_shard_rows_refuses_an_uneven_split():
    assert shard_rows(8, World(rank=1, size=2)) == slice(4, 8)
    with pytest.raises(ValueError, match="not divisible by the 3 ranks"):
        shard_rows(8, World(rank=0, size=3))


@pytest.mark.parametrize("scaled", [True, False])
def test_shards_with_global_counts_sum_to_the_full_batch_gradient(scaled):
    """sum_r (n_r / N) dL_r == dL for each loss term; the unscaled sum (the trap) is not."""
    config = CONFIG
    model = SpanBertForPretraining.initialise(config, seed=3, xp=np, dtype="float64")
    batch = _batch(seed=5)
    full_out, cache = model.forward(batch)
    full = model.backward(cache)
    shards = [slice_batch(batch, shard_rows(4, World(rank=r, size=2))) for r in range(2)]
    outs = [model.forward(s) for s in shards]
    totals = {"mlm": sum(o.mlm_count for o, _ in outs), "sbo": sum(o.sbo_count for o, _ in outs)}
    assert all(o.mlm_count != totals["mlm"] / 2 for o, _ in outs), "pick a batch whose shards differ in counts"
    summed, loss = None, 0.0
    for out, shard_cache in outs:
        scales = ({"mlm": out.mlm_count / totals["mlm"], "sbo": out.sbo_count / totals["sbo"]} if scaled
                  else {"mlm": 0.5, "sbo": 0.5})
        grads = model.backward(shard_cache, term_scales=scales)
        summed = grads if summed is None else {k: summed[k] + grads[k] for k in grads}
        loss += scales["mlm"] * float(out.mlm_loss) + scales["sbo"] * float(out.sbo_loss)
    # relative to each tensor's scale; the attention key biases' true gradient is exactly zero
    # (rounding noise ~1e-17), hence the absolute floor. The shards add each tensor's per-row terms
    # in another order than the whole batch: in float64 that moves a sum of n = B*T <= 64 terms by at
    # most about n * 2^-53 * sum|terms| ~ 1e-14 of its scale here, so 1e-12 leaves a factor 100
    worst = np.max([np.max(np.abs(summed[k] - full[k])) / max(np.max(np.abs(full[k])), 1e-6) for k in full])
    assert np.isfinite(worst)
    if scaled:
        assert worst < 1e-12
        assert loss == pytest.approx(float(full_out.loss), rel=1e-12)
    else:
        assert worst > 1e-3


# ---------------------------------------------------------------------- real MPI runs

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import MPIEXEC, mpi_missing_reason, needs_mpi


@pytest.fixture(scope="module")
def mpi_corpus(tmp_path_factory):
    from micro_runs import write_corpus

    return write_corpus(tmp_path_factory.mktemp("mpi") / "corpus.txt", documents=30, lines=5, words_per_line=(5, 20))


def _train(args, *, ranks=1, timeout=240, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **(env_extra or {}))
    env.pop("PYTHONWARNINGS", None)
    command = [sys.executable, "-m", "minispanbert.train", *args]
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


TINY_RUN = ["--steps", "3", "--batch-size", "4", "--seq-len", "32", "--dtype", "float64", "--dropout", "0.1",
            "--eval-every", "3", "--save-every", "3", "--eval-batches", "2"]


def _params(run):
    from minispanbert.engine.runs.checkpoint import load_checkpoint
    return load_checkpoint(run, xp=np).params


def _train_records(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pair_of_runs(mpi_corpus, tmp_path_factory):
    """objective -> (one-process run folder, two-rank run folder), same data, seed and vocabulary.

    The one process splits each batch into the same two row shards on two threads (--threads 2):
    it computes what the two ranks compute, one shard each, with single-threaded BLAS, and sums the
    two gradients as the all-reduce does (a + b, which is b + a exactly), so the runs must agree
    bit for bit; that the shards' sum is the whole batch's gradient is tests/engine/test_thread_shards.py's."""
    if mpi_missing_reason() is not None:
        pytest.skip(mpi_missing_reason())
    root = tmp_path_factory.mktemp("dp")
    runs = {}
    for objective in ("spanbert", "bert"):
        one, two = root / f"{objective}-one", root / f"{objective}-two"
        args = ["--objective", objective, "--data", str(mpi_corpus), *TINY_RUN]
        done = _train([*args, "--out", str(one), "--threads", "2"])
        assert done.returncode == 0, done.stderr
        done = _train([*args, "--out", str(two), "--tokenizer", str(one)], ranks=2)
        assert done.returncode == 0, done.stderr
        runs[objective] = (one, two)
    return runs


@needs_mpi
@pytest.mark.parametrize("objective", ["spanbert", "bert"])
def test_two_ranks_equal_one_process(pair_of_runs, objective):
    """2 ranks x B/2 == 1 process x B (its two shards on threads) after 3 steps in float64: every
    logged training loss, gradient norm and parameter bit for bit. The held-out numbers add the same
    per-batch sums in another order (rank r sums batches r, r + 2, ..., then the ranks' sums are
    added): a float64 sum of n terms moves by at most about n * 2^-53 relative, so 1e-13 holds for
    any n below 400 here (2 batches)."""
    one, two = pair_of_runs[objective]
    for a, b in zip(_train_records(one), _train_records(two), strict=True):
        assert a["step"] == b["step"] and a["split"] == b["split"]
        for key, value in a.items():
            if isinstance(value, float) and key != "tokens_per_s":
                if a["split"] == "train":
                    assert b[key] == value, (key, a["step"])
                else:
                    assert b[key] == pytest.approx(value, rel=1e-13, abs=1e-15), (key, a["step"])
    p1, p2 = _params(one), _params(two)
    assert p1.keys() == p2.keys()
    for name in p1:
        np.testing.assert_array_equal(p2[name], p1[name], err_msg=name)


@needs_mpi
def test_a_two_rank_checkpoint_resumes_on_one_rank(pair_of_runs, mpi_corpus, tmp_path):
    """The 3-step checkpoints of the 1-process and the 2-rank runs, each continued to step 5 by one
    process, end with the same parameters, bit for bit: a checkpoint does not depend on how many
    ranks wrote it."""
    continued = {}
    for name, run in zip(("one", "two"), pair_of_runs["spanbert"]):
        copy = tmp_path / name
        shutil.copytree(run, copy)
        done = _train(["--resume", str(copy), "--data", str(mpi_corpus), *TINY_RUN[2:], "--steps", "5"])
        assert done.returncode == 0, done.stderr
        continued[name] = copy
    p1, p2 = _params(continued["one"]), _params(continued["two"])
    for name in p1:
        np.testing.assert_array_equal(p2[name], p1[name], err_msg=name)


@needs_mpi
def test_ranks_given_different_flags_are_refused(mpi_corpus, tmp_path):
    base = [sys.executable, "-m", "minispanbert.train", "--data", str(mpi_corpus), "--out", str(tmp_path / "run"),
            *TINY_RUN]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([MPIEXEC, "-n", "1", *base, "--lr", "1e-3", ":", "-n", "1", *base, "--lr", "2e-3"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert ours and all("started with different flags" in line for line in ours), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def _rank_pids(launcher_pid, rank):
    """PIDs of the processes under ``launcher_pid`` whose environment says PMI_RANK=rank."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environ and b"minispanbert.train" in cmdline:
            found.append(int(proc.name))
    return found


@needs_mpi
def test_killing_one_rank_ends_the_other_quickly_and_the_checkpoint_loads(mpi_corpus, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    command = [MPIEXEC, "-n", "2", sys.executable, "-m", "minispanbert.train", "--data", str(mpi_corpus), "--out",
               str(out), "--steps", "100000", "--batch-size", "4", "--seq-len", "32", "--save-every", "2",
               "--eval-every", "100000"]
    # the launcher reports a dead rank on stdout (MPICH's Hydra) or stderr (Open MPI)
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while not (out / "checkpoints" / "latest").exists():
            assert launcher.poll() is None and time.monotonic() < deadline, "the run did not reach its first save"
            time.sleep(0.2)
        time.sleep(1.0)  # mid-run, at a random point between saves
        victims = _rank_pids(launcher.pid, 1)
        assert victims, "rank 1 not found"
        killed_at = time.monotonic()
        os.kill(victims[0], 9)
        launcher.wait(timeout=30)
        assert time.monotonic() - killed_at < 10
        assert launcher.returncode != 0
        report = launcher.stdout.read()
        assert "signal 9" in report or "Killed" in report, report
    finally:
        if launcher.poll() is None:
            launcher.kill()
    from minispanbert.engine.runs.checkpoint import load_checkpoint
    checkpoint = load_checkpoint(out, xp=np)
    assert checkpoint.step >= 2 and all(np.isfinite(p).all() for p in checkpoint.params.values())


@needs_mpi
@pytest.mark.parametrize("empty", ["sbo", "mlm"])
def test_a_rank_without_targets_computes_the_same_norm_and_parameters(empty):
    """Rank 1's shard has no SBO targets (or no targets at all), so its gradient dict lists the SBO
    tensors last; after the all-reduce both ranks hold the same numbers, and the global norm, the
    clipped update and the parameters must be the same bits on both (a norm summed in dict order
    differs in its last bit, and the save-time checksum then stops the run)."""
    helper = Path(__file__).resolve().parents[1] / "mpi_empty_shard.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(helper), empty], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    rank0, rank1 = json.loads(done.stdout.strip().splitlines()[-1])
    assert rank0["sbo_targets"] > 0 and rank1["sbo_targets"] == 0
    assert rank0["norms"] == rank1["norms"]
    assert rank0["params_sha256"] == rank1["params_sha256"]


@needs_mpi
def test_ctrl_c_on_two_ranks_ends_both_with_one_message(mpi_corpus, tmp_path):
    """A terminal's Ctrl-C reaches mpiexec and every rank (here: SIGINT to the whole process group,
    after the first save). Rank 1 used to leave on it while rank 0 waited in an all-reduce, or the
    reverse, leaving a rank at 100% CPU until a second Ctrl-C (2 of 3 trials). Now rank 1 ignores
    it and rank 0 says what is on disk and ends the job (MPI_Abort, whose own line mpich adds)."""
    import signal

    from minispanbert.engine.runs.checkpoint import latest_step, load_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = tmp_path / "run"
    for trial in range(3):
        command = [MPIEXEC, "-n", "2", sys.executable, "-m", "minispanbert.train", "--data", str(mpi_corpus),
                   "--steps", "100000", "--batch-size", "4", "--seq-len", "32", "--save-every", "5", "--eval-every",
                   "100000", "--eval-batches", "1", "--out", str(out), *(["--resume", str(out)] if trial else [])]
        before = latest_step(out)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   start_new_session=True)
        deadline = time.monotonic() + 120
        while latest_step(out) in (None, before) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2 * trial)
        os.killpg(process.pid, signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"trial {trial}: a rank was still running 30 s after the Ctrl-C")
        step = load_checkpoint(out, xp=np).step
        assert process.returncode == 130, stderr
        assert stderr.splitlines()[0] == f"interrupted: {out} holds a complete checkpoint at step {step} " \
                                          f"(continue with --resume {out})", stderr
        assert "Traceback" not in stderr
