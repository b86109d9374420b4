"""Numerical gradient checks: centred differences in float64, scored by a relative error.

    numerical_gradient(f, x, dout)   d<f(x), dout>/dx by centred differences, every element
    rel_error(analytic, numeric)     max|a - n| / max(|a| + |n|) -- one number per tensor;
                                     inf when either side holds a NaN or an infinity
    check_param_gradients(loss_fn, params, grads, ...)   every parameter tensor, every (or a
                                     sample of) element(s), worst relative error per name
    check_exact_zero(analytic, numeric, ...)   for a gradient that is exactly zero in theory
    worst_error(errors) / assert_errors_below(errors, tol)   the verdict on a {name: error} table

Non-finite values always fail. A NaN compares False with everything, so ``max(errors.values())``
can skip it and ``err >= tol`` never flags it; ``rel_error`` therefore returns ``inf`` (which sorts
last and fails every ``< tol``) and the helpers below test ``not err < tol``, never ``err >= tol``.

For a scalar f the centred difference (f(x + h e_i) - f(x - h e_i)) / 2h has error O(h^2); with
h = 1e-5 in float64 that leaves ~1e-10 of truncation error and ~1e-11 of rounding error, so an
analytic gradient that is right scores ~1e-8 or better, and one that is wrong scores ~1e-2 or worse.
For a tensor-valued f the check contracts with a fixed upstream gradient ``dout``
(CS231n ``eval_numerical_gradient_array``, llm.c's "fake loss"), so no output is assumed all-ones.

Run checks on NumPy arrays: a per-element loop on a GPU would copy to the host every element.
"""
from __future__ import annotations

import math

import numpy as np

TINY = 1e-30


def rel_error(analytic, numeric) -> float:
    """max|a - n| / max(|a| + |n|, tiny): 0 for identical tensors, 1 for opposite ones, and inf
    when either side has a non-finite element (a NaN gradient is never "close")."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"gradient shapes differ: analytic {a.shape} vs numeric {n.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(n))):
        return math.inf
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
    gradient is always seen. Returns ``{name: rel_error}``; a tensor whose analytic gradient has a
    non-finite element anywhere (sampled or not) scores inf without being perturbed.
    """
    missing = sorted(set(params) - set(grads))
    if missing:
        raise ValueError(f"no analytic gradient for parameters {missing}")
    rng = rng or np.random.default_rng(0)
    errors = {}
    for name, value in params.items():
        analytic = np.asarray(grads[name], dtype=np.float64)
        if analytic.shape != value.shape:
            raise ValueError(f"gradient of {name} has shape {analytic.shape}, the parameter {value.shape}")
        if not np.all(np.isfinite(analytic)):  # anywhere, not only in the sampled elements
            errors[name] = math.inf
            continue
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


def check_exact_zero(analytic, numeric, *, analytic_atol=1e-10, numeric_atol=1e-7) -> float:
    """For a gradient that is exactly zero in theory (e.g. the attention key bias: softmax ignores a
    shift shared by a whole score row), where a relative error compares two rounding noises: both
    sides must be finite and below their absolute tolerances. Returns 0.0, else raises
    AssertionError (a NaN fails: the test is ``not max <= atol``)."""
    a_max = float(np.max(np.abs(np.asarray(analytic, dtype=np.float64)), initial=0.0))
    n_max = float(np.max(np.abs(np.asarray(numeric, dtype=np.float64)), initial=0.0))
    if not (a_max <= analytic_atol and n_max <= numeric_atol):
        raise AssertionError(f"expected an exactly-zero gradient, got max|analytic| {a_max:.1e}, "
                             f"max|numeric| {n_max:.1e}")
    return 0.0


def _badness(err) -> float:
    """The sort key of an error: non-finite counts as the worst possible."""
    return float(err) if math.isfinite(err) else math.inf


def worst_error(errors: dict) -> tuple:
    """(name, error) of the worst entry, a NaN or an infinity counting as worst."""
    if not errors:
        raise ValueError("no gradient errors to judge: the check compared nothing")
    return max(errors.items(), key=lambda kv: _badness(kv[1]))


def failing(errors: dict, tolerance: float) -> dict:
    """The entries that are not finite or not below ``tolerance`` (``not err < tol``: NaN fails)."""
    return {name: err for name, err in errors.items() if not (math.isfinite(err) and err < tolerance)}


def assert_errors_below(errors: dict, tolerance: float, what: str = "gradient check") -> None:
    """AssertionError listing the worst entries unless every error is finite and below ``tolerance``
    (and there is at least one)."""
    worst_error(errors)
    bad = failing(errors, tolerance)
    if bad:
        raise AssertionError(f"{what}: {len(bad)} of {len(errors)} tensors at or above {tolerance:.0e} "
                             f"(or not finite); worst first:\n{format_errors(errors)}")


def format_errors(errors: dict, limit: int = 10) -> str:
    """The worst ``limit`` relative errors, one per line, for test failure messages and notebooks
    (non-finite ones first)."""
    worst = sorted(errors.items(), key=lambda kv: -_badness(kv[1]))[:limit]
    return "\n".join(f"{err:.2e}  {name}" for name, err in worst)
