"""Checkpoints: weights and optimizer moments in safetensors, trainer state in JSON, no pickle.

A run folder keeps its checkpoints in complete, immutable step folders and one pointer file::

    OUT/checkpoints/step-000200/   model.safetensors      the parameters, Hugging Face BERT names
                                   optimizer.safetensors  AdamW moments "m.<name>" / "v.<name>", t
                                   trainer_state.json     step, run config, extra, RNG state, file list
                                   tokenizer.json, ...    files the caller hands in (``files=``)
    OUT/checkpoints/step-000400/
    OUT/checkpoints/latest         the name of the newest complete step folder ("step-000400")

Crash safety (a Ctrl-C or a ``kill -9`` at any instant; a Ctrl-C is held back until the save has
finished, :func:`atomic.interrupts_deferred`): a save writes every file into a hidden
staging folder ``checkpoints/.step-000400.XXXX``, fsyncs them, renames the folder to
``step-000400`` (atomic) and only then repoints ``latest`` (a temp file moved over it with
``os.replace``, atomic). So ``latest`` always names a complete folder: the old one until the
instant the pointer moves, the new one after. The last ``keep`` step folders stay (older ones are
first renamed to a hidden name, then deleted, so a half-deleted folder is never mistaken for a
checkpoint); hidden leftovers of an interrupted save are removed by the next save. The weights,
the optimizer moments and the trainer state also carry one random save id, checked on load.

:func:`load_checkpoint` takes a run folder (it follows ``latest``), one step folder, or a flat
folder written by minispanbert 0.1 (the three files directly inside). Arrays are written from host
copies (``backend.to_numpy``) and loaded with ``xp.asarray``, so a checkpoint saved on a GPU opens
on a machine without CuPy and vice versa. safetensors and JSON only hold data, so loading a
checkpoint cannot run code (unlike pickle, ``torch.load`` or ``np.load(allow_pickle=True)``).
Every file is written with the ordinary umask permissions (0644), not 0600.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from minispanbert.backend import to_numpy
from minispanbert.engine.runs.atomic import describe_os_error, interrupts_deferred, temp_dir, temp_file
from minispanbert.optim import AdamWState

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
DEFAULT_KEEP = 3
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"step-(\d+)")

# safetensors metadata keys (the header holds str -> str only).
_SAVE_ID = "minispanbert.save_id"
# safetensors stores tensors sorted by name ("layer.10" before "layer.2"); we keep the caller's
# order so that loops over params (e.g. the sum inside clip_grad_norm) run in the same order after
# a resume, which makes a resumed run bit-identical to an uninterrupted one.
_PARAM_ORDER = "minispanbert.param_order"
_STEP_COUNT = "t"
VOCAB_SHA256 = "vocab_sha256"  # in a checkpoint's extra: vocab_fingerprint of the tokenizer saved beside the weights
_MOMENT_PREFIXES = ("m.", "v.")


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns; arrays live on the backend it was given.
    ``directory`` is the folder the files were read from (the step folder of a run)."""

    params: dict
    optimizer_state: AdamWState | None
    step: int
    config: dict
    extra: dict
    rng_state: dict | None
    directory: Path | None = None


def step_dir_name(step: int) -> str:
    return f"step-{int(step):06d}"


