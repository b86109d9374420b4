"""Faster implementations of the core's reference ops, put in their place for one command's run.

The core (``minispanbert/layers``, ``minispanbert/optim.py``) is written once, as reference maths;
the notebooks, the gradient checks and the student copies of coursework run it as it is. The
command-line tools call :func:`installed` around their work, which replaces, for that time, these
functions of the core by dispatchers that run a kernel where it applies and the reference op
everywhere else:

    op (module attribute)                 CuPy arrays                NumPy float32 arrays
    layers.gelu.gelu_forward/backward     cuda/gelu.py               cpu/gelu.py       (*)
    layers.layernorm.layernorm_*          cuda/layernorm.py          cpu/layernorm.py  (*)
    layers.softmax.softmax_*              cuda/softmax.py            cpu/softmax.py    (*)
    layers.cross_entropy.cross_entropy_*  cuda/cross_entropy.py      cpu/cross_entropy.py (*)
    optim.clip_and_step, adamw_update     adamw.py (in place)        adamw.py (two passes over cache-sized items)

(*) numba kernels, only with ``MINISPANBERT_FUSED_CPU=1`` (see cpu/__init__.py). float64 arrays
always take the reference op. The core calls these ops through their modules
(``layernorm.layernorm_forward(...)``), so a replacement reaches every caller. Every kernel is
tested against the reference op it replaces (tests/engine/test_kernels_*.py).
"""
from __future__ import annotations

import contextlib
import functools

from minispanbert import optim
from minispanbert.backend import is_cupy
from minispanbert.layers import cross_entropy, gelu, layernorm, softmax

# (module, function name, arrays(*args) -> the arrays whose dtype decides whether a numba kernel applies)
REPLACEABLE = (
    (gelu, "gelu_forward", lambda x: (x,)),
    (gelu, "gelu_backward", lambda dy, cache: (dy, *cache)),
    (layernorm, "layernorm_forward", lambda x, gamma, beta: (x, gamma, beta)),
    (layernorm, "layernorm_backward", lambda dy, cache: (dy, *cache)),
    (softmax, "softmax_forward", lambda x: (x,)),
    (softmax, "softmax_backward", lambda dy, cache: (dy, cache)),
    (cross_entropy, "cross_entropy_forward", lambda logits, labels: (logits,)),
    (cross_entropy, "cross_entropy_backward", lambda dloss, cache: (cache[0],)),
)


def _kernel_modules(op_module_name: str):
    """(CUDA kernel module, numba kernel module) implementing the ops of ``layers/<name>.py``."""
    import importlib

    return (importlib.import_module(f"minispanbert.engine.kernels.cuda.{op_module_name}"),
            importlib.import_module(f"minispanbert.engine.kernels.cpu.{op_module_name}"))


def _dispatcher(reference, cuda_kernel, cpu_kernel, deciding_arrays):
    from minispanbert.engine.kernels import cpu as numba_kernels

    @functools.wraps(reference)
    def op(*args, xp, **kwargs):
        if is_cupy(xp):
            return cuda_kernel(*args, xp=xp, **kwargs)
        if numba_kernels.applies(xp, *deciding_arrays(*args)):
            return cpu_kernel(*args, xp=xp, **kwargs)
        return reference(*args, xp=xp, **kwargs)

    op.reference = reference
    return op


def install() -> list:
    """Put the dispatchers and the in-place AdamW in place of the reference ops. Returns what
    :func:`uninstall` needs to put the references back."""
    from minispanbert.engine.kernels import adamw

    replaced = []
    for module, name, deciding_arrays in REPLACEABLE:
        reference = getattr(module, name)
        cuda_module, cpu_module = _kernel_modules(module.__name__.rsplit(".", 1)[1])
        replaced.append((module, name, reference))
        setattr(module, name, _dispatcher(reference, getattr(cuda_module, name), getattr(cpu_module, name),
                                          deciding_arrays))
    for name in ("clip_and_step", "adamw_update"):
        replaced.append((optim, name, getattr(optim, name)))
        setattr(optim, name, getattr(adamw, name))
    return replaced


def uninstall(replaced: list) -> None:
    for module, name, reference in reversed(replaced):
        setattr(module, name, reference)


_active = []  # the installs in force, innermost last: a command running another (compare_objectives) installs once


@contextlib.contextmanager
def installed():
    """The kernels in place for the ``with`` block, the reference ops back after it (a command run
    from a notebook or a test leaves the core as it found it)."""
    replaced = install() if not _active else []
    _active.append(replaced)
    try:
        yield
    finally:
        _active.pop()
        uninstall(replaced)
