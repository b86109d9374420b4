"""Checkpoints and weight files (minispanbert/checkpoint.py): exact round trips, atomic writes,
clear errors, no pickle."""
import json
import os
import pickle
import struct

import numpy as np
import pytest
import safetensors.numpy

from minispanbert.checkpoint import (
    check_compatible,
    load_checkpoint,
    load_params,
    save_checkpoint,
    save_params,
)
from minispanbert.optim import adamw_init, adamw_update

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
    params, resumed_params = make_params(np.float32), make_params(np.float32)
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


def test_files_are_plain_safetensors_and_json_with_no_temporaries(tmp_path):
    params = make_params(np.float32)
    save(tmp_path, params, make_optimizer_state(params))
    save(tmp_path, params, make_optimizer_state(params), step=4)  # overwrite in place
    assert set(os.listdir(tmp_path)) == FILES
    header = read_safetensors_header(tmp_path / "model.safetensors")
    assert header["bert.encoder.layer.2.output.dense.weight"]["shape"] == [4, 3]
    assert header["bert.encoder.layer.2.output.dense.weight"]["dtype"] == "F32"
    optimizer_header = read_safetensors_header(tmp_path / "optimizer.safetensors")
    assert {"m.bert.embeddings.LayerNorm.weight", "v.bert.embeddings.LayerNorm.weight"} <= optimizer_header.keys()
    assert optimizer_header["__metadata__"]["t"] == "3"
    assert json.loads((tmp_path / "trainer_state.json").read_text())["step"] == 4


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
    real_save_file, calls = safetensors.numpy.save_file, []

    def fail_on_optimizer_file(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:  # the model file is already staged when the optimizer file fails
            raise RuntimeError("disk exploded")
        return real_save_file(*args, **kwargs)

    monkeypatch.setattr(safetensors.numpy, "save_file", fail_on_optimizer_file)
    new_params = make_params(np.float32, seed=9)
    with pytest.raises(RuntimeError, match="disk exploded"):
        save(tmp_path, new_params, make_optimizer_state(new_params), step=2)
    assert len(calls) == 2
    assert set(os.listdir(tmp_path)) == FILES  # temporaries removed
    loaded = load_checkpoint(tmp_path, xp=np)
    assert loaded.step == 1
    assert_same_arrays(loaded.params, old_params)


def test_failed_replace_keeps_previous_checkpoint(tmp_path, monkeypatch):
    old_params = make_params(np.float64, seed=0)
    save(tmp_path, old_params, make_optimizer_state(old_params), step=1)

    def refuse_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse_replace)
    with pytest.raises(ValueError, match="No space left on device"):
        save(tmp_path, make_params(np.float64, seed=9), None, step=2)
    monkeypatch.undo()
    assert set(os.listdir(tmp_path)) == FILES
    loaded = load_checkpoint(tmp_path, xp=np)
    assert loaded.step == 1
    assert_same_arrays(loaded.params, old_params)


def test_crash_between_replaces_is_detected(tmp_path, monkeypatch):
    params = make_params(np.float32)
    save(tmp_path, params, make_optimizer_state(params), step=1)
    real_replace, calls = os.replace, []

    def replace_only_first(source, destination):
        calls.append(destination)
        if len(calls) > 1:
            raise OSError(5, "Input/output error")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace_only_first)
    with pytest.raises(ValueError):
        save(tmp_path, make_params(np.float32, seed=9), make_optimizer_state(params), step=2)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="different saves"):
        load_checkpoint(tmp_path, xp=np)


def test_saving_without_optimizer_removes_stale_optimizer_file(tmp_path):
    params = make_params(np.float32)
    save(tmp_path, params, make_optimizer_state(params))
    save(tmp_path, params, None)
    assert set(os.listdir(tmp_path)) == FILES - {"optimizer.safetensors"}
    assert load_checkpoint(tmp_path, xp=np).optimizer_state is None


@pytest.mark.parametrize("missing", sorted(FILES))
def test_missing_file_is_named(tmp_path, missing):
    params = make_params(np.float32)
    save(tmp_path, params, make_optimizer_state(params))
    (tmp_path / missing).unlink()
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
    path = tmp_path / victim
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
