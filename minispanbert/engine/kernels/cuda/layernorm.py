"""Fused LayerNorm over the last axis (plain version and derivation: layers/layernorm.py).

Forward, one block per row x in R^H:
    mu = mean(x),  var = mean((x - mu)^2),  rstd = 1 / sqrt(var + eps)
    xhat = (x - mu) rstd,  y = gamma * xhat + beta
The variance is taken around the mean in a second pass over the row (still in cache), not as
E[x^2] - mu^2, which cancels catastrophically in float32 when |mu| >> std.

Backward, with g = dy * gamma:
    dx = rstd (g - mean(g) - xhat mean(g xhat))     one block per row
    dgamma = sum_rows dy xhat,  dbeta = sum_rows dy  a column kernel: each thread owns one
        column of one chunk of rows and writes a partial sum; the few partials per column are
        then added by CuPy. (Atomic adds from every row would serialise on the H addresses.)

Cache: (xhat, rstd (..., 1), gamma), the plain version's layout, so the two versions mix.
"""
from __future__ import annotations

import numpy as np

from minispanbert.engine.kernels.cuda import ROW_REDUCTIONS, launch_rows, raw_kernel

PARAM_GRAD_CHUNKS = 128  # partial sums per column: enough blocks to fill a GPU, few enough to add up cheaply
PARAM_GRAD_BLOCK = 256   # threads (columns) per block of the column kernel

KERNELS = ("layernorm_forward", "layernorm_backward_input", "layernorm_backward_params")
SOURCE = ROW_REDUCTIONS + r"""
template <typename T>
__global__ void layernorm_forward(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                                  T* __restrict__ y, T* __restrict__ xhat, T* __restrict__ rstd,
                                  const int n_cols, const T eps) {
    __shared__ T scratch[MAX_ROW_BLOCK];
    const long long offset = (long long)blockIdx.x * n_cols;
    const T* row_x = x + offset;

    T sum = 0;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) sum += row_x[c];
    const T mean = block_reduce(sum, scratch, Add()) / n_cols;

    T squares = 0;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const T centred = row_x[c] - mean;
        squares += centred * centred;
    }
    const T row_rstd = (T)1 / sqrt(block_reduce(squares, scratch, Add()) / n_cols + eps);

    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const T normalised = (row_x[c] - mean) * row_rstd;
        xhat[offset + c] = normalised;
        y[offset + c] = gamma[c] * normalised + beta[c];
    }
    if (threadIdx.x == 0) rstd[blockIdx.x] = row_rstd;
}

template <typename T>
__global__ void layernorm_backward_input(const T* __restrict__ dy, const T* __restrict__ xhat,
                                         const T* __restrict__ gamma, const T* __restrict__ rstd,
                                         T* __restrict__ dx, const int n_cols) {
    __shared__ T scratch[MAX_ROW_BLOCK];
    const long long offset = (long long)blockIdx.x * n_cols;

    T sum_g = 0, sum_g_xhat = 0;
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const T g = dy[offset + c] * gamma[c];
        sum_g += g;
        sum_g_xhat += g * xhat[offset + c];
    }
    const T mean_g = block_reduce(sum_g, scratch, Add()) / n_cols;
    const T mean_g_xhat = block_reduce(sum_g_xhat, scratch, Add()) / n_cols;
    const T row_rstd = rstd[blockIdx.x];
    for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
        const T g = dy[offset + c] * gamma[c];
        dx[offset + c] = row_rstd * (g - mean_g - xhat[offset + c] * mean_g_xhat);
    }
}

// Grid (ceil(n_cols / blockDim.x), n_chunks): thread -> column c, blockIdx.y -> chunk of rows.
// Neighbouring threads read neighbouring columns of a row, so every read is coalesced.
template <typename T>
__global__ void layernorm_backward_params(const T* __restrict__ dy, const T* __restrict__ xhat,
                                          T* __restrict__ dgamma_partial, T* __restrict__ dbeta_partial,
                                          const int n_rows, const int n_cols, const int rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n_cols) return;
    const int first = blockIdx.y * rows_per_chunk;
    const int last = first + rows_per_chunk < n_rows ? first + rows_per_chunk : n_rows;
    T dgamma = 0, dbeta = 0;
    for (int r = first; r < last; ++r) {
        const long long i = (long long)r * n_cols + c;
        dgamma += dy[i] * xhat[i];
        dbeta += dy[i];
    }
    dgamma_partial[(long long)blockIdx.y * n_cols + c] = dgamma;
    dbeta_partial[(long long)blockIdx.y * n_cols + c] = dbeta;
}
"""


def layernorm_forward(x, gamma, beta, *, xp, eps=1e-12):
    """x (..., H), gamma (H,), beta (H,) -> (y (..., H), cache)."""
    if gamma.dtype != x.dtype or beta.dtype != x.dtype:
        raise ValueError(f"LayerNorm got x {x.dtype} with gamma {gamma.dtype} / beta {beta.dtype}: use one dtype")
    x = xp.ascontiguousarray(x)
    gamma, beta = xp.ascontiguousarray(gamma), xp.ascontiguousarray(beta)
    n_cols = x.shape[-1]
    y, xhat = xp.empty_like(x), xp.empty_like(x)
    rstd = xp.empty(x.shape[:-1] + (1,), dtype=x.dtype)
    kernel = raw_kernel(xp, SOURCE, KERNELS, "layernorm_forward", x.dtype)
    launch_rows(kernel, x.size // max(n_cols, 1), n_cols, (x, gamma, beta, y, xhat, rstd, np.int32(n_cols),
                                                           x.dtype.type(eps)))
    return y, (xhat, rstd, gamma)


def layernorm_backward(dy, cache, *, xp):
    """dy (..., H) -> (dx (..., H), dgamma (H,), dbeta (H,))."""
    xhat, rstd, gamma = cache
    dy = xp.ascontiguousarray(dy, dtype=xhat.dtype)
    xhat, rstd, gamma = (xp.ascontiguousarray(a) for a in (xhat, rstd, gamma))
    n_cols = dy.shape[-1]
    n_rows = dy.size // max(n_cols, 1)

    dx = xp.empty_like(dy)
    kernel = raw_kernel(xp, SOURCE, KERNELS, "layernorm_backward_input", dy.dtype)
    launch_rows(kernel, n_rows, n_cols, (dy, xhat, gamma, rstd, dx, np.int32(n_cols)))

    n_chunks = max(1, min(n_rows, PARAM_GRAD_CHUNKS))
    rows_per_chunk = -(-n_rows // n_chunks)
    partials = xp.empty((2, n_chunks, n_cols), dtype=dy.dtype)
    kernel = raw_kernel(xp, SOURCE, KERNELS, "layernorm_backward_params", dy.dtype)
    grid = (-(-n_cols // PARAM_GRAD_BLOCK), n_chunks)
    kernel(grid, (PARAM_GRAD_BLOCK,), (dy, xhat, partials[0], partials[1], np.int32(n_rows), np.int32(n_cols),
                                       np.int32(rows_per_chunk)))
    dgamma, dbeta = partials.sum(axis=1)
    return dx, dgamma, dbeta
