"""minispanbert: SpanBERT from scratch on NumPy and CuPy, every backward pass written by hand."""

__version__ = "0.1.0"
