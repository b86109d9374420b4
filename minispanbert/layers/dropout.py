"""Inverted dropout (Srivastava et al. 2014): zero each unit with probability p, scale the rest.

Forward (training):  keep ~ Bernoulli(1 - p) drawn once,   y = x * keep / (1 - p)
Forward (eval, or p = 0):  y = x, no mask is drawn
Backward:  dx = dy * keep / (1 - p)   (the same mask; identity at eval)

The mask comes from a generator passed in (:class:`minispanbert.keyed_random.KeyedRandom`, keyed by
seed, step and batch row), so a run is reproducible, a resumed run draws the same masks, and a
row gets the same mask wherever the batch is computed in pieces. The cache is the scaled mask, or None.
"""
from __future__ import annotations


def dropout_forward(x, p, rng, *, xp, train):
    """x (...) -> (y (...), cache). ``rng`` may be None when not training or p == 0."""
    if not train or p == 0.0:
        return x, None
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    scaled_mask = (rng.random(x.shape, dtype=x.dtype) >= p).astype(x.dtype)
    scaled_mask *= 1.0 / (1.0 - p)
    return x * scaled_mask, scaled_mask


def dropout_backward(dy, cache, *, xp):
    """dy (...) -> dx (...)."""
    if cache is None:
        return dy
    return dy * cache
