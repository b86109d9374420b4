"""The AdamW update of one work item in one loop (plain version and equations: optim.adamw_update;
the work items and the clipping: engine/kernels/adamw.py).

The NumPy item is about a dozen passes through a scratch buffer; this loop reads g, w, m, v once,
writes them once and keeps every intermediate in registers, where the compiler vectorises it:

    g <- g * grad_scale                             the clipping coefficient (1: no clipping)
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w * decay_factor - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

Every operation is the NumPy item's float32 operation, with the same float32 constants and in the
same order (no fused multiply-add), so the result is bit for bit the NumPy one. Unlike the other
kernels here it is serial and releases the GIL (``nogil``): the threads that share the work items
run it side by side, so numba starts no thread pool of its own and it is on whenever numba is
installed and the model is large enough (``engine/kernels/adamw.py``; ``MINISPANBERT_FUSED_CPU`` does
not switch it).
"""
from __future__ import annotations

import functools

import numpy as np

from minispanbert.engine.kernels import cpu as numba_kernels


def applies(xp, *arrays) -> bool:
    """NumPy, numba installed, and the arrays float32, 1-D and contiguous (a work item's views)."""
    return xp is np and numba_kernels._HAVE_NUMBA and all(a.dtype == np.float32 and a.ndim == 1 and a.flags.c_contiguous
                                             for a in arrays)


@functools.cache
def _compiled():
    import numba

    @numba.njit(nogil=True, error_model="numpy", cache=True)  # numpy error model: x / 0 is inf, no check
    def update(w, g, m, v, grad_scale, decay_factor, beta1, one_minus_beta1, beta2, one_minus_beta2,
               bias_correction2_sqrt, eps, minus_step_size):
        for i in range(w.size):
            gi = g[i] * grad_scale                            # g *= coef
            g[i] = gi
            mi = m[i] * beta1 + gi * one_minus_beta1          # m *= b1; work = g * (1 - b1); m += work
            vi = v[i] * beta2 + (gi * gi) * one_minus_beta2   # v *= b2; work = g * g; work *= 1 - b2; v += work
            m[i] = mi
            v[i] = vi
            denominator = np.sqrt(vi) / bias_correction2_sqrt + eps
            w[i] = w[i] * decay_factor + (mi / denominator) * minus_step_size

    return update


def adamw_update_item(w, g, m, v, *, grad_scale, decay_factor, beta1, beta2, bias_correction2_sqrt, eps, step_size):
    """Update the float32 ``g`` (scaled), ``w``, ``m``, ``v`` in place. The Python-float settings
    become float32 exactly as NumPy casts them in the NumPy item."""
    f = np.float32
    _compiled()(w, g, m, v, f(grad_scale), f(decay_factor), f(beta1), f(1.0 - beta1), f(beta2), f(1.0 - beta2),
                f(bias_correction2_sqrt), f(eps), f(-step_size))
