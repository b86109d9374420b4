"""Checkpoints and weight files (minispanbert/engine/runs/checkpoint.py): exact round trips, atomic writes,
clear errors, no pickle."""
import errno
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from minispanbert.engine.runs.checkpoint import (
    check_compatible,
    clean_stale,
    latest_step,
    load_checkpoint,
    load_params,
    save_checkpoint,
    save_params,
)
from minispanbert.optim import adamw_init, adamw_update

from crash_points import run_with_a_crash

FILES = {"model.safetensors", "optimizer.safetensors", "trainer_state.json"}


def make_params(dtype, seed=0):
    """BERT-named parameters whose insertion order differs from sorted order (layer.10 after
    layer.2), one of them a transposed, non-contiguous view."""
    rng = np.random.default_rng(seed)
    params = {
        "bert.embeddings.word_embeddings.weight": rng.standard_normal((7, 4)).astype(dtype),
        "bert.encoder.layer.2.output.dense.weight": rng.standard_normal((3, 4)).astype(dtype).T,
        "bert.encoder.layer.10.output.dense.bias": rng.standard_normal(3).astype(dtype),
        "bert.embeddings.LayerNorm.weight": np.ones(4, dtype),
    }
    assert not params["bert.encoder.layer.2.output.dense.weight"].flags.c_contiguous
    return params


def make_optimizer_state(params, seed=1):
    rng = np.random.default_rng(seed)
    state = adamw_init(params, xp=np)
    for _ in range(3):
        grads = {name: rng.standard_normal(w.shape).astype(w.dtype) for name, w in params.items()}
        adamw_update(params, grads, state, lr=1e-2, decay_mask=None, xp=np)
    return state


def save(directory, params, state, step=3, **overrides):
    arguments = {"config": {"hidden_size": 4, "vocab_size": 7, "dims": [1, 2]}, "extra": {"best_loss": 1.5}}
    arguments.update(overrides)
    save_checkpoint(directory, params=params, optimizer_state=state, step=step, **arguments)


