"""The benchmark (``bench.py``, ``python -m minispanbert.bench``; its fine-tuning row in
``finetune_bench.py``) and the equivalent PyTorch models it is measured against (``torch_reference.py``;
torch is passed in, never imported by the package)."""
