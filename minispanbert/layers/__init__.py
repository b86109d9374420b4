"""Hand-written ops, one concept per file, each a ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> grads`` pair side by side (the CS231n ``layers.py`` contract)."""
