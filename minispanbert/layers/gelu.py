"""GeLU, the exact (erf) form used by BERT and SpanBERT (Hendrycks & Gimpel 2016).

Forward:   gelu(x) = x * Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2   (standard normal CDF)
Backward:  gelu'(x) = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

Not the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): SpanBERT's code
uses erf. (In float32 on NumPy, ``backend.erf`` evaluates erf by a rational approximation
accurate to 4e-7 absolute, far below float32 training noise; float64 uses scipy's erf.)
Cache: x and Phi(x) (Phi is reused by the derivative).

``fused=True`` (the default) runs the one-kernel CuPy version in
``minispanbert/fused/gelu.py`` when ``xp`` is CuPy; ``fused=False``, or NumPy, runs the plain
code below: the reference that the notebooks and gradient checks use and that the fused
kernel is tested against. Pass the same ``fused``
to backward as to forward.
"""
from __future__ import annotations

import math

from ..backend import erf, is_cupy
from ..fused import gelu as fused_gelu

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_forward(x, *, xp, fused=True):
    """x (...) -> (gelu(x) (...), cache)."""
    if fused and is_cupy(xp):
        return fused_gelu.gelu_forward(x, xp=xp)
    cdf = erf(x * _INV_SQRT2, xp=xp)
    cdf += 1.0
    cdf *= 0.5
    return x * cdf, (x, cdf)


def gelu_backward(dy, cache, *, xp, fused=True):
    """dy (...) -> dx (...)."""
    if fused and is_cupy(xp):
        return fused_gelu.gelu_backward(dy, cache, xp=xp)
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
