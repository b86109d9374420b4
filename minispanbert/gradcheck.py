"""Numerical gradient checks: centred differences in float64, scored by a relative error.

    numerical_gradient(f, x, dout)   d<f(x), dout>/dx by centred differences, every element
    rel_error(analytic, numeric)     max|a - n| / max(|a| + |n|) -- one number per tensor
    check_param_gradients(loss_fn, params, grads, ...)   every parameter tensor, every (or a
                                     sample of) element(s), worst relative error per name

For a scalar f the centred difference (f(x + h e_i) - f(x - h e_i)) / 2h has error O(h^2); with
h = 1e-5 in float64 that leaves ~1e-10 of truncation error and ~1e-11 of rounding error, so an
analytic gradient that is right scores ~1e-8 or better, and one that is wrong scores ~1e-2 or worse.
For a tensor-valued f the check contracts with a fixed upstream gradient ``dout``
(CS231n ``eval_numerical_gradient_array``, llm.c's "fake loss"), so no output is assumed all-ones.

Run checks on NumPy arrays: a per-element loop on a GPU would copy to the host every element.
"""
from __future__ import annotations

import numpy as np

TINY = 1e-30


def rel_error(analytic, numeric) -> float:
    """max|a - n| / max(|a| + |n|, tiny): 0 for identical tensors, 1 for opposite ones."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"gradient shapes differ: analytic {a.shape} vs numeric {n.shape}")
    scale = max(float(np.max(np.abs(a) + np.abs(n), initial=0.0)), TINY)
    return float(np.max(np.abs(a - n), initial=0.0)) / scale


def _require_float64(x):
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise ValueError("gradient checks need float64 NumPy arrays: cast with .astype(np.float64) first")


def numerical_gradient(f, x, dout=None, *, h=1e-5, indices=None):
    """Centred-difference gradient of ``sum(f() * dout)`` with respect to ``x``.

    ``f`` takes no argument and reads ``x``, which is perturbed in place and restored exactly.
    ``dout`` defaults to 1 (f must then return a scalar). With ``indices`` (flat indices) only
    those elements are computed; the rest of the returned array is NaN.
    """
    _require_float64(x)
    grad = np.full(x.shape, np.nan) if indices is not None else np.zeros(x.shape)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient perturbs x in place: pass a C-contiguous array")
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    weight = 1.0 if dout is None else dout
    for i in (range(flat_x.size) if indices is None else indices):
        old = flat_x[i]
        flat_x[i] = old + h
        plus = np.sum(np.asarray(f()) * weight)
        flat_x[i] = old - h
        minus = np.sum(np.asarray(f()) * weight)
        flat_x[i] = old
        flat_grad[i] = (plus - minus) / (2 * h)
    return grad


def check_param_gradients(loss_fn, params, grads, *, max_elements=None, rng=None, h=1e-5,
                          must_touch=None):
    """Compare analytic ``grads`` with centred differences of ``loss_fn()`` for every parameter.

    ``loss_fn`` reads ``params`` (float64 NumPy) and returns a scalar. Every tensor in ``params``
    is checked (a missing gradient is an error). With ``max_elements``, a tensor bigger than that
    is checked on a random sample of its elements, oversampling the rows listed in
    ``must_touch[name]`` (e.g. the embedding rows the batch uses) so the non-zero part of a sparse
    gradient is always seen. Returns ``{name: rel_error}``.
    """
    missing = sorted(set(params) - set(grads))
    if missing:
        raise ValueError(f"no analytic gradient for parameters {missing}")
    rng = rng or np.random.default_rng(0)
    errors = {}
    for name, value in params.items():
        analytic = np.asarray(grads[name], dtype=np.float64)
        indices = None
        if max_elements is not None and value.size > max_elements:
            sample = rng.choice(value.size, size=max_elements // 2, replace=False)
            rows = (must_touch or {}).get(name)
            if rows is not None and value.ndim == 2:
                row_elems = (np.asarray(rows)[:, None] * value.shape[1] + np.arange(value.shape[1])).reshape(-1)
                sample = np.concatenate([sample, rng.choice(row_elems, size=min(row_elems.size, max_elements // 2), replace=False)])
            indices = np.unique(sample)
        numeric = numerical_gradient(loss_fn, value, h=h, indices=indices)
        if indices is not None:
            analytic = analytic.reshape(-1)[indices]
            numeric = numeric.reshape(-1)[indices]
        errors[name] = rel_error(analytic, numeric)
    return errors


def format_errors(errors: dict, limit: int = 10) -> str:
    """The worst ``limit`` relative errors, one per line, for test failure messages and notebooks."""
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:limit]
    return "\n".join(f"{err:.2e}  {name}" for name, err in worst)