def save_checkpoint(
    directory,
    *,
    params: dict,
    optimizer_state: AdamWState | None = None,
    step: int,
    config: dict,
    extra: dict | None = None,
    rng_state: dict | None = None,
    files: Mapping[str, str | bytes] | None = None,
    keep: int = DEFAULT_KEEP,
) -> Path:
    """Save a complete checkpoint of the run in ``directory`` (created if missing) as
    ``directory/checkpoints/step-NNNNNN/`` and point ``checkpoints/latest`` at it; return that folder.

    ``files`` maps extra file names to their content (e.g. ``{"tokenizer.json": tok.to_str()}``):
    they become part of the same atomic save, so weights never pair with another save's vocabulary.
    ``config``, ``extra`` and ``rng_state`` must be JSON-serializable (tuples come back as lists).
    ``keep`` step folders are kept (the newest; folders of later steps, from a run this one was
    resumed behind, are left alone). Raises ValueError (one line naming the folder) when the folder
    cannot be created or written, or the disk is full; the previous checkpoint then stays current.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1, got {keep!r}")
    files = dict(files or {})
    reserved = {MODEL_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE}
    for name in files:
        if name in reserved or not name or "/" in name or name.startswith("."):
            raise ValueError(f"cannot store an extra checkpoint file named {name!r}")
    save_id = uuid.uuid4().hex
    trainer_state = {
        "format_version": FORMAT_VERSION,
        "save_id": save_id,
        "step": int(step),
        "has_optimizer": optimizer_state is not None,
        "files": sorted([MODEL_FILE, TRAINER_STATE_FILE, *files]
                        + ([OPTIMIZER_FILE] if optimizer_state is not None else [])),
        "config": _require_json("config", config, allow_none=False),
        "extra": _require_json("extra", {} if extra is None else extra, allow_none=False),
        "rng_state": _require_json("rng_state", rng_state, allow_none=True),
    }
    # Serialize in memory first: a bad array fails here, before anything touches the disk.
    contents = {MODEL_FILE: safetensors.numpy.save(_host_tensors(params, prefix=""), _model_metadata(params, save_id))}
    if optimizer_state is not None:
        moments = {**_host_tensors(optimizer_state.m, prefix="m."), **_host_tensors(optimizer_state.v, prefix="v.")}
        contents[OPTIMIZER_FILE] = safetensors.numpy.save(
            moments, {_STEP_COUNT: str(int(optimizer_state.t)), _SAVE_ID: save_id})
    contents.update(files)
    contents[TRAINER_STATE_FILE] = json.dumps(trainer_state, indent=2) + "\n"

    run_dir = Path(directory)
    checkpoints = run_dir / CHECKPOINTS_DIR
    _make_writable_directory(run_dir)
    _make_writable_directory(checkpoints)
    with interrupts_deferred():  # a Ctrl-C lands before or after the save, never inside it
        return _save_folder(run_dir, checkpoints, step_dir_name(step), contents, int(step), keep)


def _save_folder(run_dir: Path, checkpoints: Path, name: str, contents: dict, step: int, keep: int) -> Path:
    final = checkpoints / name
    staging = None
    try:
        clean_stale(run_dir)
        staging = temp_dir(checkpoints, final.name)
        for file_name, content in contents.items():
            _write_durably(staging / file_name, content)
        _fsync_directory(staging)
        if final.exists():  # the same step saved again: move the old folder aside first
            aside = temp_dir(checkpoints, "old-" + final.name)
            os.replace(final, aside / final.name)
            os.replace(staging, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(staging, final)
        staging = None
        _fsync_directory(checkpoints)
        try:
            _write_pointer(checkpoints, final.name)
        except OSError:
            if _pointer_name(checkpoints) != final.name:
                staging = final  # the pointer still names the previous save: remove the new folder again
            raise
        _prune(checkpoints, step, keep)
    except OSError as exc:
        raise ValueError(describe_os_error(exc, f"cannot write the checkpoint in {checkpoints}")) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return final


def _write_durably(path: Path, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    _write_fd(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), data)  # umask applies: 0644 as a rule


def _write_fd(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, fsync and close it (this is where a full disk raises ENOSPC)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_pointer(checkpoints: Path, name: str) -> None:
    fd, temporary = temp_file(checkpoints, LATEST_FILE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, checkpoints / LATEST_FILE)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(checkpoints)


def _step_folders(checkpoints: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every visible step folder, oldest first."""
    if not checkpoints.is_dir():
        return []
    found = []
    for entry in checkpoints.iterdir():
        match = _STEP_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _prune(checkpoints: Path, step: int, keep: int) -> None:
    older = [folder for s, folder in _step_folders(checkpoints) if s <= step]
    for folder in older[:-keep]:
        doomed = temp_dir(checkpoints, "del-" + folder.name)
        os.replace(folder, doomed / folder.name)  # hidden at once, so never read half-deleted
        shutil.rmtree(doomed, ignore_errors=True)


