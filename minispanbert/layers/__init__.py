"""Hand-written ops, one concept per file, each a ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> grads`` pair side by side (the CS231n ``layers.py`` contract).

This is reference maths only. The command-line tools put faster kernels in place of a few of these
ops for their run (``minispanbert/engine/kernels``); that is why callers write
``layernorm.layernorm_forward(...)`` (the function looked up in its module when called) rather than
importing the function itself.
"""
