"""Softmax cross-entropy with an ignore index, averaged over the targets that count.

Forward, for logits z (N, V) and integer labels y (N,), with K = {n : y_n != IGNORE_INDEX}:

    log p_n = z_n - m_n - log sum_v exp(z_nv - m_n),   m_n = max_v z_nv   (stable log-softmax)
    loss    = -(1 / |K|) * sum_{n in K} log p_n[y_n]

Backward ("softmax minus one-hot"):

    dloss/dz_n = (softmax(z_n) - onehot(y_n)) / |K|   for n in K,   exactly 0 for n not in K.

With no counted target (|K| = 0) the loss and the gradient are 0, so a batch without SBO
targets is harmless instead of a NaN. Cache: e = exp(z - m) and its row sums s, NOT yet divided:
backward forms softmax = e / s and the 1/|K| scaling in one pass over the (N, V) array instead of
two (the logits are the largest arrays of a step). e is reused as the gradient's storage, so
backward may be called once per forward.
"""
from __future__ import annotations

IGNORE_INDEX = -100


def cross_entropy_forward(logits, labels, *, xp, ignore_index=IGNORE_INDEX):
    """logits (N, V) float, labels (N,) int -> (loss 0-d array, cache)."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"cross_entropy expects logits (N, V) and labels (N,), got {logits.shape} and {labels.shape}"
        )
    keep = labels != ignore_index
    safe_labels = xp.where(keep, labels, 0)
    rows = xp.arange(logits.shape[0])
    exp_shifted = logits - logits.max(axis=1, keepdims=True)
    target_logit = exp_shifted[rows, safe_labels]
    xp.exp(exp_shifted, out=exp_shifted)
    sum_exp = exp_shifted.sum(axis=1)  # >= 1: the max's own term is exp(0)
    log_prob_target = target_logit - xp.log(sum_exp)
    count = xp.maximum(keep.sum(), 1).astype(logits.dtype)
    loss = -(log_prob_target * keep).sum() / count
    return loss, (exp_shifted, sum_exp, safe_labels, keep, count)


def cross_entropy_backward(dloss, cache, *, xp):
    """dloss (scalar) -> dlogits (N, V)."""
    exp_shifted, sum_exp, safe_labels, keep, count = cache
    # dz_n = w_n (softmax(z_n) - onehot(y_n)),  w_n = dloss / |K| for n in K, else 0
    row_weight = (keep * (dloss / count)).astype(exp_shifted.dtype)
    dlogits = exp_shifted
    dlogits *= (row_weight / sum_exp)[:, None]  # w_n e_n / s_n = w_n softmax(z_n)
    dlogits[xp.arange(dlogits.shape[0]), safe_labels] -= row_weight
    return dlogits
