"""Atomic file writes, shared by every writer in the package (checkpoints, tokenizer, downloads,
predictions, plots): write a hidden temporary next to the target, then ``os.replace`` it.

``os.replace`` within one file system is atomic, so a reader (or a crashed run) sees either the old
file or the complete new one, never a half-written file. ``tempfile`` creates files 0600 and folders
0700; we give them the ordinary umask-based permissions first, so the final files are not private.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

CHUNK_BYTES = 1 << 20  # read, hash and copy 1 MiB at a time


@contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C (SIGINT) until the block has finished, then deliver it: a multi-file save
    is never abandoned halfway by a KeyboardInterrupt raised at an arbitrary line (in the main
    thread; elsewhere, or without signal support, the block runs unprotected). A kill -9 cannot be
    held back: the writers are atomic for that."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``), so that a
    crash sees either the old pair or the swapped pair. False where the system or file system does
    not offer it (the caller then falls back to two renames)."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))


def describe_os_error(exc: OSError, what: str, where: str = "another --out") -> str:
    """One line for a failed write: ``what`` (naming the file or folder), why, and what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{what}: the disk is full (no space left on device); free space there or choose {where}"
    return f"{what}: {exc.strerror or exc}; choose a writable folder with free space (e.g. {where})"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_file(directory: Path, label: str) -> tuple[int, Path]:
    """Open a hidden temporary file ``directory/.label.XXXX.part`` -> (file descriptor, path)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{label}.", suffix=".part")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, Path(tmp)


def temp_dir(directory: Path, label: str) -> Path:
    """Create a hidden staging folder ``directory/.label.XXXX``."""
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{label}."))
    staging.chmod(0o777 & ~_umask())
    return staging


def check_output_file(path, flag: str = "--out", *, make_parent: bool = False) -> Path:
    """Before any work: ``path`` must be a file that can be (re)written, else a one-line ValueError
    naming the problem and the fix (a folder, a device such as /dev/full, a missing or read-only
    parent folder). ``make_parent`` creates a missing parent folder instead of refusing it."""
    path = Path(path)
    if make_parent and not path.parent.exists():
        try:
            path.parent.mkdir(parents=True)
        except OSError as exc:
            raise ValueError(f"{flag} {path}: cannot create the folder {path.parent} ({exc.strerror}): choose "
                             f"another {flag}") from None
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: name a file to write, e.g. {path / 'predictions.json'}")
    if path.exists() and not path.is_file():
        raise ValueError(f"{flag} {path} is not a regular file (a device or a pipe): name a file to write")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: the folder {parent} does not exist: create it or choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: the folder {parent} is not writable: choose another {flag}")
    return path


def _refuse_non_regular(path: Path) -> None:
    """An atomic write replaces its target: never a folder, a device or a pipe (as root, replacing
    /dev/full would destroy the device node)."""
    if path.exists() and not path.is_file():
        raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path)) if path.is_dir() else \
            OSError(errno.EINVAL, "not a regular file (a device or a pipe)", str(path))


@contextmanager
def folder_lock(folder):
    """Hold an advisory lock (``fcntl.flock`` on the hidden file ``.NAME.lock`` beside ``folder``)
    for the block: a second command writing the same folder is refused with one line naming the
    holder's PID. The OS drops the lock when its process ends, however it ends; the lock file is
    removed on release (a killed holder's is reused and removed by the next one). Acquiring checks
    that the locked file is still the one at the path, since a releasing holder may remove it
    between our open and our lock."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.parent / f".{folder.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(f"{folder} is being written by another command (PID {holder}): wait for it to end, or "
                             "choose another folder") from None
        try:
            current = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # removed by its releasing holder: lock the new one
    try:
        os.pwrite(fd, f"{os.getpid():>10}\n".encode(), 0)  # fixed width: overwrites a killed holder's PID
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # while still holding it
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    _refuse_non_regular(path)
    fd, tmp = temp_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path`` for a writer that wants a file name (e.g.
    matplotlib's ``savefig``); it replaces ``path`` only if the block finishes without error."""
    path = Path(path)
    _refuse_non_regular(path)
    fd, tmp = temp_file(path.parent, path.name)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_atomic(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` atomically."""
    _refuse_non_regular(Path(dest))
    fd, tmp = temp_file(dest.parent, dest.name)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, CHUNK_BYTES)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_folder(staging: Path, final: Path) -> None:
    """Put the complete folder ``staging`` at ``final`` in one step and remove what was there: a
    rename onto a missing or empty ``final``; else one atomic swap (Linux ``renameat2``) or, where
    the system lacks it, two renames with the old folder parked in ``.NAME.old.XXXX`` between them."""
    if not final.exists() or (final.is_dir() and not any(final.iterdir())):
        os.replace(staging, final)
        return
    if exchange_paths(staging, final):  # the staging folder now holds the old one
        old = staging
    else:
        old = temp_dir(final.parent, f"{final.name}.old")
        os.replace(final, old / final.name)
        os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(final: Path) -> None:
    """Clean up after a kill: put back an old folder parked by :func:`replace_folder`'s two renames
    (when ``final`` is missing) and remove staging folders ``.NAME.new.XXXX`` that were never moved."""
    parent = final.parent
    if not parent.is_dir():
        return
    for entry in sorted(parent.iterdir()):
        if entry.name.startswith(f".{final.name}.old") and entry.is_dir():
            inner = entry / final.name
            if inner.is_dir() and not final.exists():
                os.replace(inner, final)
            shutil.rmtree(entry, ignore_errors=True)
    for entry in sorted(parent.iterdir()):
        if entry.name.startswith(f".{final.name}.new") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def staged_folder(final):
    """Yield a hidden sibling ``.NAME.new.XXXX`` of ``final`` to fill; when the block finishes it
    replaces ``final`` (:func:`replace_folder`, Ctrl-C held back), so a reader of ``final`` sees the
    old folder or the complete new one. An error, Ctrl-C or crash inside the block leaves ``final``
    as it was (what a crash leaves hidden is removed by the next call). The block holds
    :func:`folder_lock`. Whether ``final`` may be replaced at all is the caller's decision."""
    final = Path(final)
    with folder_lock(final):  # a second writer would clean up this one's staging folder
        recover_folder(final)
        staging = temp_dir(final.parent, f"{final.name}.new")
        try:
            yield staging
            with interrupts_deferred():
                replace_folder(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
