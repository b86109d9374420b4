"""Fused softmax cross-entropy with an ignore index (plain version: layers/cross_entropy.py).

Forward, one block per row n of the logits z (N, V):
    m_n = max_v z_nv,  lse_n = m_n + log sum_v exp(z_nv - m_n)
    row_loss_n = lse_n - z_n[y_n]   (0 for ignored rows),   loss = sum_n row_loss_n / max(|K|, 1)
Backward, one block per row:
    dz_nv = w_n (exp(z_nv - lse_n) - [v == y_n]),   w_n = dloss / max(|K|, 1) for counted rows, else 0

Only N + N numbers (the log-sum-exp and the row loss) are written in forward. The plain version
keeps the whole exp(z - m) array in its cache, an extra (N, V) write and read; this one keeps the
logits themselves (already in memory) and recomputes exp(z - lse) in the backward pass, where it
is needed once. Cache: (logits, labels, lse, keep, count): NOT the plain layout, so a fused
forward needs the fused backward.
"""
from __future__ import annotations

import numpy as np

from minispanbert.engine.kernels.cuda import ROW_REDUCTIONS, launch_rows, raw_kernel
from minispanbert.layers.cross_entropy import IGNORE_INDEX

KERNELS = ("cross_entropy_forward", "cross_entropy_backward")
SOURCE = ROW_REDUCTIONS + r"""
template <typename T>
__global__ void cross_entropy_forward(const T* __restrict__ logits, const long long* __restrict__ labels,
                                      T* __restrict__ row_loss, T* __restrict__ row_lse,
                                      const int n_cols, const long long ignore_index) {
    __shared__ T scratch[MAX_ROW_BLOCK];
    const T* z = logits + (long long)blockIdx.x * n_cols;

    T row_max = z[0];
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) row_max = z[c] > row_max ? z[c] : row_max;
    row_max = block_reduce(row_max, scratch, Max());

    T sum = 0;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) sum += exp(z[c] - row_max);
    sum = block_reduce(sum, scratch, Add());

    if (threadIdx.x == 0) {
        const T lse = row_max + log(sum);
        const long long label = labels[blockIdx.x];
        row_lse[blockIdx.x] = lse;
        row_loss[blockIdx.x] = label == ignore_index ? (T)0 : lse - z[label];
    }
}

template <typename T>
__global__ void cross_entropy_backward(const T* __restrict__ logits, const long long* __restrict__ labels,
                                       const T* __restrict__ row_lse, const T* __restrict__ row_weight,
                                       T* __restrict__ dlogits, const int n_cols) {
    const long long offset = (long long)blockIdx.x * n_cols;
    const T lse = row_lse[blockIdx.x];
    const T weight = row_weight[blockIdx.x];
    const long long label = labels[blockIdx.x];  // an ignored row has weight 0: its gradient is 0
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const T one_hot = c == label ? (T)1 : (T)0;
        dlogits[offset + c] = weight * (exp(logits[offset + c] - lse) - one_hot);
    }
}
"""


def cross_entropy_forward(logits, labels, *, xp, ignore_index=IGNORE_INDEX):
    """logits (N, V), labels (N,) int -> (loss 0-d array, cache). Shapes are checked by the
    caller (layers.cross_entropy); labels must be in [0, V) or ``ignore_index`` (< 0)."""
    logits = xp.ascontiguousarray(logits)
    labels = xp.ascontiguousarray(labels, dtype=xp.int64)
    n_rows, n_cols = logits.shape
    row_loss = xp.empty(n_rows, dtype=logits.dtype)
    row_lse = xp.empty(n_rows, dtype=logits.dtype)
    kernel = raw_kernel(xp, SOURCE, KERNELS, "cross_entropy_forward", logits.dtype)
    launch_rows(kernel, n_rows, n_cols,
                (logits, labels, row_loss, row_lse, np.int32(n_cols), np.int64(ignore_index)))
    keep = labels != ignore_index
    count = xp.maximum(keep.sum(), 1).astype(logits.dtype)
    loss = row_loss.sum() / count
    return loss, (logits, labels, row_lse, keep, count)


def cross_entropy_backward(dloss, cache, *, xp):
    """dloss (scalar) -> dlogits (N, V)."""
    logits, labels, row_lse, keep, count = cache
    row_weight = (keep * (dloss / count)).astype(logits.dtype)
    dlogits = xp.empty_like(logits)
    n_rows, n_cols = logits.shape
    kernel = raw_kernel(xp, SOURCE, KERNELS, "cross_entropy_backward", logits.dtype)
    launch_rows(kernel, n_rows, n_cols, (logits, labels, row_lse, row_weight, dlogits, np.int32(n_cols)))
    return dlogits
