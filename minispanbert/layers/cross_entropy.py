"""Softmax cross-entropy with an ignore index, averaged over the targets that count.

Forward, for logits z (N, V) and integer labels y (N,), with K = {n : y_n != IGNORE_INDEX}:

    log p_n = z_n - m_n - log sum_v exp(z_nv - m_n),   m_n = max_v z_nv   (stable log-softmax)
    loss    = -(1 / |K|) * sum_{n in K} log p_n[y_n]

Backward ("softmax minus one-hot"):

    dloss/dz_n = (softmax(z_n) - onehot(y_n)) / |K|   for n in K,   exactly 0 for n not in K.

With no counted target (|K| = 0) the loss and the gradient are 0, so a batch without SBO
targets is harmless instead of a NaN. Cache: the softmax probabilities (reused as the gradient's
storage, so backward may be called once per forward).
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
    probs = logits - logits.max(axis=1, keepdims=True)
    target_logit = probs[rows, safe_labels]
    xp.exp(probs, out=probs)
    sum_exp = probs.sum(axis=1)
    probs /= sum_exp[:, None]
    log_prob_target = target_logit - xp.log(sum_exp)
    count = xp.maximum(keep.sum(), 1).astype(logits.dtype)
    loss = -(log_prob_target * keep).sum() / count
    return loss, (probs, safe_labels, keep, count)


def cross_entropy_backward(dloss, cache, *, xp):
    """dloss (scalar) -> dlogits (N, V)."""
    probs, safe_labels, keep, count = cache
    dlogits = probs
    dlogits[xp.arange(probs.shape[0]), safe_labels] -= 1.0
    dlogits *= (keep * (dloss / count)).astype(probs.dtype)[:, None]
    return dlogits
