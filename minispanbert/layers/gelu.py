"""GeLU, the exact (erf) form used by BERT and SpanBERT (Hendrycks & Gimpel 2016).

Forward:   gelu(x) = x * Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2   (standard normal CDF)
Backward:  gelu'(x) = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

Not the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): SpanBERT's code
uses erf. (In float32 on NumPy, ``backend.erf`` evaluates erf by a rational approximation
accurate to 4e-7 absolute, far below float32 training noise; float64 uses scipy's erf.) Cache: x and Phi(x) (Phi is reused by the derivative).
"""
from __future__ import annotations

import math

from ..backend import erf

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
    # phi(x) = exp(-x^2 / 2) / sqrt(2 pi), built in one buffer (no temporaries for -x^2 / 2)
    pdf = x * x
    pdf *= -0.5
    xp.exp(pdf, out=pdf)
    pdf *= _INV_SQRT_2PI
    pdf *= x
    pdf += cdf
    pdf *= dy
    return pdf
