"""Fused CPU softmax cross-entropy (plain version and equations: layers/cross_entropy.py).

Forward: the plain op's own NumPy code, run on blocks of rows by the threads
(``backend.parallel_for``): NumPy's exp is a SIMD loop, which numba's scalar exp (no SVML here)
is not, so the forward gains from the cores, not from fusion. Backward, per row, in place on the cached exp array (as the plain op):
scale by w_n / sum_n and subtract w_n at the label. The cache is the plain one:
(exp_shifted, sum_exp, safe_labels, keep, count).
"""
from __future__ import annotations

import numpy as np

from minispanbert.engine.kernels.cpu import cpu_kernel, prange
from minispanbert.engine.parallel.threads import cpu_threads, parallel_for
from minispanbert.layers.cross_entropy import IGNORE_INDEX


@cpu_kernel
def _backward(dlogits, sum_exp, labels, row_weight):
    n, v = dlogits.shape
    for r in prange(n):
        scale = row_weight[r] / sum_exp[r]
        for j in range(v):
            dlogits[r, j] *= scale
        dlogits[r, labels[r]] -= row_weight[r]


def cross_entropy_forward(logits, labels, *, xp, ignore_index=IGNORE_INDEX):
    keep = labels != ignore_index
    safe_labels = np.where(keep, labels, 0)
    n = logits.shape[0]
    exp_shifted = np.empty_like(logits)
    sum_exp = np.empty(n, dtype=logits.dtype)
    log_prob_target = np.empty(n, dtype=logits.dtype)

    def block(part):  # the plain op's forward on a block of rows, written into the shared outputs
        shifted = np.subtract(logits[part], logits[part].max(axis=1, keepdims=True), out=exp_shifted[part])
        target_logit = shifted[np.arange(shifted.shape[0]), safe_labels[part]]
        np.exp(shifted, out=shifted)
        shifted.sum(axis=1, out=sum_exp[part])
        log_prob_target[part] = target_logit - np.log(sum_exp[part])

    parallel_for(block, n, chunk=max(1, -(-n // cpu_threads())), xp=np)
    count = np.maximum(keep.sum(), 1).astype(logits.dtype)
    loss = -(log_prob_target * keep).sum() / count
    return loss, (exp_shifted, sum_exp, safe_labels, keep, count)


def cross_entropy_backward(dloss, cache, *, xp):
    exp_shifted, sum_exp, safe_labels, keep, count = cache
    row_weight = (keep * (dloss / count)).astype(exp_shifted.dtype)
    _backward(exp_shifted, sum_exp, safe_labels, row_weight)
    return exp_shifted
