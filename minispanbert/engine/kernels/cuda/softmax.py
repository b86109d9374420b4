"""Fused softmax over the last axis (plain version and derivation: layers/softmax.py).

Forward, one block per row:   m = max_j x_j,  e_j = exp(x_j - m),  y_j = e_j / sum_k e_k
Backward, one block per row:  dx_j = y_j (dy_j - sum_k y_k dy_k)

The plain forward makes five passes over the (B, NH, T, T) attention scores (max, subtract, exp,
sum, divide) and allocates two temporaries; the kernel reads the row twice and writes it twice.
Cache: y, as the plain version.
"""
from __future__ import annotations

import numpy as np

from minispanbert.engine.kernels.cuda import ROW_REDUCTIONS, launch_rows, raw_kernel

KERNELS = ("softmax_forward", "softmax_backward")
SOURCE = ROW_REDUCTIONS + r"""
template <typename T>
__global__ void softmax_forward(const T* __restrict__ x, T* __restrict__ y, const int n_cols) {
    __shared__ T scratch[MAX_ROW_BLOCK];
    const long long offset = (long long)blockIdx.x * n_cols;
    const T* row_x = x + offset;
    T* row_y = y + offset;

    T row_max = row_x[0];  // any element of the row is a valid start for the max
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) row_max = row_x[c] > row_max ? row_x[c] : row_max;
    row_max = block_reduce(row_max, scratch, Max());

    T sum = 0;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const T e = exp(row_x[c] - row_max);
        row_y[c] = e;
        sum += e;
    }
    const T inv_sum = (T)1 / block_reduce(sum, scratch, Add());
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) row_y[c] *= inv_sum;  // each thread its own e_c
}

template <typename T>
__global__ void softmax_backward(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx,
                                 const int n_cols) {
    __shared__ T scratch[MAX_ROW_BLOCK];
    const long long offset = (long long)blockIdx.x * n_cols;
    const T* row_y = y + offset;
    const T* row_dy = dy + offset;
    T* row_dx = dx + offset;

    T dot = 0;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) dot += row_y[c] * row_dy[c];
    dot = block_reduce(dot, scratch, Add());
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) row_dx[c] = row_y[c] * (row_dy[c] - dot);
}
"""


def softmax_forward(x, *, xp):
    """x (..., N) -> (y (..., N), cache)."""
    x = xp.ascontiguousarray(x)
    y = xp.empty_like(x)
    n_cols = x.shape[-1]
    kernel = raw_kernel(xp, SOURCE, KERNELS, "softmax_forward", x.dtype)
    launch_rows(kernel, x.size // max(n_cols, 1), n_cols, (x, y, np.int32(n_cols)))
    return y, y


def softmax_backward(dy, cache, *, xp):
    """dy (..., N) -> dx (..., N)."""
    y = cache
    dy = xp.ascontiguousarray(dy, dtype=y.dtype)
    dx = xp.empty_like(dy)
    n_cols = dy.shape[-1]
    kernel = raw_kernel(xp, SOURCE, KERNELS, "softmax_backward", dy.dtype)
    launch_rows(kernel, dy.size // max(n_cols, 1), n_cols, (y, dy, dx, np.int32(n_cols)))
    return dx
