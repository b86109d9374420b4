"""Fused CPU AdamW update of one parameter (plain version and equations: optim.adamw_update).

The plain update is about a dozen whole-array passes through a scratch buffer; here one loop over
the elements, shared among the threads, reads w, g, m, v once and writes w, m, v once:

    w <- w * decay_factor                          decay_factor = 1 - lr * wd
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps),   step_size = lr / (1 - b1^t)
"""
from __future__ import annotations

import math

from . import cpu_kernel, prange


@cpu_kernel
def _update(w, g, m, v, decay_factor, beta1, beta2, bias_correction2_sqrt, eps, step_size):
    for i in prange(w.size):
        mi = beta1 * m[i] + (1.0 - beta1) * g[i]
        vi = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
        m[i] = mi
        v[i] = vi
        w[i] = w[i] * decay_factor - step_size * mi / (math.sqrt(vi) / bias_correction2_sqrt + eps)


def adamw_update_one(w, g, m, v, *, decay_factor, beta1, beta2, bias_correction2_sqrt, eps, step_size):
    """Update the C-contiguous ``w``, ``m``, ``v`` in place from the gradient ``g``."""
    _update(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), decay_factor, beta1, beta2,
            bias_correction2_sqrt, eps, step_size)
