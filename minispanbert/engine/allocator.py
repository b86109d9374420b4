"""Keep freed memory inside the process (glibc's malloc), so a step's large arrays do not fault in
fresh pages every step.

A training step allocates and frees the same large arrays every step: activations, logits, and
vocabulary-sized gradients (30,522 x 512 floats, 62 MB, for the small preset). glibc serves a
request above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns it with
``munmap`` when freed, so the next step's array of that size is new pages again, and the kernel
zero-fills each 4 KiB page on its first touch (the "sys" time of a step). :func:`keep_freed_memory`
asks malloc to serve every request from its heap (``M_MMAP_MAX`` 0), in one arena for all threads
(``M_ARENA_MAX`` 1: a worker thread's arena cannot hold a 62 MB array), and never to hand freed heap
back (``M_TRIM_THRESHOLD``), so the memory a step frees is reused by the next one. The process then
keeps its peak memory until it exits, as a training command's peak is its footprint anyway.

``python -m minispanbert.train``, ``finetune`` and ``bench`` (both engines' processes, so the
PyTorch yardstick gets the same allocator) call it at start. Elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
LARGEST_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Set glibc's malloc as the module docstring says; returns whether it was set (False: not glibc)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (AttributeError, ValueError, OSError):
        return False
    libc = ctypes.CDLL(None)
    settings = ((M_MMAP_MAX, 0), (M_ARENA_MAX, 1), (M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)
