"""``python -m minispanbert.export_hf``: a run (or a random preset model) as a Hugging Face folder (minispanbert/interop/export_hf.py)."""
from minispanbert.interop.export_hf import main

if __name__ == "__main__":
    main()
