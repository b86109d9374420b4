"""AdamW, the linear warmup/decay learning-rate schedule, and global-norm gradient clipping.

Written by hand on the array module ``xp`` (NumPy or CuPy). Parameters are one flat dict
``params: dict[str, array]`` keyed by Hugging Face BERT names; gradients and optimizer moments are
dicts with exactly the same keys. The SpanBERT recipe (paper §5 / spec §5): AdamW with betas
(0.9, 0.999), eps 1e-8, weight decay 0.01, linear warmup then linear decay to 0, and the gradient
clipped to global norm 1.0 before each update.

One training step, in the order train.train_step calls these::

    lr = linear_warmup_decay(step, peak_lr=1e-4, warmup_steps=10_000, total_steps=T)
    grad_norm = clip_grad_norm(grads, 1.0, xp=xp)       # the norm before clipping, on the device
    adamw_update(params, grads, state, lr=lr, weight_decay=0.01, decay_mask=no_decay_mask(params), xp=xp)

(:func:`clip_and_step` is those two lines, for the fine-tuning loop.) Every function here computes
what its PyTorch / Hugging Face counterpart computes (torch.optim.AdamW, transformers'
get_linear_schedule_with_warmup, torch.nn.utils.clip_grad_norm_), equal to float rounding, so
PyTorch serves as a test oracle. The commands update in place with engine/kernels/adamw.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from minispanbert.backend import is_cupy

# Added to the norm in the clipping coefficient, as in torch.nn.utils.clip_grad_norm_.
CLIP_NORM_EPS = 1e-6


@dataclass
class AdamWState:
    """AdamW's running state.

    ``t``: number of updates done so far (0 after :func:`adamw_init`; the first update uses t=1).
    ``m``, ``v``: first and second moment estimates, one array per parameter name, each with that
    parameter's shape, dtype and device.
    """

    t: int
    m: dict
    v: dict


def adamw_init(params: dict, *, xp) -> AdamWState:
    """Zero moments for every parameter, step count 0."""
    for name, w in params.items():
        if w.dtype.kind != "f":
            raise ValueError(f"parameter {name!r} has dtype {w.dtype}: AdamW needs float32 or float64 parameters")
    return AdamWState(
        t=0,
        m={name: xp.zeros_like(w) for name, w in params.items()},
        v={name: xp.zeros_like(w) for name, w in params.items()},
    )


def no_decay_mask(params: dict) -> dict[str, bool]:
    """Which parameters get weight decay: True = decay, False = exempt.

    As in BERT and the SpanBERT fine-tuning code, biases (names ending in ``.bias``, which includes
    ``cls.predictions.bias``) and LayerNorm weights and biases (names containing ``LayerNorm``) are
    exempt; every weight matrix and embedding table is decayed. Lower-case ``layer_norm`` counts too
    (RoBERTa's ``lm_head.layer_norm``, ALBERT's ``full_layer_layer_norm``).
    """
    return {name: not (name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name) for name in params}


def adamw_update(
    params: dict,
    grads: dict,
    state: AdamWState,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    decay_mask: dict[str, bool] | None,
    xp,
) -> None:
    """One AdamW step (Loshchilov & Hutter 2019, Algorithm 2), updating ``params`` and ``state`` in place.

    As torch.optim.AdamW (non-amsgrad): with t = state.t + 1 and g = grads[name],

        w <- w * (1 - lr * wd)                   decoupled decay, applied first, to the old w
        m <- b1 * m + (1 - b1) * g
        v <- b2 * v + (1 - b2) * g**2
        w <- w - lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1**t),  v_hat = v / (1 - b2**t)

    so eps is added after the bias correction of v. wd is ``weight_decay`` where
    ``decay_mask[name]`` is True and 0 where it is False; ``decay_mask=None`` decays every
    parameter (PyTorch's single-group default); pass ``no_decay_mask(params)`` for BERT's recipe.

    Where we differ from the authors' code: SpanBERT was pretrained with fairseq's Adam, which
    adds eps to sqrt(v) *before* the bias correction; the two agree once 1 - b2**t is near 1.
    """
    check_adamw_arguments(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                          decay_mask=decay_mask)
    beta1, beta2 = betas
    state.t += 1
    for name, w in params.items():
        g, m, v = grads[name], state.m[name], state.v[name]
        check_shapes(name, w, g, m)
        decay = weight_decay if decay_mask is None or decay_mask[name] else 0.0
        w *= 1.0 - lr * decay
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        m_hat = m / (1.0 - beta1**state.t)
        v_hat = v / (1.0 - beta2**state.t)
        w -= lr * m_hat / (xp.sqrt(v_hat) + eps)


def check_shapes(name: str, w, g, m) -> None:
    """A gradient and a moment must match their parameter's shape and dtype: a float64 gradient for
    a float32 weight is a bug upstream, not something to cast silently."""
    if g.shape != w.shape or g.dtype != w.dtype:
        raise ValueError(
            f"gradient {name!r} is {g.dtype}{list(g.shape)} but the parameter is "
            f"{w.dtype}{list(w.shape)}: the backward pass must return grads shaped like the params"
        )
    if m.shape != w.shape or m.dtype != w.dtype:
        raise ValueError(
            f"optimizer state for {name!r} is {m.dtype}{list(m.shape)} but the parameter is "
            f"{w.dtype}{list(w.shape)}: the state belongs to another model; build it with adamw_init(params)"
        )


def linear_warmup_decay(step: int, *, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for 0-based optimizer step ``step``: linear warmup, then linear decay to 0.

    The Hugging Face ``get_linear_schedule_with_warmup`` convention (fairseq's polynomial_decay
    with power 1, as used to pretrain SpanBERT, has the same shape):

        lr(step) = peak * step / warmup                                  for step < warmup
        lr(step) = peak * max(0, (total - step) / max(1, total - warmup))  otherwise

    so lr(0) = 0 (the very first update does not move the weights, only the moments), lr(warmup) =
    peak, lr(total) = 0, and the rate stays 0 past ``total_steps``, never negative. With
    ``warmup_steps=0`` the schedule starts at peak. When warmup == total the peak is never
    reached: the rate climbs to peak * (total-1)/total and is 0 at step total.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}: pass the planned number of optimizer steps")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be between 0 and total_steps={total_steps}, got {warmup_steps}: "
            "shorten the warmup or train longer"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0 (0-based optimizer step), got {step}")
    if peak_lr < 0:
        raise ValueError(f"peak_lr must be >= 0, got {peak_lr}")
    if step < warmup_steps:
        return peak_lr * (step / warmup_steps)
    return peak_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def clip_grad_norm(grads: dict, max_norm: float, *, xp):
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    As torch.nn.utils.clip_grad_norm_: total = sqrt(sum over tensors of sum(g**2)), every g is
    multiplied by min(1, max_norm / (total + 1e-6)), so a clipped gradient ends with norm
    max_norm * total / (total + 1e-6), i.e. max_norm to within 1e-6 relative. The tensors are summed
    in the order of their names, not of the dict: two processes holding the same gradients in dicts
    built in another order (a shard without SBO targets adds those last) get the same norm, bit for bit.

    Returns the norm *before* clipping as a 0-d array on the backend, without a host sync: call
    ``float()`` on it only when logging. A non-finite norm (inf/nan gradients) is returned as is
    and the gradients become nan or 0; the caller decides whether to skip the step.
    """
    check_clipping_arguments(grads, max_norm)
    sum_of_squares = None
    for name in sorted(grads):  # one fixed order: every rank and every thread split get the same bits
        flat = grads[name].reshape(-1)  # a view for contiguous arrays; vdot is one BLAS dot, no g**2 temporary
        square = xp.vdot(flat, flat)
        sum_of_squares = square if sum_of_squares is None else sum_of_squares + square
    total_norm = xp.sqrt(sum_of_squares)
    clip_coef = xp.minimum(max_norm / (total_norm + CLIP_NORM_EPS), 1.0)
    # On CuPy, testing the coefficient would wait for the device, so scale unconditionally as
    # torch does (x * 1.0 == x exactly). On NumPy the test is free and skips a pass over every
    # gradient in the common unclipped case; `not >=` also routes a nan coefficient to the scaling.
    if is_cupy(xp) or not clip_coef >= 1.0:
        for g in grads.values():
            g *= clip_coef
    return xp.asarray(total_norm)


def clip_and_step(params: dict, grads: dict, state: AdamWState, *, lr: float, max_grad_norm: float,
                  weight_decay: float, decay_mask: dict[str, bool] | None, xp,
                  betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
    """One optimizer step of the recipe: clip ``grads`` to global norm ``max_grad_norm``
    (:func:`clip_grad_norm`, in place), then :func:`adamw_update` ``params`` and ``state`` in place
    with betas (0.9, 0.999) and eps 1e-8 unless given (RoBERTa: (0.9, 0.98), 1e-6).

    Returns the norm before clipping as a 0-d array on the device. Nothing here waits for the
    device, so the caller decides when to read the norm (and the loss) back; a non-finite gradient
    turns the updated weights into nan, so a caller must read them before it saves the weights.
    """
    grad_norm = clip_grad_norm(grads, max_grad_norm, xp=xp)
    adamw_update(params, grads, state, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                 decay_mask=decay_mask, xp=xp)
    return grad_norm


def check_clipping_arguments(grads: dict, max_norm: float) -> None:
    """One-line errors for clipping nothing or to a norm that is not positive."""
    if not grads:
        raise ValueError("clip_grad_norm got no gradients: pass the dict returned by the backward pass")
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}: use e.g. 1.0 (SpanBERT), or skip clipping")


def check_adamw_arguments(params, grads, state, *, lr, betas, eps, weight_decay, decay_mask) -> None:
    """One-line errors for settings out of range and for dicts whose names differ from the parameters'."""
    _check_hyperparameters(lr, betas, eps, weight_decay)
    _check_same_names(params, grads, "grads")
    _check_same_names(params, state.m, "optimizer state")
    if decay_mask is not None:
        _check_same_names(params, decay_mask, "decay_mask")


def _check_hyperparameters(lr, betas, eps, weight_decay) -> None:
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"learning rate must be finite and >= 0, got {lr}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}: SpanBERT uses (0.9, 0.999)")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}: SpanBERT uses 1e-8")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}: SpanBERT uses 0.01")


def _check_same_names(params: dict, other: dict, what: str) -> None:
    if params.keys() != other.keys():
        missing = sorted(params.keys() - other.keys())
        unexpected = sorted(other.keys() - params.keys())
        raise ValueError(
            f"{what} do not match the parameters (missing {missing[:3]}, unexpected {unexpected[:3]}): "
            f"{what} must have exactly the parameter names"
        )
