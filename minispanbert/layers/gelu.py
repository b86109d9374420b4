"""GeLU (Hendrycks & Gimpel 2016) in its two forms: the exact erf form of BERT, SpanBERT, RoBERTa and
ELECTRA (Hugging Face ``hidden_act="gelu"``), and the tanh approximation of ALBERT (``"gelu_new"``).

Forward:   gelu(x) = x * Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2   (standard normal CDF)
Backward:  gelu'(x) = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

``gelu_forward``/``gelu_backward`` are the erf form: SpanBERT's code uses erf. (In float32 on
NumPy, ``backend.erf`` evaluates erf by a rational approximation accurate to 4e-7 absolute, far
below float32 training noise; float64 uses scipy's erf.) Cache: x and Phi(x) (Phi is reused by the
derivative).

The tanh form, ``gelu_new_forward``/``gelu_new_backward`` (ALBERT's TF ``gelu``, spec §4 item 5):

    g(x)  = 0.5 x (1 + tanh u),   u = sqrt(2/pi) (x + 0.044715 x^3)
    g'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 0.134145 x^2)

(0.134145 = 3 * 0.044715.) It differs from the erf form by up to 4.7e-4 (at |x| ~ 2.7), which is
enough to fail a 1e-10 parity test against ALBERT, so the two are distinct ops. Cache: x and tanh u.
"""
from __future__ import annotations

import math

from minispanbert.backend import erf

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_forward(x, *, xp):
    """x (...) -> (gelu(x) (...), cache)."""
    cdf = erf(x * _INV_SQRT2, xp=xp)
    cdf += 1.0
    cdf *= 0.5
    return x * cdf, (x, cdf)


def gelu_backward(dy, cache, *, xp):
    """dy (...) -> dx (...)."""
    x, cdf = cache
    # gelu(x) = x Phi(x):  gelu'(x) = Phi(x) + x phi(x)
    # phi(x) = exp(-x^2 / 2) / sqrt(2 pi), built in one buffer (no temporaries for -x^2 / 2)
    pdf = x * x
    pdf *= -0.5
    xp.exp(pdf, out=pdf)
    pdf *= _INV_SQRT_2PI
    pdf *= x
    pdf += cdf
    pdf *= dy
    return pdf


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715


def gelu_new_forward(x, *, xp):
    """x (...) -> (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (...), cache (x, tanh u))."""
    u = x * x
    u *= _TANH_CUBIC
    u += 1.0
    u *= x
    u *= _SQRT_2_OVER_PI
    t = xp.tanh(u, out=u)
    y = t + 1.0
    y *= x
    y *= 0.5
    return y, (x, t)


def gelu_new_backward(dy, cache, *, xp):
    """dy (...) -> dx (...)."""
    x, t = cache
    # g = 0.5 x (1 + t), t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3):
    # g' = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    du = x * x
    du *= 3.0 * _TANH_CUBIC
    du += 1.0
    du *= _SQRT_2_OVER_PI
    du *= 1.0 - t * t
    du *= x
    du += 1.0 + t
    du *= 0.5
    du *= dy
    return du
