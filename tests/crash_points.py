"""Kill a command just before its k-th change to the disk, for the write-order tests.

``run_with_a_crash(action, crash_at)`` runs ``action()`` in a forked child that records every change
it makes to the file system, as Python's audit events report them (a file opened for writing, a
rename or replace, a removal, a new folder, a permission change, a foreign call such as
``renameat2``), and dies with ``os._exit`` (no cleanup, no ``finally``, like ``kill -9``) just before
the ``crash_at``-th. ``crash_at`` 0 runs to the end; an action that fails by itself fails the test.
Returns the changes the child reached, each ``(event, first path)``, so ``run_with_a_crash(action, 0)``
lists them all and ``range(1, len(changes) + 1)`` visits every crash point.
"""
from __future__ import annotations

import os
import sys
import traceback

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
DISK_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.truncate", "os.link",
               "os.symlink", "shutil.rmtree", "shutil.move", "ctypes.call_function"}


def disk_change(event: str, args) -> str | None:
    """The path a change to the disk touches ("" where the event names none); None if not a change."""
    if event == "open":
        path, mode, flags = args
        if path is None or isinstance(path, int):
            return None
        writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
        return os.fsdecode(path) if writes else None
    if event in DISK_EVENTS:
        first = args[0] if args else ""
        return os.fsdecode(first) if isinstance(first, (str, bytes, os.PathLike)) else ""
    return None


def run_with_a_crash(action, crash_at: int) -> list[tuple[str, str]]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: record the changes, die at the chosen one
        os.close(read)
        count = 0

        def hook(event, args):
            nonlocal count
            path = disk_change(event, args)
            if path is not None:
                count += 1
                os.write(write, f"{event}\t{path}\n".encode())
                if count == crash_at:
                    os._exit(0)

        sys.addaudithook(hook)
        try:
            action()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    os.close(write)
    received = b""
    while chunk := os.read(read, 1 << 16):
        received += chunk
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise AssertionError(f"the action failed by itself before change {crash_at} (its traceback is above)")
    return [tuple(line.split("\t", 1)) for line in received.decode().splitlines()]
