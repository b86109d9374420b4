"""The benchmark (``bench.py``, ``python -m minispanbert.bench``) and the equivalent PyTorch model it
is measured against (``torch_reference.py``; torch is passed in, never imported by the package)."""
