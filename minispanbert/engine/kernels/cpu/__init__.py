"""Fused CPU kernels (numba, ``parallel=True``): GeLU, LayerNorm, softmax, cross-entropy; and AdamW's
serial item loop (``adamw.py``, on for large models when numba is installed: it starts no thread pool).

Why: a plain op in ``minispanbert/layers`` is a handful of NumPy whole-array expressions. Each is a
separate pass through memory, allocates a temporary, and runs on ONE core (a ufunc loop is
single-threaded; only BLAS uses the others). Between the GEMMs of a training step that elementwise
work is what leaves a two-core machine half idle. Each kernel here does the same arithmetic as
its plain op in one or two passes over the data, with the rows (or elements) shared among the
cores by ``numba.prange``. The equations, shapes and derivatives are those of the plain versions:
read the docstrings in ``minispanbert/layers`` (and ``optim.adamw_update``) first; the comments
here only explain the loop structure.

Wiring mirrors the CuPy kernels in ``minispanbert/fused``: each plain op takes ``fused=True`` and,
when :func:`applies` (NumPy arrays, float32, numba installed, not switched off), calls the kernel
here; ``fused=False`` runs the plain code. The plain code is the reference: the notebooks and the
float64 gradient checks run it, and ``tests/test_fused_cpu.py`` checks every kernel against it.
The caches have the plain layout, so either backward takes either forward's cache.

Only float32 (training) takes the fused path: float64 is for gradient checks, where the plain,
readable code is the point. Without numba (it is optional) everything runs the plain NumPy ops.

The fused path is OFF unless ``MINISPANBERT_FUSED_CPU=1`` is in the environment. Measured on the
project's 2-core machine (tiny preset, 16 x 128, WikiText-2, 40 steps of ``python -m
minispanbert.train``): with 2 threads the step ran at 4,500 tokens/s with these kernels against
8,900 without, because numba's thread pool and OpenBLAS's spinning worker threads fight over the
same two cores between every GEMM; with 1 thread they help a little (README, Performance). Turn
them on where they measure faster. Kernels are compiled on first use (a second or two each; ``cache=True`` keeps the machine
code on disk for the next process) with as many threads as NumPy's BLAS runs
(:func:`minispanbert.backend.cpu_threads`). Arithmetic is in float64 inside a row, stored as float32.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from minispanbert.engine.parallel.threads import cpu_threads, in_worker_thread

ENV_VAR = "MINISPANBERT_FUSED_CPU"
_HAVE_NUMBA = importlib.util.find_spec("numba") is not None


def enabled() -> bool:
    """numba is installed and ``MINISPANBERT_FUSED_CPU`` is "1" (off by default: see above)."""
    return _HAVE_NUMBA and os.environ.get(ENV_VAR, "0") == "1"


def applies(xp, *arrays) -> bool:
    """Whether the fused CPU kernel runs for these arrays: NumPy, all float32, :func:`enabled`, and
    not inside a :func:`backend.map_threads` worker (a shard of a batch split over threads is one
    core's work already, and numba's thread pool must not be entered by two threads at once)."""
    return xp is np and enabled() and not in_worker_thread() and all(a.dtype == np.float32 for a in arrays)


def prange(*args):
    """``range`` when run as Python; :class:`cpu_kernel` rebinds it to ``numba.prange`` (a loop
    whose iterations are shared among the threads) in the kernel's module before compiling."""
    return range(*args)


class cpu_kernel:
    """Decorator: compile the function with ``numba.njit(parallel=True)`` on its first call (so
    importing minispanbert never imports numba) and run it on :func:`cpu_threads` threads."""

    def __init__(self, fn):
        self.fn, self.compiled = fn, None

    def __call__(self, *args):
        import numba

        if self.compiled is None:
            self.fn.__globals__["prange"] = numba.prange  # what `prange` means to the compiler
            self.compiled = numba.njit(parallel=True, cache=True)(self.fn)
        numba.set_num_threads(max(1, min(cpu_threads(), numba.config.NUMBA_NUM_THREADS)))
        return self.compiled(*args)


def rows(a):
    """(..., N) -> a C-contiguous (R, N) view (a copy only if ``a`` is strided)."""
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])
