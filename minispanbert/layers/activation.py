"""The feed-forward activation chosen by name, as Hugging Face's ``hidden_act`` (``ACT2FN``):

    "gelu"      exact erf GeLU (BERT, SpanBERT, RoBERTa, ELECTRA)       layers/gelu.py
    "gelu_new"  tanh-approximated GeLU (ALBERT)                         layers/gelu.py
    "relu"      max(0, x) (the original Transformer)                    layers/relu.py

``activation_forward(x, name, xp=...)`` returns (y, cache) and the cache remembers the name, so
``activation_backward(dy, cache, xp=...)`` needs nothing else. Only this file knows the names.
"""
from __future__ import annotations

from minispanbert.layers import gelu, relu

ACTIVATIONS = ("gelu", "gelu_new", "relu")


def _forward_backward(name: str):
    """The (forward, backward) pair of the activation called ``name``."""
    if name == "gelu":
        return gelu.gelu_forward, gelu.gelu_backward
    if name == "gelu_new":
        return gelu.gelu_new_forward, gelu.gelu_new_backward
    if name == "relu":
        return relu.relu_forward, relu.relu_backward
    raise ValueError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")


def activation_forward(x, name, *, xp):
    """x (...) -> (act(x) (...), cache)."""
    y, cache = _forward_backward(name)[0](x, xp=xp)
    return y, (name, cache)


def activation_backward(dy, cache, *, xp):
    """dy (...) -> dx (...)."""
    name, inner = cache
    return _forward_backward(name)[1](dy, inner, xp=xp)
