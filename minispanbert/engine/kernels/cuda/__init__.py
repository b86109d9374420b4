"""Fused CUDA kernels for the CuPy backend: GeLU, LayerNorm, softmax and softmax cross-entropy.

Why: the plain ops in ``minispanbert/layers`` are written with whole-array expressions, which on a
GPU means one kernel launch and one trip through device memory per ``+``, ``*``, ``exp`` or
``sum``. LayerNorm's forward alone is about ten such passes over a (B*T, H) array. Each kernel
here does the same arithmetic in one launch that reads its inputs once and writes its outputs
once. The equations, shapes and derivatives are those of the plain versions: read the docstrings
in ``minispanbert/layers`` first; the comments here only explain the GPU mechanics.

Each ``layers`` op takes ``fused=True`` and, on CuPy, calls the kernel here; ``fused=False`` runs
the plain code on any backend. The plain code is the reference: the notebooks and gradient checks
use it, and ``tests/test_fused_kernels.py`` checks every kernel against it (on a GPU, and on the
CPU through an OpenMP emulation of the CUDA launch model). The fused caches have the same layout
as the plain ones except for cross-entropy, so pass the same ``fused`` to forward and backward.

Mechanics shared by the row-wise kernels (softmax, LayerNorm, cross-entropy): one thread block
per row of the last axis. The block's threads stride over the row, each keeps a partial sum or
max in a register, and ``block_reduce`` combines the partials through shared memory
in log2(blockDim) halving steps. The block size is the row length rounded up to a power of two,
at most ``MAX_ROW_BLOCK``. Kernels are C++ templates instantiated for float and double (float64
is what the gradient checks use) and compiled once per process by CuPy's RawModule (NVRTC).

Nothing here imports CuPy: the array module arrives as ``xp`` like everywhere else.
"""
from __future__ import annotations

import functools

import numpy as np

MAX_ROW_BLOCK = 1024  # threads per block for the row kernels: the CUDA limit, and the size of `scratch`

CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# Device helpers included at the top of every row-kernel source.
ROW_REDUCTIONS = r"""
#define MAX_ROW_BLOCK 1024

struct Add { template <typename T> __device__ T operator()(T a, T b) const { return a + b; } };
struct Max { template <typename T> __device__ T operator()(T a, T b) const { return b > a ? b : a; } };

// Combine `value` over the threads of the block (Add() for a sum, Max() for a maximum); every
// thread gets the result. blockDim.x must be a power of two; `scratch` is a __shared__ array with at
// least blockDim.x entries. Each halving step folds the upper half of the partials onto the lower.
template <typename T, typename Combine>
__device__ T block_reduce(T value, T* scratch, Combine combine) {
    const unsigned int tid = threadIdx.x;
    scratch[tid] = value;
    __syncthreads();
    for (unsigned int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (tid < stride) scratch[tid] = combine(scratch[tid], scratch[tid + stride]);
        __syncthreads();
    }
    const T result = scratch[0];
    __syncthreads();  // everyone has read scratch[0] before the next reduction overwrites it
    return result;
}
"""


def ctype(dtype) -> str:
    """The C type of a float32 / float64 array; anything else is a clear ValueError."""
    try:
        return CTYPES[np.dtype(dtype)]
    except KeyError:
        raise ValueError(f"fused kernels take float32 or float64 arrays, got {np.dtype(dtype)}") from None


def row_block_size(n_cols: int) -> int:
    """Threads per block for a row of ``n_cols``: the next power of two, between 32 (one warp) and
    MAX_ROW_BLOCK. Rows longer than the block are covered by each thread striding over them."""
    block = 32
    while block < n_cols and block < MAX_ROW_BLOCK:
        block *= 2
    return block


@functools.cache
def _raw_module(xp, source: str, kernel_names: tuple[str, ...]):
    """Compile ``source`` once per process, instantiating each template for float and double."""
    expressions = [f"{name}<{c}>" for name in kernel_names for c in CTYPES.values()]
    return xp.RawModule(code=source, options=("-std=c++14",), name_expressions=expressions)


def raw_kernel(xp, source: str, kernel_names: tuple[str, ...], name: str, dtype):
    """The compiled ``name<float>`` or ``name<double>`` kernel of ``source`` for ``dtype``."""
    return _raw_module(xp, source, kernel_names).get_function(f"{name}<{ctype(dtype)}>")


def launch_rows(kernel, n_rows: int, n_cols: int, args) -> None:
    """Launch a row kernel: one block of ``row_block_size(n_cols)`` threads per row. ``args`` are
    device arrays and NumPy scalars of the kernel's exact C types (np.int32 for int, the array's
    own dtype for T). Zero rows launch nothing (a zero-sized grid is a CUDA error)."""
    if n_rows == 0:
        return
    if n_cols == 0:
        raise ValueError("fused row kernels need rows of at least one element, got an empty last axis")
    kernel((n_rows,), (row_block_size(n_cols),), args)


@functools.cache
def elementwise_kernel(xp, in_params: str, out_params: str, operation: str, name: str):
    """A cached ``cupy.ElementwiseKernel`` (one thread per element; CuPy handles shapes and types)."""
    return xp.ElementwiseKernel(in_params, out_params, operation, name)
