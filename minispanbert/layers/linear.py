"""Affine map y = x W^T + b, with W stored (out, in) like torch.nn.Linear and Hugging Face BERT.

Forward:   y[..., o] = sum_i x[..., i] W[o, i] + b[o]          x (..., IN), W (OUT, IN), b (OUT,)
Backward:  dx = dy W                                            (..., IN)
           dW = sum over leading axes of dy^T x                 (OUT, IN)
           db = sum over leading axes of dy                     (OUT,)
"""
from __future__ import annotations


def linear_forward(x, weight, bias, *, xp):
    """x (..., IN), weight (OUT, IN), bias (OUT,) -> (y (..., OUT), cache)."""
    # One 2-D GEMM over all leading positions: NumPy's stacked (3-D) matmul against a transposed
    # weight does not reach BLAS as a single call.
    y = x.reshape(-1, x.shape[-1]) @ weight.T
    y += bias
    return y.reshape(*x.shape[:-1], weight.shape[0]), (x, weight)


def linear_backward(dy, cache, *, xp):
    """dy (..., OUT) -> (dx (..., IN), dweight (OUT, IN), dbias (OUT,))."""
    x, weight = cache
    dy2d = dy.reshape(-1, dy.shape[-1])
    dweight = dy2d.T @ x.reshape(-1, x.shape[-1])
    dbias = dy2d.sum(axis=0)
    dx = (dy2d @ weight).reshape(x.shape)
    return dx, dweight, dbias
