"""``python -m minispanbert.export_hf``: a run (or a random preset model) as a Hugging Face folder.

The command lives in minispanbert/interop/export_hf.py; this file lets ``-m`` find it."""
from minispanbert.interop.export_hf import main

if __name__ == "__main__":
    main()
