"""``python -m minispanbert.fill_mask``: the MLM head's top tokens for each [MASK] of a sentence.

The command lives in minispanbert/interop/fill_mask.py; this file lets ``-m`` find it."""
from minispanbert.interop.fill_mask import main

if __name__ == "__main__":
    main()
