"""The feed-forward activation chosen by name, as Hugging Face's ``hidden_act`` (``ACT2FN``):

    "gelu"      exact erf GeLU (BERT, SpanBERT, RoBERTa, ELECTRA)       layers/gelu.py
    "gelu_new"  tanh-approximated GeLU (ALBERT)                         layers/gelu.py
    "relu"      max(0, x) (the original Transformer)                    layers/relu.py

``activation_forward(x, name, xp=...)`` returns (y, cache) and the cache remembers the name, so
``activation_backward(dy, cache, xp=...)`` needs nothing else. Only this table knows the names.
"""
from __future__ import annotations

from minispanbert.layers.gelu import gelu_backward, gelu_forward, gelu_new_backward, gelu_new_forward
from minispanbert.layers.relu import relu_backward, relu_forward

ACTIVATIONS = {
    "gelu": (gelu_forward, gelu_backward),
    "gelu_new": (gelu_new_forward, gelu_new_backward),
    "relu": (relu_forward, relu_backward),
}


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return name


def activation_forward(x, name, *, xp):
    """x (...) -> (act(x) (...), cache)."""
    y, cache = ACTIVATIONS[check_activation(name)][0](x, xp=xp)
    return y, (name, cache)


def activation_backward(dy, cache, *, xp):
    """dy (...) -> dx (...)."""
    name, inner = cache
    return ACTIVATIONS[name][1](dy, inner, xp=xp)
