"""ReLU, the Transformer's original feed-forward activation (Vaswani et al. 2017, eq. 2), for
``hidden_act="relu"`` (BERT and its family use GeLU; this is here for comparison).

Forward:   y = max(0, x)
Backward:  dx = dy * [x > 0]        (the subgradient 0 is taken at x = 0)
Cache: the boolean mask x > 0.
"""
from __future__ import annotations


def relu_forward(x, *, xp):
    """x (...) -> (max(0, x) (...), cache)."""
    positive = x > 0
    return x * positive, positive


def relu_backward(dy, cache, *, xp):
    """dy (...) -> dx (...)."""
    positive = cache
    # y = x * [x > 0]
    return dy * positive
