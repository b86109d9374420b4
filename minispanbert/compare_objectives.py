"""``python -m minispanbert.compare_objectives``: the BERT family's objectives pretrained and fine-tuned on equal terms.

The command lives in minispanbert/family/compare_objectives.py; this file lets ``-m`` find it."""
from minispanbert.family.compare_objectives import main

if __name__ == "__main__":
    main()