def assert_same_arrays(actual: dict, expected: dict):
    assert list(actual) == list(expected)  # same names, same order
    for name in expected:
        assert actual[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    params = make_params(dtype)
    state = make_optimizer_state(params)
    generator = np.random.default_rng(123)
    generator.random(5)
    save(tmp_path / "ckpt", params, state, step=42, rng_state=generator.bit_generator.state)

    loaded = load_checkpoint(tmp_path / "ckpt", xp=np)
    assert_same_arrays(loaded.params, params)
    assert loaded.optimizer_state.t == 3
    assert_same_arrays(loaded.optimizer_state.m, state.m)
    assert_same_arrays(loaded.optimizer_state.v, state.v)
    assert loaded.step == 42
    assert loaded.config == {"hidden_size": 4, "vocab_size": 7, "dims": [1, 2]}
    assert loaded.extra == {"best_loss": 1.5}
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded.rng_state
    np.testing.assert_array_equal(restored.random(4), generator.random(4))


def test_resumed_training_is_bit_identical(tmp_path):
    # Contiguous, as a model's parameters always are: AdamW takes its fused numba path only for
    # contiguous arrays (optim.adamw_update), and that path rounds differently in the last bit from
    # the plain one that a transposed view would take before the round trip (contiguous after it).
    contiguous = lambda params: {name: np.ascontiguousarray(w) for name, w in params.items()}  # noqa: E731
    params, resumed_params = contiguous(make_params(np.float32)), contiguous(make_params(np.float32))
    state, resumed_state = adamw_init(params, xp=np), adamw_init(resumed_params, xp=np)
    rng = np.random.default_rng(5)
    all_grads = [{n: rng.standard_normal(w.shape).astype(np.float32) for n, w in params.items()} for _ in range(4)]
    for grads in all_grads:
        adamw_update(params, grads, state, lr=1e-2, decay_mask=None, xp=np)
    for grads in all_grads[:2]:
        adamw_update(resumed_params, grads, resumed_state, lr=1e-2, decay_mask=None, xp=np)
    save(tmp_path, resumed_params, resumed_state, step=2)
    loaded = load_checkpoint(tmp_path, xp=np)
    for grads in all_grads[2:]:
        adamw_update(loaded.params, grads, loaded.optimizer_state, lr=1e-2, decay_mask=None, xp=np)
    assert_same_arrays(loaded.params, params)


def step_dir(run, step):
    return run / "checkpoints" / f"step-{step:06d}"


def test_files_are_plain_safetensors_and_json_with_no_temporaries(tmp_path):
    params = make_params(np.float32)
    old_umask = os.umask(0o022)
    try:
        save(tmp_path, params, make_optimizer_state(params))
        save(tmp_path, params, make_optimizer_state(params), step=4)
    finally:
        os.umask(old_umask)
    assert os.listdir(tmp_path) == ["checkpoints"]
    assert set(os.listdir(tmp_path / "checkpoints")) == {"step-000003", "step-000004", "latest"}
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-000004\n"
    folder = step_dir(tmp_path, 4)
    assert set(os.listdir(folder)) == FILES
    for name in FILES:  # the ordinary 0644, not tempfile's (or safetensors.save_file's) 0600
        assert (folder / name).stat().st_mode & 0o777 == 0o644, name
    assert (folder.stat().st_mode & 0o777) == 0o755
    header = read_safetensors_header(folder / "model.safetensors")
    assert header["bert.encoder.layer.2.output.dense.weight"]["shape"] == [4, 3]
    assert header["bert.encoder.layer.2.output.dense.weight"]["dtype"] == "F32"
    optimizer_header = read_safetensors_header(folder / "optimizer.safetensors")
    assert {"m.bert.embeddings.LayerNorm.weight", "v.bert.embeddings.LayerNorm.weight"} <= optimizer_header.keys()
    assert optimizer_header["__metadata__"]["t"] == "3"
    assert json.loads((folder / "trainer_state.json").read_text())["step"] == 4
    assert load_checkpoint(tmp_path, xp=np).step == 4
    assert load_checkpoint(step_dir(tmp_path, 3), xp=np).step == 3


def test_extra_files_are_part_of_the_save_and_the_last_k_are_kept(tmp_path):
    params = make_params(np.float32)
    for step in range(1, 6):
        saved = save_checkpoint(tmp_path, params=params, step=step, config={}, files={"tokenizer.json": f"tok {step}"},
                                keep=2)
        assert saved == step_dir(tmp_path, step)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step-000004", "step-000005"]
    loaded = load_checkpoint(tmp_path, xp=np)
    assert loaded.directory == step_dir(tmp_path, 5)
    assert (loaded.directory / "tokenizer.json").read_text() == "tok 5"
    (loaded.directory / "tokenizer.json").unlink()  # a file the save listed is gone: incomplete, and said so
    with pytest.raises(ValueError, match=r"tokenizer.json is missing.*an earlier checkpoint is \S+step-000004"):
        load_checkpoint(tmp_path, xp=np)


def test_a_legacy_flat_checkpoint_folder_still_loads(tmp_path):
    params = make_params(np.float32)
    save(tmp_path / "run", params, make_optimizer_state(params), step=7)
    flat = tmp_path / "flat"
    step_dir(tmp_path / "run", 7).rename(flat)  # model/optimizer/trainer_state directly inside, as 0.1 wrote them
    loaded = load_checkpoint(flat, xp=np)
    assert loaded.step == 7 and loaded.directory == flat
    assert_same_arrays(loaded.params, params)


def test_saving_the_same_step_again_replaces_it_whole(tmp_path):
    save(tmp_path, make_params(np.float32, seed=0), None, step=5)
    new = make_params(np.float32, seed=1)
    save(tmp_path, new, None, step=5)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step-000005"]
    assert_same_arrays(load_checkpoint(tmp_path, xp=np).params, new)


def test_leftovers_of_interrupted_saves_are_cleaned_and_a_moved_aside_folder_is_put_back(tmp_path):
    params = make_params(np.float32)
    save(tmp_path, params, None, step=1)
    save(tmp_path, params, None, step=2)
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / ".step-000003.abcd").mkdir()  # a staging folder of a killed save
    (checkpoints / ".step-000003.abcd" / "model.safetensors").write_bytes(b"half")
    (checkpoints / ".latest.x.part").write_text("step-000003")  # a pointer temp file
    aside = checkpoints / ".old-step-000002.efgh"  # killed while re-saving step 2 ...
    aside.mkdir()
    (checkpoints / "step-000002").rename(aside / "step-000002")  # ... after moving the old folder aside
    assert load_checkpoint(tmp_path, xp=np).step == 1  # the pointer's folder is gone: the newest complete one
    assert clean_stale(tmp_path) == [".latest.x.part", ".old-step-000002.efgh", ".step-000003.abcd"]
    assert sorted(os.listdir(checkpoints)) == ["latest", "step-000001", "step-000002"]
    assert load_checkpoint(tmp_path, xp=np).step == 2


