"""Nothing is lost under faults (issue #11): signals during saves, runs that are not to be replaced,
a full disk, degenerate corpora, misleading messages, and shared vocabularies.

Most tests train the "micro" preset of tests/micro_runs.py (3,308 parameters) in-process; the
signal test forks real processes and sends them real SIGINT / SIGKILL.
"""
import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minispanbert import config
from minispanbert import train as loop
from minispanbert.data import train_tokenizer
from minispanbert.engine import trainer as train
from minispanbert.engine.runs import checkpoint as checkpoint_module
from minispanbert.engine.runs import runlog
from minispanbert.engine.runs.checkpoint import latest_step, load_checkpoint, resolve_checkpoint, save_checkpoint
from minispanbert.engine.trainer import RunConfig, run

from micro_runs import micro_config, write_corpus  # noqa: E402

TESTS = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def micro_preset(monkeypatch):
    monkeypatch.setitem(config.PRESETS, "micro", micro_config())
    monkeypatch.setenv("MINISPANBERT_FUSED_CPU", "0")  # the plain ops: no numba start-up in these tiny runs


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.txt")


def micro_run(corpus, out, **overrides):
    settings = dict(preset="micro", data=str(corpus), out=None if out is None else str(out), steps=2, batch_size=2, seq_len=16,
                    eval_batches=1, eval_every=2, save_every=1, print_every=1000)
    settings.update(overrides)
    lines = []
    result = run(RunConfig(**settings), log=lines.append)
    result["log"] = lines
    return result


def folder_hash(folder: Path) -> str:
    """Every file's relative path, mode and bytes: a change anywhere under ``folder`` changes it."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(oct(path.stat().st_mode).encode() + path.read_bytes())
    return digest.hexdigest()


def cli_error(main, argv, capsys):
    """Run a CLI's main in-process; -> its one-line message (exit != 0, no traceback)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    message = exc.value.code if isinstance(exc.value.code, str) else captured.err.strip()
    assert exc.value.code != 0 and exc.value.code is not None
    assert "\n" not in message.strip() and "Traceback" not in captured.err
    return message


# --------------------------------------------------------------------------- 2: signals during saves


