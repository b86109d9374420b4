"""Run minispanbert's fused CUDA kernels on the CPU, to test them where there is no GPU.

``EmulatedCuPy()`` stands in for the ``cupy`` module: its arrays and functions are NumPy's, and
its ``RawModule`` and ``ElementwiseKernel`` compile the very CUDA C++ source that CuPy would hand
to NVRTC, with g++ and OpenMP instead. The CUDA launch model maps onto OpenMP as follows:

    a grid of blocks        -> a loop over blocks, one after the other
    a block of blockDim.x   -> an OpenMP team of exactly blockDim.x threads
    threadIdx / blockIdx    -> thread-local / global variables set before each block runs
    __shared__ variables    -> function-local ``static`` variables (one copy shared by the team)
    __syncthreads()         -> ``#pragma omp barrier``

So a kernel's index arithmetic, its shared-memory reductions and their synchronisation, its math
and the Python wrapper's launch configuration and argument types are all exercised, and a
missing barrier or an off-by-one shows up as a wrong number. What this cannot show: warp-level
behaviour, memory coalescing, NVRTC-specific compile errors, or speed; those need a GPU (the same
tests run there on real CuPy).

Needs a C++ compiler with OpenMP (``g++`` or the one in ``$CXX``); ``compiler_missing_reason()``
says why not, for a clean skip.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

PRELUDE = r"""
#include <cmath>
#include <cstddef>
#include <omp.h>
#include <type_traits>
#include <utility>

struct Dim3 { unsigned int x, y, z; };
static Dim3 gridDim, blockDim, blockIdx;
static thread_local Dim3 threadIdx;

#define __global__
#define __device__
#define __shared__ static
#define __syncthreads() _Pragma("omp barrier")
using std::erf; using std::exp; using std::log; using std::sqrt;  // the float overloads, as in CUDA

template <typename... P, std::size_t... I>
static void call_with(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<typename std::remove_cv<P>::type*>(args[I])...);
}

