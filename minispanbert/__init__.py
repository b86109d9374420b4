"""minispanbert: SpanBERT from scratch on NumPy and CuPy, every backward pass written by hand.

The learning core is this folder's modules and its layers/, model/ and data/ packages (README, "The
core"); family/, finetune/, interop/, engine/ and coursework/ build on it and it never imports them.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("minispanbert")
except PackageNotFoundError:  # a source tree that was never pip-installed
    __version__ = "0+unknown"
