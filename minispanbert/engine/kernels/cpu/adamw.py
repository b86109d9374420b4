"""Fused CPU AdamW update of one parameter (plain version and equations: optim.adamw_update).

The plain update is about a dozen whole-array passes through a scratch buffer; here one loop over
the elements, shared among the threads, reads w, g, m, v once and writes w, m, v once:

    w <- w * decay_factor                          decay_factor = 1 - lr * wd
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps),   step_size = lr / (1 - b1^t)

Every operation is the plain update's float32 operation, with the same float32 constants and in the
same order (and no fused multiply-add), so the result is bit for bit the plain one: a run can switch
between the two paths, e.g. when a resumed run's arrays are laid out differently, and stay exact.
"""
from __future__ import annotations

import numpy as np

from minispanbert.engine.kernels.cpu import cpu_kernel, prange


@cpu_kernel
def _update(w, g, m, v, decay_factor, beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
            minus_step_size):
    for i in prange(w.size):
        gi = g[i]
        mi = m[i] * beta1 + gi * one_minus_beta1          # m *= b1; work = g * (1 - b1); m += work
        vi = v[i] * beta2 + (gi * gi) * one_minus_beta2   # v *= b2; work = g * g; work *= 1 - b2; v += work
        m[i] = mi
        v[i] = vi
        denominator = np.sqrt(vi) / bias_correction2_sqrt + eps
        w[i] = w[i] * decay_factor + (mi / denominator) * minus_step_size


def adamw_update_one(w, g, m, v, *, decay_factor, beta1, beta2, bias_correction2_sqrt, eps, step_size):
    """Update the C-contiguous float32 ``w``, ``m``, ``v`` in place from the gradient ``g``. The
    Python-float settings become float32 exactly as NumPy casts them in the plain update."""
    f = np.float32
    _update(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), f(decay_factor), f(beta1), f(1.0 - beta1),
            f(beta2), f(1.0 - beta2), f(bias_correction2_sqrt), f(eps), f(-step_size))
