"""The optimizer phase for the command-line tools: ``optim.clip_and_step`` and ``optim.adamw_update``
with two passes over the gradients instead of about fifteen.

The textbook versions (``optim.py``) are whole-array expressions: one pass for the norm's squares,
one to scale by the clipping coefficient, about a dozen for AdamW (``m *= b1``, ``work = g * (1 - b1)``,
``m += work``, ...), each reading or writing all of a parameter. At 29.5 M parameters (the small
preset) every pass moves 118 MB through memory. Here every parameter is cut into work items of at
most ``threads.WORK_ITEM_ELEMENTS`` (2^18) elements (a small parameter is one item), the items are
shared among the CPU threads, and

    pass 1   each item's sum of squares of g         ->  norm = sqrt(sum), coef = min(1, max_norm / (norm + 1e-6))
    pass 2   per item, while it is in the core's cache:  g *= coef, then the AdamW update below

so memory sees w, g, m, v read about once and w, m, v (and the scaled g) written once. With numba
installed and at least ``COMPILED_LOOP_MIN_PARAMETERS`` parameters, a float32 item's pass 2 is one
compiled loop (``cpu/adamw.py``), bit for bit the NumPy one. The arithmetic per element, in this order:

    w <- w * (1 - lr * wd)                             (skipped when wd = 0)
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps),   step_size = lr / (1 - b1^t)

It equals the textbook step to float rounding (``tests/engine/test_kernels_adamw.py``): the norm's
partial sums are added in float64, in the order of the sorted names, so any thread count gives the
same bits. :func:`minispanbert.engine.kernels.install` puts both functions in place of the textbook ones.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from minispanbert import optim
from minispanbert.engine.kernels.cpu import adamw as numba_adamw
from minispanbert.engine.parallel.threads import WORK_ITEM_ELEMENTS, map_dealt, part_of, work_items
from minispanbert.optim import CLIP_NORM_EPS, check_adamw_arguments, check_clipping_arguments, check_shapes

# Below this many parameters the NumPy items run: importing numba and loading its loop cost a process
# about a second, more than the loop saves over a short run of a small model (tiny: 1.6 M, ~1 ms a step).
COMPILED_LOOP_MIN_PARAMETERS = 1 << 22
_scratch = threading.local()  # .buffers: dtype -> one work array of an item's length per thread


def clip_and_step(params: dict, grads: dict, state, *, lr: float, max_grad_norm: float, weight_decay: float,
                  decay_mask, xp, betas=(0.9, 0.999), eps: float = 1e-8):
    """``optim.clip_and_step``'s contract and result: the gradients clipped in place to global norm
    ``max_grad_norm``, then one AdamW step in place; returns the norm before clipping (0-d array)."""
    if xp is not np:  # CuPy: the textbook clipping, then the in-place AdamW (one kernel launch per op)
        grad_norm = optim.clip_grad_norm(grads, max_grad_norm, xp=xp)  # through the module: what is in place
        adamw_update(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                     decay_mask=decay_mask, xp=xp)
        return grad_norm
    check_clipping_arguments(grads, max_grad_norm)
    check_adamw_arguments(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                          decay_mask=decay_mask)
    items = work_items([grads])
    squares = map_dealt(lambda item: _sum_of_squares(grads, item), items)
    total_norm = math.sqrt(math.fsum(squares))
    coef = min(max_grad_norm / (total_norm + CLIP_NORM_EPS), 1.0)  # inf norm: 0; nan: nan, as the textbook's
    _step(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decay_mask=decay_mask,
          grad_scale=coef, xp=xp)
    return np.asarray(total_norm, dtype=next(iter(grads.values())).dtype)


def adamw_update(params: dict, grads: dict, state, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, decay_mask, xp) -> None:
    """``optim.adamw_update``'s contract and result, computed in place (see the module docstring)."""
    check_adamw_arguments(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                          decay_mask=decay_mask)
    _step(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decay_mask=decay_mask,
          grad_scale=1.0, xp=xp)


def _sum_of_squares(grads, item) -> float:
    g = part_of(grads[item[0]], item[1])
    return float(np.vdot(g, g)) if item[1] is not None else float(np.sum(g.astype(np.float64) ** 2))


def _step(params, grads, state, *, lr, betas, eps, weight_decay, decay_mask, grad_scale, xp):
    lr, eps, weight_decay = float(lr), float(eps), float(weight_decay)
    beta1, beta2 = float(betas[0]), float(betas[1])
    state.t += 1
    step_size = lr / (1.0 - beta1**state.t)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**state.t)
    for name, w in params.items():
        check_shapes(name, w, grads[name], state.m[name])
    compiled_loop = sum(w.size for w in params.values()) >= COMPILED_LOOP_MIN_PARAMETERS

    def update(item):
        name, part = item
        w, g, m, v = (part_of(a[name], part) for a in (params, grads, state.m, state.v))
        decay = weight_decay if decay_mask is None or decay_mask[name] else 0.0
        if compiled_loop and numba_adamw.applies(xp, w, g, m, v):  # the same operations in one compiled loop
            numba_adamw.adamw_update_item(w, g, m, v, grad_scale=grad_scale, decay_factor=1.0 - lr * decay,
                                          beta1=beta1, beta2=beta2, bias_correction2_sqrt=bias_correction2_sqrt,
                                          eps=eps, step_size=step_size)
            return
        work = _work_like(g, xp)
        if grad_scale != 1.0:  # g = coef * g: the clipping, while g is in cache
            g *= grad_scale
        if decay != 0.0:
            w *= 1.0 - lr * decay
        # m = b1 m + (1 - b1) g
        m *= beta1
        xp.multiply(g, 1.0 - beta1, out=work)
        m += work
        # v = b2 v + (1 - b2) g^2
        v *= beta2
        xp.multiply(g, g, out=work)
        work *= 1.0 - beta2
        v += work
        # sqrt(v_hat) + eps = sqrt(v) / sqrt(1 - b2^t) + eps
        xp.sqrt(v, out=work)
        work /= bias_correction2_sqrt
        work += eps
        # w -= lr / (1 - b1^t) * m / (sqrt(v_hat) + eps)
        xp.divide(m, work, out=work)
        work *= -step_size
        w += work

    if xp is np:
        map_dealt(update, work_items([params, grads, state.m, state.v]))
    else:  # CuPy: each parameter whole, one kernel per operation
        for name in params:
            update((name, None))


def _work_like(g, xp):
    """A work array shaped like ``g``: on NumPy a view into this thread's item-long buffer (it stays
    in the core's cache from item to item), else a new array."""
    if xp is not np or g.size > WORK_ITEM_ELEMENTS or g.ndim != 1:
        return xp.empty_like(g)
    buffers = _scratch.__dict__.setdefault("buffers", {})
    buffer = buffers.get(g.dtype)
    if buffer is None:
        buffer = buffers[g.dtype] = np.empty(WORK_ITEM_ELEMENTS, dtype=g.dtype)
    return buffer[: g.size]
