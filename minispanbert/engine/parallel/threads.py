"""The process's CPU threads (NumPy): how many there are, BLAS's share of them, and two ways to use
them from Python.

    cpu_threads()              how many threads this process computes on
    set_cpu_threads(n, ...)    change that count, and BLAS's, in a running process (threadpoolctl)
    cpu_threads_set(n, ...)    the same for a with-block only
    map_threads(fn, items)     [fn(item) ...] on cpu_threads() threads
    parallel_for(fn, n, ...)   fn(slice) over chunks of range(n), on cpu_threads() threads
    work_items(dicts)          (name, slice) pieces of same-keyed dicts of arrays
    map_dealt(fn, items)       [fn(item) ...], the items dealt round-robin to cpu_threads() threads

Why threads help NumPy at all: a ufunc and a GEMM release the GIL while they loop, so Python threads
calling NumPy run side by side; without them, only BLAS uses more than one core.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")  # OpenBLAS's order


WORK_ITEM_ELEMENTS = 1 << 18  # a work item: 1 MiB of float32 per array, so an item's few arrays stay in cache
_threads_set = None  # the count given to set_cpu_threads, once it has been called
_worker = threading.local()  # .busy: this thread is one of map_threads' workers


def cpu_threads() -> int:
    """How many threads this process computes on: the count given to :func:`set_cpu_threads`,
    else as OpenBLAS decides it at import: the first of OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS,
    OMP_NUM_THREADS set to a positive integer, else the usable cores (capped by them either way).
    :func:`parallel_for`, :func:`map_threads` and the numba kernels use as many threads, so one
    setting sets all."""
    if _threads_set is not None:
        return _threads_set
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for var in BLAS_THREAD_VARS:
        value = os.environ.get(var, "")
        if value.strip().isdigit() and int(value) > 0:
            return min(int(value), cores)
    return cores


def set_cpu_threads(threads: int, *, blas_threads: int | None = None) -> None:
    """Compute on ``threads`` threads from now on, with NumPy's BLAS on ``blas_threads`` of them
    (default: all ``threads``; 1 when the caller runs ``threads`` single-threaded GEMMs side by side
    itself, as :mod:`minispanbert.engine.parallel.shards` does). OpenBLAS reads its count from the
    environment once, at import; threadpoolctl changes it in the running process. Without
    threadpoolctl this is a ValueError saying which variable to set instead."""
    global _threads_set
    _blas_limits(threads, blas_threads)
    _threads_set = threads


@contextlib.contextmanager
def cpu_threads_set(threads: int, *, blas_threads: int | None = None):
    """:func:`set_cpu_threads` for the ``with`` block only: the previous counts come back after
    it (a training run called from a notebook leaves the notebook's NumPy as it found it)."""
    global _threads_set
    previous, limits = _threads_set, _blas_limits(threads, blas_threads)
    _threads_set = threads
    try:
        yield
    finally:
        limits.restore_original_limits()
        _threads_set = previous


def _blas_limits(threads: int, blas_threads: int | None):
    if threads < 1:
        raise ValueError(f"the thread count must be at least 1, got {threads}")
    blas_threads = threads if blas_threads is None else blas_threads
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise ValueError(f"setting the thread count needs threadpoolctl (pip install threadpoolctl), or start "
                         f"Python as OPENBLAS_NUM_THREADS={blas_threads} OMP_NUM_THREADS={blas_threads} python ...") from None
    return threadpool_limits(blas_threads, user_api="blas")


@functools.cache
def _thread_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="minispanbert")


def in_worker_thread() -> bool:
    """Whether this code runs inside one of :func:`map_threads`' calls (then the cores are busy
    already, and :func:`parallel_for` and the numba kernels run on this thread alone)."""
    return getattr(_worker, "busy", False)


def _as_worker(fn, item):
    _worker.busy = True
    try:
        return fn(item)
    finally:
        _worker.busy = False


def map_threads(fn, items) -> list:
    """``[fn(item) for item in items]``, the calls shared among :func:`cpu_threads` threads (at most
    one per item). Inside ``fn``, :func:`parallel_for` runs serially: each thread is one core's
    work already. An exception from a call is re-raised here."""
    items = list(items)
    threads = min(cpu_threads(), len(items))
    if threads <= 1 or in_worker_thread():
        return [fn(item) for item in items]
    return list(_thread_pool(threads).map(functools.partial(_as_worker, fn), items))


def parallel_for(fn, n: int, *, chunk: int, xp) -> None:
    """Call ``fn(part)`` for consecutive slices ``part`` of ``range(n)``, each at most ``chunk``
    long, so that together they cover it once.

    On NumPy the calls are shared among :func:`cpu_threads` threads. This pays because a NumPy
    ufunc releases the GIL while it loops over the elements, and BLAS is the only other part of
    NumPy that uses more than one core: without this, elementwise work (erf, AdamW) runs on one.
    ``fn`` must write only to its own slice. On CuPy there is a single call with ``slice(0, n)``:
    the GPU is parallel already, and the caller's code stays the same.
    """
    if xp is not np:
        fn(slice(0, n))
        return
    parts = [slice(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    map_threads(fn, parts)


def map_dealt(fn, items) -> list:
    """``[fn(item) for item in items]``, the items dealt round-robin into one group per thread and
    each group run as ONE call on its thread: many small items cost two thread hand-offs, not one
    each, and dealing spreads a large array's consecutive pieces over all the threads."""
    items = list(items)
    threads = max(1, min(cpu_threads(), len(items)))
    groups = map_threads(lambda k: [fn(item) for item in items[k::threads]], range(threads))
    results = [None] * len(items)
    for k, group in enumerate(groups):
        results[k::threads] = group
    return results


def work_items(dicts: list, chunk: int = WORK_ITEM_ELEMENTS) -> list:
    """(name, part) pairs covering every array of the same-keyed ``dicts`` once, in sorted-name order:
    ``part`` a slice of at most ``chunk`` elements of the flattened arrays, or None where one of them
    is strided (that name is one item, done whole). Fixed by the arrays alone, not the thread count."""
    items = []
    for name in sorted(dicts[0]):
        if not all(d[name].flags.c_contiguous for d in dicts):
            items.append((name, None))
            continue
        size = dicts[0][name].size
        items += [(name, slice(start, min(start + chunk, size))) for start in range(0, max(size, 1), chunk)]
    return items


def part_of(a, part):
    """The elements of ``a`` in a work item's ``part``: a view, through which writes reach ``a``."""
    return a if part is None else a.reshape(-1)[part]