// Returns 0, or 1 if OpenMP gave a team smaller than the block (the emulation would be wrong).
template <typename... P>
static int launch(void (*kernel)(P...), unsigned gx, unsigned gy, unsigned bx, void** args) {
    omp_set_dynamic(0);
    int short_team = 0;
    gridDim = {gx, gy, 1};
    blockDim = {bx, 1, 1};
    for (unsigned y = 0; y < gy; ++y) {
        for (unsigned x = 0; x < gx; ++x) {
            blockIdx = {x, y, 0};
            #pragma omp parallel num_threads(bx)
            {
                if ((unsigned)omp_get_num_threads() != bx) {
                    #pragma omp atomic write
                    short_team = 1;
                } else {
                    threadIdx = {(unsigned)omp_get_thread_num(), 0, 0};
                    call_with(kernel, args, std::index_sequence_for<P...>{});
                }
            }
        }
    }
    return short_team;
}
"""

CTYPE_OF_DTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
SCALAR_TYPES = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float32: ctypes.c_float,
                np.float64: ctypes.c_double}


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++")


def compiler_missing_reason() -> str | None:
    """None when kernels can be emulated, else why not (for pytest.skip)."""
    cxx = compiler()
    if cxx is None:
        return "no C++ compiler (g++ or $CXX) to emulate the CUDA kernels on the CPU"
    probe = subprocess.run([cxx, "-fopenmp", "-x", "c++", "-", "-fsyntax-only"], input="#include <omp.h>\n",
                           capture_output=True, text=True)
    if probe.returncode:
        return f"{cxx} cannot compile OpenMP code, needed to emulate the CUDA kernels: {probe.stderr.strip()[:200]}"
    return None


_BUILD_DIR = Path(tempfile.gettempdir()) / "minispanbert-cuda-emulator"


def _build(source: str) -> ctypes.CDLL:
    """Compile ``source`` into a shared library (cached by content) and load it."""
    _BUILD_DIR.mkdir(exist_ok=True)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    library = _BUILD_DIR / f"kernels-{digest}.so"
    if not library.exists():
        source_file = _BUILD_DIR / f"kernels-{digest}.cpp"
        source_file.write_text(source)
        partial = library.with_suffix(f".{os.getpid()}.tmp")
        result = subprocess.run([compiler(), "-std=c++17", "-O1", "-fopenmp", "-shared", "-fPIC",
                                 str(source_file), "-o", str(partial)], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"emulated kernel source does not compile:\n{result.stderr}")
        os.replace(partial, library)
    return ctypes.CDLL(str(library))


def _argument_pointers(args):
    """CUDA's kernel-argument convention: an array of pointers, each to one argument's value (for
    an array argument, its value is the device pointer). Returns the array and the values it
    points into, which must stay alive during the call."""
    values = []
    for a in args:
        if isinstance(a, np.ndarray):
            if not a.flags.c_contiguous:
                raise AssertionError("a kernel got a non-contiguous array: the wrapper must make it contiguous")
            values.append(ctypes.c_void_p(a.ctypes.data))
        elif type(a) in SCALAR_TYPES:
            values.append(SCALAR_TYPES[type(a)](a.item()))
        else:
            raise AssertionError(f"kernel argument of type {type(a).__name__}: pass arrays or NumPy scalars of the "
                                 "kernel's C type (CuPy would guess a C type for a Python number)")
    pointers = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
    return pointers, values


class _EmulatedKernel:
    def __init__(self, launcher):
        self.launcher = launcher

    def __call__(self, grid, block, args):
        grid = tuple(grid) + (1,) * (2 - len(grid))
        pointers, _alive = _argument_pointers(args)
        if self.launcher(grid[0], grid[1], block[0], pointers):
            raise RuntimeError(f"OpenMP gave fewer than {block[0]} threads: raise OMP_THREAD_LIMIT")


class _EmulatedRawModule:
    """cupy.RawModule(code=..., options=..., name_expressions=[...]) on the CPU."""

    def __init__(self, code, options=(), name_expressions=()):
        self.names = list(name_expressions)
        launchers = "\n".join(
            f'extern "C" int launch_{i}(unsigned gx, unsigned gy, unsigned bx, void** args) '
            f"{{ return launch(&{name}, gx, gy, bx, args); }}" for i, name in enumerate(self.names))
        self.library = _build(PRELUDE + code + "\n" + launchers)

    def get_function(self, name):
        launcher = getattr(self.library, f"launch_{self.names.index(name)}")
        launcher.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        launcher.restype = ctypes.c_int
        return _EmulatedKernel(launcher)


def param_names(params: str) -> list[str]:
    """The names in an ElementwiseKernel parameter list: "T dy, T x" -> ["dy", "x"]."""
    return [p.split()[-1] for p in params.split(",")]


class _EmulatedElementwiseKernel:
    """cupy.ElementwiseKernel for same-shaped inputs with a type placeholder ``T``."""

    def __init__(self, in_params, out_params, operation, name):
        self.inputs, self.outputs = param_names(in_params), param_names(out_params)
        self.operation = operation

    def __call__(self, *arrays):
        if len({a.shape for a in arrays}) != 1 or len({a.dtype for a in arrays}) != 1:
            raise AssertionError("the emulated ElementwiseKernel takes inputs of one shape and dtype")
        dtype = arrays[0].dtype
        loads = "".join(f"const T {n} = (*static_cast<T**>(p[{i}]))[i];" for i, n in enumerate(self.inputs))
        declarations = "".join(f"T {n};" for n in self.outputs)
        stores = "".join(f"(*static_cast<T**>(p[{len(self.inputs) + j}]))[i] = {n};" for j, n in enumerate(self.outputs))
        # p[k] points to the k-th argument's value, here a data pointer (the convention of _argument_pointers)
        source = (PRELUDE + f"typedef {CTYPE_OF_DTYPE[dtype]} T;\n"
                  'extern "C" void run(long long n, void** p) {\n'
                  f"    for (long long i = 0; i < n; ++i) {{ {loads} {declarations} {self.operation} {stores} }}\n"
                  "}\n")
        run = _build(source).run
        run.argtypes = [ctypes.c_longlong, ctypes.c_void_p]
        inputs = [np.ascontiguousarray(a) for a in arrays]
        outputs = [np.empty_like(inputs[0]) for _ in self.outputs]
        pointers, _alive = _argument_pointers(inputs + outputs)
        run(inputs[0].size, pointers)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


class EmulatedCuPy:
    """A stand-in for the ``cupy`` module: NumPy for arrays, g++/OpenMP for custom kernels."""

    RawModule = _EmulatedRawModule
    ElementwiseKernel = _EmulatedElementwiseKernel

    def __getattr__(self, name):
        return getattr(np, name)
