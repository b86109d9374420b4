"""Checkpoints: weights and optimizer moments in safetensors, trainer state in JSON, no pickle.

A checkpoint is a directory::

    model.safetensors      the parameters, keyed by their Hugging Face BERT names
    optimizer.safetensors  AdamW moments as "m.<name>" / "v.<name>", step count t in the metadata
    trainer_state.json     step, run config, extra (metrics, data position, ...), RNG state
    (tokenizer files)      written by the caller into the same directory

Arrays are written from host copies (``backend.to_numpy``) and loaded with ``xp.asarray``, so a
checkpoint saved on a GPU opens on a machine without CuPy and vice versa. safetensors and JSON
only hold data, so loading a checkpoint cannot run code (unlike pickle, ``torch.load`` or
``np.load(allow_pickle=True)``).

Crash safety: each file is written to a temporary file in the same directory, fsynced and moved
over the old one with ``os.replace`` (atomic on POSIX and Windows). All three temporary files are
written before the first replace, so a failure while serializing leaves the previous checkpoint
untouched. The three files also carry one random save id: if a crash falls between two replaces,
:func:`load_checkpoint` sees files from different saves and refuses them instead of resuming from
a silent mix.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from .atomic import temp_file
from .backend import to_numpy
from .optim import AdamWState

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 1

# safetensors metadata keys (the header holds str -> str only).
_SAVE_ID = "minispanbert.save_id"
# safetensors stores tensors sorted by name ("layer.10" before "layer.2"); we keep the caller's
# order so that loops over params (e.g. the sum inside clip_grad_norm) run in the same order after
# a resume, which makes a resumed run bit-identical to an uninterrupted one.
_PARAM_ORDER = "minispanbert.param_order"
_STEP_COUNT = "t"
_MOMENT_PREFIXES = ("m.", "v.")


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns; arrays live on the backend it was given."""

    params: dict
    optimizer_state: AdamWState | None
    step: int
    config: dict
    extra: dict
    rng_state: dict | None