def test_a_run_folder_without_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ValueError, match="stopped before its first save"):
        load_checkpoint(tmp_path, xp=np)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        load_checkpoint(tmp_path / "checkpoints", xp=np)
    assert latest_step(tmp_path) is None


def read_safetensors_header(path):
    """The header parsed by hand (8-byte little-endian length, then JSON), to check the file
    format independently of the safetensors library."""
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + header_length])


def test_no_pickle_is_used(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    params = make_params(np.float64)
    save(tmp_path, params, make_optimizer_state(params))
    save_params(tmp_path / "weights.safetensors", params)
    assert_same_arrays(load_checkpoint(tmp_path, xp=np).params, params)
    assert_same_arrays(load_params(tmp_path / "weights.safetensors", xp=np), params)


def test_failed_serialization_keeps_previous_checkpoint(tmp_path, monkeypatch):
    old_params = make_params(np.float32, seed=0)
    save(tmp_path, old_params, make_optimizer_state(old_params), step=1)
    real_save, calls = safetensors.numpy.save, []

    def fail_on_optimizer_file(*args, **kwargs):
        calls.append(None)
        if len(calls) == 2:  # the model file is already serialized when the optimizer file fails
            raise RuntimeError("disk exploded")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(safetensors.numpy, "save", fail_on_optimizer_file)
    new_params = make_params(np.float32, seed=9)
    with pytest.raises(RuntimeError, match="disk exploded"):
        save(tmp_path, new_params, make_optimizer_state(new_params), step=2)
    assert len(calls) == 2
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step-000001"]  # nothing staged, nothing left
    loaded = load_checkpoint(tmp_path, xp=np)
    assert loaded.step == 1
    assert_same_arrays(loaded.params, old_params)


@pytest.mark.parametrize("failing", ["write", "replace"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch, failing):
    old_params = make_params(np.float64, seed=0)
    save(tmp_path, old_params, make_optimizer_state(old_params), step=1)
    real = getattr(os, failing)
    calls = []

    def full(*args):
        calls.append(None)
        if len(calls) >= 2:  # the first call succeeds, a later one finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(os, failing, full)
    with pytest.raises(ValueError) as error:
        new_params = make_params(np.float64, seed=9)
        save(tmp_path, new_params, make_optimizer_state(new_params), step=2)
    monkeypatch.undo()
    message = str(error.value)
    assert "\n" not in message and "disk is full" in message and str(tmp_path / "checkpoints") in message
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step-000001"]
    loaded = load_checkpoint(tmp_path, xp=np)
    assert loaded.step == 1
    assert_same_arrays(loaded.params, old_params)


def test_files_from_different_saves_are_detected(tmp_path):
    params = make_params(np.float32)
    save(tmp_path, params, make_optimizer_state(params), step=1)
    save(tmp_path, params, make_optimizer_state(params), step=2)
    mixed = step_dir(tmp_path, 2)
    (mixed / "model.safetensors").write_bytes((step_dir(tmp_path, 1) / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="different saves.*an earlier checkpoint is"):
        load_checkpoint(tmp_path, xp=np)


def test_saving_without_optimizer_writes_no_optimizer_file(tmp_path):
    params = make_params(np.float32)
    save(tmp_path, params, make_optimizer_state(params))
    save(tmp_path, params, None, step=4)
    assert set(os.listdir(step_dir(tmp_path, 4))) == FILES - {"optimizer.safetensors"}
    assert load_checkpoint(tmp_path, xp=np).optimizer_state is None


@pytest.mark.parametrize("missing", sorted(FILES))
def test_missing_file_is_named(tmp_path, missing):
    params = make_params(np.float32)
    save(tmp_path, params, make_optimizer_state(params))
    (step_dir(tmp_path, 3) / missing).unlink()
    with pytest.raises(ValueError, match=missing):
        load_checkpoint(tmp_path, xp=np)


def test_missing_directory_and_weights_file_are_named(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere", xp=np)
    with pytest.raises(ValueError, match="weights.safetensors"):
        load_params(tmp_path / "weights.safetensors", xp=np)


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.safetensors", "trainer_state.json"])
def test_corrupt_file_is_named(tmp_path, victim):
    params = make_params(np.float32)
    save(tmp_path, params, make_optimizer_state(params))
    path = step_dir(tmp_path, 3) / victim
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    with pytest.raises(ValueError, match=victim):
        load_checkpoint(tmp_path, xp=np)


def test_unwritable_location_is_a_value_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    params = make_params(np.float32)
    with pytest.raises(ValueError, match="a_file"):
        save(blocker / "ckpt", params, None)
    with pytest.raises(ValueError, match="a_file"):
        save(blocker, params, None)
    with pytest.raises(ValueError, match="a_file"):
        save_params(blocker / "weights.safetensors", params)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_directory_is_a_value_error(tmp_path):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            save(read_only, make_params(np.float32), None)
    finally:
        read_only.chmod(0o700)


def test_unserializable_config_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="config"):
        save(tmp_path, make_params(np.float32), None, config={"dtype": np.float32})
    assert os.listdir(tmp_path) == []


def test_save_params_round_trip_and_atomic(tmp_path):
    params = make_params(np.float32)
    save_params(tmp_path / "export" / "weights.safetensors", params)
    assert os.listdir(tmp_path / "export") == ["weights.safetensors"]
    assert_same_arrays(load_params(tmp_path / "export" / "weights.safetensors", xp=np), params)


def test_load_params_reads_foreign_files_in_file_order(tmp_path):
    tensors = {"b": np.arange(3, dtype=np.float32), "a": np.eye(2)}
    safetensors.numpy.save_file(tensors, tmp_path / "hf.safetensors")
    loaded = load_params(tmp_path / "hf.safetensors", xp=np)
    assert sorted(loaded) == ["a", "b"]
    np.testing.assert_array_equal(loaded["a"], np.eye(2))


def test_check_compatible_lists_each_mismatch():
    saved = {"hidden_size": 64, "vocab_size": 1000, "num_layers": 2, "dims": [1, 2]}
    requested = {"hidden_size": 128, "vocab_size": 1000, "num_layers": 4, "dims": (1, 2)}
    check_compatible(saved, requested, ["vocab_size", "dims"])  # tuple (1, 2) equals saved list
    with pytest.raises(ValueError) as error:
        check_compatible(saved, requested, ["hidden_size", "vocab_size", "num_layers", "max_len"])
    message = str(error.value)
    assert "hidden_size: saved 64, requested 128" in message
    assert "num_layers: saved 2, requested 4" in message
    assert "vocab_size" not in message
    assert "max_len: saved <missing>, requested <missing>" not in message  # absent on both sides: equal
    check_compatible(saved, {**saved, "max_len": 8}, ["vocab_size"])
    with pytest.raises(ValueError, match="max_len: saved <missing>, requested 8"):
        check_compatible(saved, {**saved, "max_len": 8}, ["max_len"])


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_run_written_before_the_restructure_resumes_and_exports(tmp_path, monkeypatch):
    """tests/fixtures/run-0.2.0 is a 4-step micro run written by minispanbert 0.2.0 (before the
    package moved into core / family / finetune / interop / engine). It still resumes: the two
    further steps and the evaluation give what 0.2.0 itself gave when it resumed the same folder
    (run-0.2.0-resumed.json, float32, so to float32 rounding across CPUs), and it exports as a
    Hugging Face folder. 0.2.0 drew its dropout masks from NumPy's PCG64 stream (seed, step, 3); that
    generator is passed in place of today's keyed one (minispanbert/keyed_random.py), so everything
    else is compared."""
    from minispanbert import config
    from minispanbert import train as loop
    from minispanbert.engine.runs.runlog import read_metrics
    from minispanbert.engine.trainer import main as train_main
    from minispanbert.interop.export_hf import main as export_main

    from micro_runs import micro_config, write_corpus

    monkeypatch.setitem(config.PRESETS, "micro", micro_config())
    monkeypatch.setattr(loop, "dropout_random", lambda seed, step, xp: np.random.default_rng([seed, step, 3]))
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run-0.2.0", run)
    corpus = write_corpus(tmp_path / "corpus.txt")  # the corpus the run was trained on (its sha256 is checked)
    train_main(["--preset", "micro", "--batch-size", "2", "--seq-len", "16", "--eval-batches", "1", "--data",
                str(corpus), "--resume", str(run), "--steps", "6", "--save-every", "6", "--eval-every", "6",
                "--threads", "1"])
    expected = json.loads((FIXTURES / "run-0.2.0-resumed.json").read_text())["records"]
    got = [r for r in read_metrics(run / "metrics.jsonl") if r["step"] > 4]
    assert [(r["split"], r["step"]) for r in got] == [(r["split"], r["step"]) for r in expected]
    for g, e in zip(got, expected):
        for key, value in e.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (e["step"], key)
            else:
                assert g[key] == value, (e["step"], key)
    export_main(["--checkpoint", str(FIXTURES / "run-0.2.0"), "--out", str(tmp_path / "hf")])
    assert (tmp_path / "hf" / "config.json").exists() and (tmp_path / "hf" / "model.safetensors").exists()


def test_a_save_killed_after_any_of_its_writes_leaves_the_previous_or_the_new_checkpoint(tmp_path):
    """The promise of a save (a checkpoint appears complete or not at all; `latest` never names an
    incomplete folder): a run folder holding step 1, then a save of step 2 killed just before each of
    its changes to the disk in turn (tests/crash_points.py). Every time, the folder loads, as step 1 or step 2, with exactly the
    arrays saved at that step, and the next save succeeds and cleans up."""
    old_params, new_params = make_params(np.float32, seed=1), make_params(np.float32, seed=2)
    old_state, new_state = make_optimizer_state(old_params), make_optimizer_state(new_params)
    changes = run_with_a_crash(lambda: save(tmp_path / "probe", new_params, new_state, step=2), crash_at=0)
    assert len(changes) >= 5  # three files, the folder's rename, the pointer's
    for k in range(1, len(changes) + 1):
        run = tmp_path / f"run{k}"
        save(run, old_params, old_state, step=1)
        run_with_a_crash(lambda: save(run, new_params, new_state, step=2), crash_at=k)
        loaded = load_checkpoint(run, xp=np)
        assert loaded.step in (1, 2), k
        assert_same_arrays(loaded.params, old_params if loaded.step == 1 else new_params)
        save(run, new_params, new_state, step=3)  # the next save works and removes what the kill left
        assert load_checkpoint(run, xp=np).step == 3
        assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], k