def clean_stale(run_dir) -> list[str]:
    """Remove what interrupted saves left in ``run_dir/checkpoints`` (hidden staging folders and
    temp files); a step folder that was moved aside and never replaced is moved back. Returns the
    names removed."""
    checkpoints = Path(run_dir) / CHECKPOINTS_DIR
    removed = []
    if not checkpoints.is_dir():
        return removed
    for entry in sorted(checkpoints.iterdir()):
        if not entry.name.startswith("."):
            continue
        if entry.name.startswith(".old-step-") and entry.is_dir():
            for inner in entry.iterdir():  # the folder a same-step save had moved aside
                if _STEP_DIR.fullmatch(inner.name) and not (checkpoints / inner.name).exists():
                    os.replace(inner, checkpoints / inner.name)
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def resolve_checkpoint(path) -> Path:
    """The folder holding the checkpoint files that :func:`load_checkpoint` reads for ``path``: a
    step folder or flat checkpoint folder as given, or a run folder's ``latest`` step folder.

    A pointer that is missing or names a folder that is gone (a kill between the folder's rename
    and the pointer's) falls back to the newest step folder. ValueError, naming the folder and what
    to do, when there is no checkpoint.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint folder {path} does not exist: pass the --out folder of a run "
                         "(or one of its checkpoints/step-* folders)")
    if (path / TRAINER_STATE_FILE).exists() or _STEP_DIR.fullmatch(path.name):
        return path
    checkpoints = path / CHECKPOINTS_DIR
    if not checkpoints.is_dir():
        raise ValueError(f"{path} holds no checkpoint (no {CHECKPOINTS_DIR}/ folder, no {TRAINER_STATE_FILE}): "
                         "pass the --out folder of a run that saved at least once")
    name = _pointer_name(checkpoints)
    if _STEP_DIR.fullmatch(name) and (checkpoints / name).is_dir():
        return checkpoints / name
    folders = _step_folders(checkpoints)
    if not folders:
        raise ValueError(f"{path} holds no complete checkpoint (the run stopped before its first save): "
                         "start a fresh run, or pass another checkpoint folder")
    return folders[-1][1]


def _pointer_name(checkpoints: Path) -> str:
    try:
        return (checkpoints / LATEST_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def latest_step(run_dir) -> int | None:
    """The step of the checkpoint that ``--resume run_dir`` would continue from, read from the
    disk (so a message about it is true whatever happened); None when there is none or it is
    unreadable."""
    try:
        state = _read_trainer_state(resolve_checkpoint(run_dir) / TRAINER_STATE_FILE)
    except ValueError:
        return None
    return int(state["step"])


def load_checkpoint(directory, *, xp) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, arrays moved to ``xp``.

    ``directory``: a run folder (its ``latest`` checkpoint), a step folder, or a flat 0.1 folder.
    Raises ValueError naming the file when a file is missing, unreadable or corrupt, or when the
    files come from different saves; the message names an earlier complete checkpoint if any.
    """
    directory = resolve_checkpoint(directory)
    try:
        return _load_folder(directory, xp=xp)
    except ValueError as exc:
        raise ValueError(f"{exc}{_earlier_hint(directory)}") from None


def _earlier_hint(folder: Path) -> str:
    match = _STEP_DIR.fullmatch(folder.name)
    if not match:
        return ""
    earlier = [f for s, f in _step_folders(folder.parent) if s < int(match.group(1))]
    return f" (an earlier checkpoint is {earlier[-1]})" if earlier else ""


def _load_folder(directory: Path, *, xp) -> Checkpoint:
    state_path = directory / TRAINER_STATE_FILE
    trainer_state = _read_trainer_state(state_path)
    save_id = trainer_state["save_id"]
    for name in trainer_state.get("files", []):
        if not (directory / name).is_file():
            raise ValueError(f"{directory / name} is missing: the checkpoint is incomplete; use another checkpoint")

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
        directory=directory,
    )


def data_fingerprint(arrays: Iterable) -> str:
    """sha256 of integer arrays (a run's training token ids): ``--resume`` refuses other data."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.asarray(array, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def vocab_fingerprint(tokenizer) -> str:
    """sha256 of a tokenizer's vocabulary (token -> id): saved with the weights, which fit only it."""
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab(with_added_tokens=True).items())).encode()).hexdigest()