def save_checkpoint(
    directory,
    *,
    params: dict,
    optimizer_state: AdamWState | None = None,
    step: int,
    config: dict,
    extra: dict | None = None,
    rng_state: dict | None = None,
) -> None:
    """Write a checkpoint into ``directory`` (created if missing), replacing any earlier one.

    ``config``, ``extra`` and ``rng_state`` must be JSON-serializable (tuples come back as lists).
    Saving without ``optimizer_state`` removes a stale ``optimizer.safetensors`` left by an
    earlier save. Raises ValueError when the directory cannot be created or written.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    save_id = uuid.uuid4().hex
    trainer_state = {
        "format_version": FORMAT_VERSION,
        "save_id": save_id,
        "step": int(step),
        "has_optimizer": optimizer_state is not None,
        "config": _require_json("config", config, allow_none=False),
        "extra": _require_json("extra", {} if extra is None else extra, allow_none=False),
        "rng_state": _require_json("rng_state", rng_state, allow_none=True),
    }
    directory = Path(directory)
    _make_writable_directory(directory)

    staged: dict[str, str] = {}  # final file name -> temporary file holding its new content
    try:
        try:
            staged[MODEL_FILE] = _stage_safetensors(
                directory, MODEL_FILE, _host_tensors(params, prefix=""), _model_metadata(params, save_id)
            )
            if optimizer_state is not None:
                moments = {
                    **_host_tensors(optimizer_state.m, prefix="m."),
                    **_host_tensors(optimizer_state.v, prefix="v."),
                }
                metadata = {_STEP_COUNT: str(int(optimizer_state.t)), _SAVE_ID: save_id}
                staged[OPTIMIZER_FILE] = _stage_safetensors(directory, OPTIMIZER_FILE, moments, metadata)
            staged[TRAINER_STATE_FILE] = _stage_text(
                directory, TRAINER_STATE_FILE, json.dumps(trainer_state, indent=2) + "\n"
            )
            # trainer_state.json last: it says whether an optimizer file belongs to this save.
            for name in (MODEL_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE):
                if name in staged:
                    os.replace(staged[name], directory / name)
                    del staged[name]
            if optimizer_state is None:
                (directory / OPTIMIZER_FILE).unlink(missing_ok=True)
            _fsync_directory(directory)
        except OSError as exc:
            raise ValueError(
                f"cannot write checkpoint in {directory}: {exc.strerror or exc}; "
                "choose a writable directory with free space (e.g. another --out)"
            ) from None
    finally:
        for temporary in staged.values():
            Path(temporary).unlink(missing_ok=True)


def load_checkpoint(directory, *, xp) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, arrays moved to ``xp``.

    Raises ValueError naming the file when the directory or a file is missing, unreadable or
    corrupt, or when the files come from different saves (a crash between two replaces).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"checkpoint directory {directory} does not exist: pass the directory a run saved into")
    state_path = directory / TRAINER_STATE_FILE
    trainer_state = _read_trainer_state(state_path)
    save_id = trainer_state["save_id"]

    model_path = directory / MODEL_FILE
    params, metadata = _read_safetensors(model_path, xp=xp)
    _check_save_id(model_path, metadata, save_id, state_path)

    optimizer_state = None
    if trainer_state["has_optimizer"]:
        optimizer_path = directory / OPTIMIZER_FILE
        moments, metadata = _read_safetensors(optimizer_path, xp=xp)
        _check_save_id(optimizer_path, metadata, save_id, state_path)
        optimizer_state = _moments_to_state(optimizer_path, moments, metadata, params)

    return Checkpoint(
        params=params,
        optimizer_state=optimizer_state,
        step=trainer_state["step"],
        config=trainer_state["config"],
        extra=trainer_state["extra"],
        rng_state=trainer_state["rng_state"],
    )


def check_compatible(saved_config: Mapping, config: Mapping, keys: Iterable[str]) -> None:
    """Raise ValueError listing every key in ``keys`` whose value differs between the two configs.

    Used on resume for settings that must not change (model shape, vocab size, ...). Values are
    compared after a JSON round trip, so a tuple in ``config`` equals the list it was saved as; a
    key absent from one side shows as <missing>.
    """
    mismatches = []
    for key in keys:
        saved, requested = saved_config.get(key, _MISSING), config.get(key, _MISSING)
        if _json_normalized(saved) != _json_normalized(requested):
            mismatches.append(f"{key}: saved {saved!r}, requested {requested!r}")
    if mismatches:
        raise ValueError(
            "checkpoint does not match the requested config (" + "; ".join(mismatches) + "): "
            "resume with the saved settings, or start a fresh run in a new output directory"
        )


def save_params(path, params: dict) -> None:
    """Write a bare weights file (safetensors, Hugging Face names) atomically, for export."""
    path = Path(path)
    _make_writable_directory(path.parent)
    temporary = None
    try:
        tensors = _host_tensors(params, prefix="")
        temporary = _stage_safetensors(path.parent, path.name, tensors, _model_metadata(params))
        os.replace(temporary, path)
        temporary = None
        _fsync_directory(path.parent)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}; choose a writable location") from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def load_params(path, *, xp) -> dict:
    """Read a safetensors weights file (ours, or any with matching names) onto ``xp``."""
    params, _ = _read_safetensors(Path(path), xp=xp)
    return params


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _json_normalized(value):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


def _require_json(field: str, value, *, allow_none: bool):
    if value is None and allow_none:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must be a dict, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{field} cannot be saved as JSON ({exc}): convert it to plain dicts, lists, str, int, float"
        ) from None
    return value


def _host_tensors(arrays: Mapping, *, prefix: str) -> dict:
    """Host, C-contiguous copies: safetensors writes the raw buffer and would scramble a
    transposed (non-contiguous) view."""
    tensors = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or not hasattr(array, "dtype"):
            raise ValueError(f"cannot save {name!r}: parameters must be a dict of str -> NumPy/CuPy array")
        tensors[prefix + name] = np.ascontiguousarray(to_numpy(array))
    return tensors


def _model_metadata(params: Mapping, save_id: str | None = None) -> dict:
    # "format": "pt" is what Hugging Face transformers checks before loading a safetensors file;
    # the layout of each tensor is then the model's business.
    metadata = {"format": "pt", _PARAM_ORDER: json.dumps(list(params))}
    if save_id is not None:
        metadata[_SAVE_ID] = save_id
    return metadata


def _make_writable_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cannot create directory {directory}: {exc.strerror or exc}; choose another location (e.g. --out)"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(
            f"directory {directory} is not writable: fix its permissions or choose another location (e.g. --out)"
        )


def _stage_safetensors(directory: Path, final_name: str, tensors: dict, metadata: dict) -> str:
    """Write ``tensors`` to a fsynced temporary file next to ``final_name``; return its path."""
    fd, temporary = temp_file(directory, final_name)
    os.close(fd)
    try:
        safetensors.numpy.save_file(tensors, temporary, metadata=metadata)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


def _stage_text(directory: Path, final_name: str, text: str) -> str:
    fd, temporary = temp_file(directory, final_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX); Windows cannot open a directory and needs no such step."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_safetensors(path: Path, *, xp) -> tuple[dict, dict]:
    if not path.is_file():
        raise ValueError(f"{path} is missing: the checkpoint is incomplete; pass a complete checkpoint directory")
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            names = list(handle.keys())
            saved_order = json.loads(metadata.get(_PARAM_ORDER, "null"))
            if isinstance(saved_order, list) and sorted(saved_order) == sorted(names):
                names = saved_order
            tensors = {name: xp.asarray(handle.get_tensor(name)) for name in names}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(
            f"{path} is corrupt or not a safetensors file ({exc}); re-save it or use another checkpoint"
        ) from None
    return tensors, metadata


def _read_trainer_state(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path} is missing: the checkpoint is incomplete; pass a complete checkpoint directory")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is corrupt ({exc}); use another checkpoint") from None
    required = ("format_version", "save_id", "step", "has_optimizer", "config", "extra", "rng_state")
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise ValueError(f"{path} is not a minispanbert trainer state (expected keys {', '.join(required)})")
    if state["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {state['format_version']}, this minispanbert reads {FORMAT_VERSION}"
        )
    return state


def _check_save_id(path: Path, metadata: dict, save_id: str, state_path: Path) -> None:
    if metadata.get(_SAVE_ID) != save_id:
        raise ValueError(
            f"{path} and {state_path} come from different saves (a save was interrupted): "
            "use an earlier checkpoint directory"
        )


def _moments_to_state(path: Path, moments: dict, metadata: dict, params: dict) -> AdamWState:
    try:
        step_count = int(metadata[_STEP_COUNT])
    except (KeyError, ValueError):
        raise ValueError(f"{path} has no valid step count 't' in its metadata; use another checkpoint") from None
    expected = {prefix + name for prefix in _MOMENT_PREFIXES for name in params}
    if moments.keys() != expected:
        raise ValueError(
            f"{path} does not hold one m. and one v. moment per parameter of {MODEL_FILE}; use another checkpoint"
        )
    return AdamWState(
        t=step_count,
        m={name: moments["m." + name] for name in params},
        v={name: moments["v." + name] for name in params},
    )
