"""AdamW for the command-line tools: the update of ``optim.adamw_update`` in place, without
temporaries (the textbook version allocates five arrays per parameter), each parameter's elements
split into slices shared among the CPU threads; with the numba kernels switched on
(``MINISPANBERT_FUSED_CPU=1``), one fused pass per float32 parameter (``cpu/adamw.py``).

The arithmetic per element, in this order (so the numba kernel and this code give the same bits):

    w <- w * (1 - lr * wd)                             (skipped when wd = 0)
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps),   step_size = lr / (1 - b1^t)

It equals the textbook update to float rounding (tested) and torch.optim.AdamW's bit layout of the
formula. :func:`minispanbert.engine.kernels.install` puts it in place of ``optim.adamw_update``.
"""
from __future__ import annotations

import math

from minispanbert.engine.kernels import cpu as numba_kernels
from minispanbert.engine.kernels.cpu import adamw as numba_adamw
from minispanbert.engine.parallel.threads import parallel_for
from minispanbert.optim import check_adamw_arguments, check_shapes

CHUNK = 1 << 18  # elements per parallel_for slice: big enough that a thread's Python overhead is noise
_work_buffers: dict = {}  # (array module, dtype) -> one work buffer, grown to the largest parameter seen


def adamw_update(params: dict, grads: dict, state, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, decay_mask, xp) -> None:
    """``optim.adamw_update``'s contract and result, computed in place (see the module docstring)."""
    check_adamw_arguments(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                          decay_mask=decay_mask)
    lr, eps, weight_decay = float(lr), float(eps), float(weight_decay)
    beta1, beta2 = float(betas[0]), float(betas[1])
    state.t += 1
    step_size = lr / (1.0 - beta1**state.t)
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**state.t)

    for name, w in params.items():
        g, m, v = grads[name], state.m[name], state.v[name]
        check_shapes(name, w, g, m)
        decay = weight_decay if decay_mask is None or decay_mask[name] else 0.0
        if numba_kernels.applies(xp, w, g, m, v) and all(a.flags.c_contiguous for a in (w, g, m, v)):
            numba_adamw.adamw_update_one(w, g, m, v, decay_factor=1.0 - lr * decay, beta1=beta1, beta2=beta2,
                                         bias_correction2_sqrt=bias_correction2_sqrt, eps=eps, step_size=step_size)
            continue
        work = _work_like(w, xp)

        def update(w, g, m, v, work):
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

        if w.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous:
            # the update is elementwise, so slices of the flat arrays are independent work items
            flat = [a.reshape(-1) for a in (w, g, m, v, work)]  # views (g may be copied)
            parallel_for(lambda part: update(*(a[part] for a in flat)), w.size, chunk=CHUNK, xp=xp)
        else:  # a strided view (e.g. a transposed weight): one whole-array update, in place through it
            update(w, g, m, v, work)


def _work_like(w, xp):
    """A work array shaped like ``w``: a view into one buffer per backend and dtype, allocated once
    and grown when a larger parameter comes."""
    key = (xp.__name__, w.dtype)
    buffer = _work_buffers.get(key)
    if buffer is None or buffer.size < w.size:
        buffer = xp.empty(w.size, dtype=w.dtype)
        _work_buffers[key] = buffer
    return buffer[: w.size].reshape(w.shape)
