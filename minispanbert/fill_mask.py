"""``python -m minispanbert.fill_mask``: the MLM head's top tokens for each [MASK] of a sentence (minispanbert/interop/fill_mask.py)."""
from minispanbert.interop.fill_mask import main

if __name__ == "__main__":
    main()