def check_vocab(saved: Mapping, tokenizer, where) -> None:
    """One-line ValueError when ``tokenizer`` is not the one whose fingerprint ``saved`` (a
    checkpoint's extra) records; checkpoints from before fingerprints pass."""
    expected = saved.get(VOCAB_SHA256)
    if expected is not None and expected != vocab_fingerprint(tokenizer):
        raise ValueError(f"{where} is not the tokenizer these weights were trained with (its vocabulary differs): "
                         "use the tokenizer.json saved with the checkpoint")


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
    data = safetensors.numpy.save(_host_tensors(params, prefix=""), _model_metadata(params))
    temporary = None
    try:
        fd, temporary = temp_file(path.parent, path.name)
        _write_fd(fd, data)
        os.replace(temporary, path)
        temporary = None
        _fsync_directory(path.parent)
    except OSError as exc:
        raise ValueError(describe_os_error(exc, f"cannot write {path}")) from None
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
        json.dumps(value, allow_nan=False)
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
        raise ValueError(describe_os_error(exc, f"cannot create the folder {directory}")) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(
            f"folder {directory} is not writable: fix its permissions or choose another location (e.g. --out)"
        )


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX); Windows cannot open a directory and needs no such step."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_tensors(params: Mapping, expected: Mapping, path) -> None:
    """``params`` must hold exactly the ``expected`` names with their shapes (name -> shape); else one
    line naming ``path`` (the weights file) and the first tensor that differs."""
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        which = f"lacks {missing[0]!r}" if missing else f"holds {extra[0]!r}, which this model has not"
        raise ValueError(f"{path} {which} ({len(missing)} missing, {len(extra)} unexpected tensors): the weights "
                         "belong to another model config; use the checkpoint with its own config")
    for name, shape in expected.items():
        if tuple(params[name].shape) != tuple(shape):
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(params[name].shape)} but the model config "
                             f"implies {tuple(shape)}: the weights belong to another model; use another checkpoint")


def check_weight(array, what: str, *, buffer: bool = False) -> None:
    """A host array read from a weights file must be floating point (integers would be cast to
    truncated garbage) and finite (NaN or inf: the run diverged before it saved); ``buffer``
    allows an integer buffer such as old files' position_ids. One-line ValueError naming ``what``."""
    if array.dtype.kind != "f":
        if buffer:
            return
        raise ValueError(f"{what} has dtype {array.dtype}, not a float type: these are not model weights (or were "
                         "re-saved wrongly); use the original file")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds NaN or inf: the run diverged before this save; use an earlier checkpoint")


def _read_safetensors(path: Path, *, xp) -> tuple[dict, dict]:
    if not path.is_file():
        raise ValueError(f"{path} is missing: the checkpoint is incomplete; use another checkpoint")
    try:
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            names = list(handle.keys())
            saved_order = json.loads(metadata.get(_PARAM_ORDER, "null"))
            if isinstance(saved_order, list) and sorted(saved_order) == sorted(names):
                names = saved_order
            arrays = {name: handle.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is corrupt or not a safetensors file ({reason}); use another checkpoint") from None
    for name, array in arrays.items():
        check_weight(array, f"{path}: tensor {name!r}")
    return {name: xp.asarray(array) for name, array in arrays.items()}, metadata


def _read_trainer_state(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path} is missing: the checkpoint is incomplete; use another checkpoint")
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
            f"{path} and {state_path} come from different saves (a save was interrupted): use another checkpoint"
        )


def _moments_to_state(path: Path, moments: dict, metadata: dict, params: dict) -> AdamWState:
    try:
        step_count = int(metadata[_STEP_COUNT])
    except (KeyError, ValueError):
        raise ValueError(f"{path} has no valid step count 't' in its metadata; use another checkpoint") from None
    expected = {prefix + name for prefix in _MOMENT_PREFIXES for name in params}
    orphans = sorted({name.split(".", 1)[1] for name in moments.keys() - expected if "." in name} - set(params))
    if orphans:  # the optimizer has moments for a weight the model file lacks: the model file is at fault
        raise ValueError(f"{path.parent / MODEL_FILE} lacks {orphans[0]!r}, which {path.name} holds moments for: "
                         "the weights file is damaged or from another save; use another checkpoint")
    unmatched = sorted(name for name in params if f"m.{name}" not in moments or f"v.{name}" not in moments)
    if unmatched:
        raise ValueError(f"{path.parent / MODEL_FILE} holds {unmatched[0]!r} but {path.name} has no moments for it: "
                         "one of the two files is damaged or from another save; use another checkpoint")
    if moments.keys() != expected:
        raise ValueError(
            f"{path} does not hold one m. and one v. moment per parameter of {MODEL_FILE}; use another checkpoint"
        )
    return AdamWState(
        t=step_count,
        m={name: moments["m." + name] for name in params},
        v={name: moments["v." + name] for name in params},
    )
