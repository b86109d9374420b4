"""Multi-head scaled dot-product self-attention with an additive padding mask
(Vaswani et al. 2017, eq. 1; BERT's BertSelfAttention + the output projection of BertSelfOutput).

Shapes: B batch, T sequence length, H hidden, NH heads, D = H / NH per head.

Forward:
    Q = x Wq^T + bq,  K = x Wk^T + bk,  V = x Wv^T + bv          (B, T, H) -> split -> (B, NH, T, D)
    S = Q K^T / sqrt(D) + mask_bias                              (B, NH, T, T)
    A = softmax(S) over keys,  A~ = dropout(A)
    C = A~ V  -> merge heads -> (B, T, H)
    out = C Wo^T + bo
``mask_bias`` (B, 1, 1, T) is 0 at real keys and a huge negative number at padded keys, so a
padded key gets weight exp(-huge) = 0 exactly and cannot influence any real position.

Backward, in reverse order:
    dC = dout Wo,  dWo = dout^T C,  dbo = sum dout
    dA~ = dC V^T,  dV = A~^T dC
    dA = dropout_backward(dA~),  dS = A * (dA - sum_k A dA)       (softmax Jacobian)
    dQ = dS K / sqrt(D),  dK = dS^T Q / sqrt(D)
    dx = dQ Wq + dK Wk + dV Wv  (+ the three weight and bias gradients)
The key bias bk gets an exactly-zero gradient: adding bk to every key shifts each score row by
the constant q.bk, and softmax is invariant to that. Gradient checks therefore compare bk's
gradient with an absolute tolerance.
"""
from __future__ import annotations

import math

from minispanbert.layers import softmax
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.linear import linear_backward, linear_forward


def padding_mask_bias(attention_mask, dtype, *, xp):
    """attention_mask (B, T), 1 = real token, 0 = padding -> additive bias (B, 1, 1, T)."""
    very_negative = float(xp.finfo(dtype).min) / 2  # /2: adding a score cannot overflow to -inf
    bias = (1 - attention_mask.astype(dtype)) * very_negative
    return bias[:, None, None, :]


def _split_heads(x, num_heads):
    """(B, T, H) -> (B, NH, T, D)."""
    B, T, H = x.shape
    return x.reshape(B, T, num_heads, H // num_heads).transpose(0, 2, 1, 3)


def _merge_heads(x):
    """(B, NH, T, D) -> (B, T, H)."""
    B, NH, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, NH * D)


def self_attention_forward(x, wq, bq, wk, bk, wv, bv, wo, bo, mask_bias, *, num_heads, xp,
                           dropout_p=0.0, rng=None, train=False):
    """x (B, T, H), weights (H, H), biases (H,), mask_bias (B, 1, 1, T) -> (out (B, T, H), cache)."""
    H = x.shape[-1]
    if H % num_heads:
        raise ValueError(f"hidden size {H} is not divisible by the number of heads {num_heads}")
    scale = 1.0 / math.sqrt(H // num_heads)
    q, q_cache = linear_forward(x, wq, bq, xp=xp)
    k, k_cache = linear_forward(x, wk, bk, xp=xp)
    v, v_cache = linear_forward(x, wv, bv, xp=xp)
    qh, kh, vh = (_split_heads(t, num_heads) for t in (q, k, v))
    scores = qh @ kh.transpose(0, 1, 3, 2)
    scores *= scale
    scores += mask_bias
    probs, softmax_cache = softmax.softmax_forward(scores, xp=xp)
    dropped, dropout_cache = dropout_forward(probs, dropout_p, rng, xp=xp, train=train)
    context = _merge_heads(dropped @ vh)
    out, o_cache = linear_forward(context, wo, bo, xp=xp)
    cache = (q_cache, k_cache, v_cache, o_cache, qh, kh, vh, softmax_cache, dropped, dropout_cache,
             scale, num_heads)
    return out, cache


def attention_probabilities(cache):
    """(B, heads, T, T) the attention weights the forward applied to the values (after dropout,
    as Hugging Face's ``output_attentions``; at eval time the softmax itself)."""
    return cache[8]


def self_attention_backward(dout, cache, *, xp):
    """dout (B, T, H) -> (dx, dwq, dbq, dwk, dbk, dwv, dbv, dwo, dbo)."""
    (q_cache, k_cache, v_cache, o_cache, qh, kh, vh, softmax_cache, dropped, dropout_cache,
     scale, num_heads) = cache
    # out = context Wo^T + bo
    dcontext, dwo, dbo = linear_backward(dout, o_cache, xp=xp)
    dcontext_h = _split_heads(dcontext, num_heads)
    # context_h = dropped @ vh
    ddropped = dcontext_h @ vh.transpose(0, 1, 3, 2)
    dvh = dropped.transpose(0, 1, 3, 2) @ dcontext_h
    # dropped = dropout(probs); probs = softmax(scores)
    dprobs = dropout_backward(ddropped, dropout_cache, xp=xp)
    dscores = softmax.softmax_backward(dprobs, softmax_cache, xp=xp)
    # scores = (qh @ kh^T) * scale + mask_bias   (the mask is a constant)
    dscores *= scale
    dqh = dscores @ kh
    dkh = dscores.transpose(0, 1, 3, 2) @ qh
    dx, dwq, dbq = linear_backward(_merge_heads(dqh), q_cache, xp=xp)
    dx_k, dwk, dbk = linear_backward(_merge_heads(dkh), k_cache, xp=xp)
    dx_v, dwv, dbv = linear_backward(_merge_heads(dvh), v_cache, xp=xp)
    dx += dx_k
    dx += dx_v
    return dx, dwq, dbq, dwk, dbk, dwv, dbv, dwo, dbo