def test_signals_during_saves_never_leave_a_checkpoint_that_does_not_load(tmp_path):
    """40 real processes, each interrupted at a random moment 0-100 ms after one of its saves (with
    --save-every 1 most of its time is spent saving): 20 by SIGINT, 20 by SIGKILL; every 5th
    process is a fresh --overwrite run replacing the previous one. After every trial the run folder
    loads, a SIGINT's one-line message names the step that is really on disk, and hidden leftovers
    of a killed save are gone after the next one."""
    env = dict(os.environ, PYTHONPATH=str(TESTS.parent), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, str(TESTS / "micro_runs.py"), "signals", str(tmp_path), "40", "11"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = json.loads(done.stdout)
    assert len(trials) == 40
    for trial in trials:
        assert trial["error"] is None and trial["loaded"] is not None, trial
        if trial["signal"] == "SIGINT":
            assert trial["exit_code"] == 1, trial
            lines = trial["stderr"].splitlines()
            assert len(lines) == 1 and "Traceback" not in trial["stderr"], trial
            assert lines[0].startswith("interrupted: ") and \
                f"holds a complete checkpoint at step {trial['loaded']} " in lines[0], trial
        else:
            assert trial["killed_by"] == "SIGKILL", trial
        if not trial["overwrite"] and trial["before"] is not None:
            assert trial["loaded"] >= trial["before"]  # a resumed run never goes back
    for previous, trial in zip(trials, trials[1:]):
        assert not set(previous["leftovers"]) & set(trial["leftovers"]), trial  # cleaned by the next save
        assert not set(previous["siblings"]) & set(trial["siblings"]), trial
    landed_mid_save = sum(bool(t["leftovers"]) for t in trials if t["signal"] == "SIGKILL")
    print(f"{landed_mid_save} of 20 kills left a half-written save behind (and it was never loaded)")
    assert landed_mid_save >= 1


def test_a_ctrl_c_during_a_save_is_delivered_after_it():
    import signal

    from minispanbert.engine.runs.atomic import interrupts_deferred

    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler has run by now; without the deferral it raised here
            finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


# --------------------------------------------------------------------------- 3: silent overwrites


def test_a_fresh_run_refuses_a_folder_that_holds_a_run(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    micro_run(corpus, out)
    before = folder_hash(out)
    message = cli_error(train.main, ["--preset", "micro", "--data", str(corpus), "--out", str(out), "--steps", "2",
                                     "--batch-size", "2", "--seq-len", "16"], capsys)
    assert message == (f"error: --out {out} already holds a run saved at step 2: continue it with --resume {out}, "
                       "choose another --out, or pass --overwrite to replace it (only once the new run has saved)")
    assert folder_hash(out) == before


def test_overwrite_keeps_the_old_run_until_the_new_one_has_saved(corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    micro_run(corpus, out, steps=3)
    before = folder_hash(out)
    real_step = loop.train_step

    def crash_at_first_step(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_step", crash_at_first_step)
    with pytest.raises(KeyboardInterrupt, match=f"nothing was written, and the run that was in {out} is untouched"):
        micro_run(corpus, out, overwrite=True, seed=1)
    assert folder_hash(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "run"]
    monkeypatch.setattr(loop, "train_step", real_step)
    micro_run(corpus, out, overwrite=True, seed=1, steps=2)
    assert latest_step(out) == 2 and load_checkpoint(out, xp=np).config["train"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "run"]  # no staging folder left
    assert [r["step"] for r in runlog.read_metrics(out / "metrics.jsonl") if r["split"] == "train"] == [1, 2]


def test_resume_without_out_continues_in_the_resumed_folder(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    micro_run(corpus, tmp_path / "a", steps=2)
    result = micro_run(corpus, None, resume=str(tmp_path / "a"), steps=4)
    assert result["out"] == str(tmp_path / "a") and latest_step(tmp_path / "a") == 4
    assert not (tmp_path / "runs").exists()  # the default run folder was not touched
    # resuming from one step folder continues that run's folder, too
    micro_run(corpus, None, resume=str(tmp_path / "a" / "checkpoints" / "step-000004"), steps=5)
    assert latest_step(tmp_path / "a") == 5


def test_default_folders_never_mix_runs():
    assert RunConfig().out_dir == "runs/spanbert"
    assert RunConfig(overfit_batch=True).out_dir == "runs/overfit-batch"  # the README's sanity check
    assert RunConfig(resume="runs/x").out_dir is None  # continue in runs/x


def test_a_new_vocabulary_is_never_paired_with_old_weights(corpus, tmp_path, monkeypatch):
    """The tokenizer is written only inside a checkpoint: a run killed before its first save leaves
    no tokenizer.json that an older checkpoint could be read with."""
    out = tmp_path / "run"
    micro_run(corpus, out, steps=1)
    old_tokenizer = (resolve_checkpoint(out) / "tokenizer.json").read_text()
    other = write_corpus(tmp_path / "other.txt", seed=5, extra_words=("zebra", "quantum", "violin"))
    monkeypatch.setattr(loop, "train_step", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        micro_run(other, out, overwrite=True)
    assert (resolve_checkpoint(out) / "tokenizer.json").read_text() == old_tokenizer
    assert not (out / "tokenizer.json").exists()


# --------------------------------------------------------------------------- 4: a full disk


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_save_is_one_line_naming_the_folder(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    micro_run(corpus, out, steps=1)
    monkeypatch.setattr(checkpoint_module, "_write_fd", full_disk)
    message = cli_error(train.main, ["--preset", "micro", "--data", str(corpus), "--resume", str(out), "--steps", "3",
                                     "--batch-size", "2", "--seq-len", "16", "--save-every", "1"], capsys)
    assert message == (f"error: cannot write the checkpoint in {out / 'checkpoints'}: the disk is full (no space left "
                       "on device); free space there or choose another --out")
    assert latest_step(out) == 1 and load_checkpoint(out, xp=np).step == 1


def test_a_full_disk_while_logging_metrics_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train, "append_metrics", full_disk)
    message = cli_error(train.main, ["--preset", "micro", "--data", str(corpus), "--out", str(tmp_path / "r"),
                                     "--batch-size", "2", "--seq-len", "16", "--steps", "2"], capsys)
    assert message.startswith(f"error: cannot write {tmp_path / 'r'}: the disk is full")


def test_a_torn_last_metrics_line_is_dropped_on_resume(corpus, tmp_path):
    out = tmp_path / "run"
    micro_run(corpus, out, steps=2)
    metrics = out / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"split": "train", "step": 3, "lo')  # the disk filled mid-append
    micro_run(corpus, out, resume=str(out), steps=3)
    records = runlog.read_metrics(metrics)
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    metrics.write_text('{"split": "train", "step": 1}\nnot json\n{"split": "train", "step": 2}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is not a JSON record"):
        runlog.truncate_metrics(metrics, 2)  # damage that is not a torn tail is reported, not dropped


# --------------------------------------------------------------------------- 5: crashes in NumPy's words


def test_a_single_document_corpus_and_no_held_out_text_train(tmp_path):
    single = tmp_path / "one.txt"
    single.write_text("\n".join(f"the cat sat on mat number {i} ." for i in range(40)) + "\n", encoding="utf-8")
    result = micro_run(single, tmp_path / "a")
    assert result["last_eval"] == {} and any("no held-out text" in line for line in result["log"])
    result = micro_run(write_corpus(tmp_path / "c.txt"), tmp_path / "b", valid_fraction=0.0)
    assert result["last_eval"] == {} and latest_step(tmp_path / "b") == 2


def test_a_two_megabyte_line_without_spaces_trains_a_tokenizer_in_seconds():
    started = time.process_time()
    tok = train_tokenizer(["the cat sat on the mat ."] * 20 + ["x" * 2_000_000, "ab" * 500_000], 60)
    assert time.process_time() - started < 20  # 0.1: over 10 minutes, deaf to Ctrl-C
    assert tok.encode("the " + "x" * 150 + " cat").tokens[1] == "[UNK]"  # longer than 100 characters


def test_resume_refuses_a_fine_tuning_folder_and_other_data(corpus, tmp_path):
    out = tmp_path / "run"
    micro_run(corpus, out, steps=2)
    qa = tmp_path / "qa"
    save_checkpoint(qa, params=load_checkpoint(out, xp=np).params, step=5,
                    config={"model": micro_config().to_dict(), "finetune": {}}, files={"tokenizer.json": "{}"})
    with pytest.raises(ValueError, match="not a pretraining checkpoint .*written by fine-tuning"):
        micro_run(corpus, qa, resume=str(qa), steps=6)
    other = write_corpus(tmp_path / "other.txt", seed=3)
    with pytest.raises(ValueError, match="the training data differs"):
        micro_run(other, out, resume=str(out), steps=4)


# --------------------------------------------------------------------------- 6: misleading one-liners


def test_a_checkpoint_with_non_finite_weights_is_not_called_good(corpus, tmp_path):
    out = tmp_path / "run"
    micro_run(corpus, out, steps=1)
    good = load_checkpoint(out, xp=np)
    bad = {name: w * np.nan for name, w in good.params.items()}
    save_checkpoint(out, params=bad, optimizer_state=good.optimizer_state, step=2,
                    config=good.config, extra=good.extra, files={"tokenizer.json": (good.directory / "tokenizer.json").read_text()})
    with pytest.raises(ValueError, match=r"holds non-finite weights .*resume from an earlier checkpoint folder"):
        micro_run(corpus, out, resume=str(out), steps=4)


def test_ctrl_c_before_any_save_says_nothing_was_saved(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "prepare_data", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt, match=r"before the first checkpoint: \S+ holds nothing to resume"):
        micro_run(corpus, tmp_path / "run")


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_bad_tokenizer_in_a_checkpoint_never_advises_retraining_it(corpus, tmp_path, damage):
    out = tmp_path / "run"
    micro_run(corpus, out, steps=2)
    tokenizer = resolve_checkpoint(out) / "tokenizer.json"
    tokenizer.unlink() if damage == "delete" else tokenizer.write_text("{not json")
    with pytest.raises(ValueError) as error:
        micro_run(corpus, out, resume=str(out), steps=3)
    assert "retrain" not in str(error.value) and "another checkpoint" in str(error.value)
    assert "checkpoints/step-000001" in str(error.value) or damage == "corrupt"


# --------------------------------------------------------------------------- 10: rough edges


def test_progress_lines_show_the_training_loss_when_output_is_not_a_terminal(corpus, tmp_path):
    result = micro_run(corpus, tmp_path / "run", steps=4, print_every=2)
    progress = [line for line in result["log"] if line.startswith("step ") and "train loss" in line]
    assert [line.split(":")[0] for line in progress] == ["step 2/4", "step 4/4"]
    losses = result["train_losses"]
    assert f"train loss {np.mean(losses[2:4]):.3f}" in progress[1]  # the mean over the interval


def test_help_shows_defaults_without_rst_markup(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "(default: 16)" in text and "(default: 0.001)" in text and "(default: tiny)" in text


# --------------------------------------------------------------------------- 11: one vocabulary for compared runs


def test_runs_given_the_same_tokenizer_are_identical(corpus, tmp_path):
    first = micro_run(corpus, tmp_path / "a", dtype="float64")
    shared = resolve_checkpoint(tmp_path / "a") / "tokenizer.json"
    second = micro_run(corpus, tmp_path / "b", dtype="float64", tokenizer=str(shared))
    third = micro_run(corpus, tmp_path / "c", dtype="float64", tokenizer=str(tmp_path / "a"))  # a run folder works too
    assert first["train_losses"] == second["train_losses"] == third["train_losses"]
    for name in ("b", "c"):
        assert (resolve_checkpoint(tmp_path / name) / "tokenizer.json").read_text() == shared.read_text()
    with pytest.raises(ValueError, match="--tokenizer and --resume exclude each other"):
        micro_run(corpus, tmp_path / "a", resume=str(tmp_path / "a"), tokenizer=str(shared), steps=3)
