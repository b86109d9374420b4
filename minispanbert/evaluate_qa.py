"""``python -m minispanbert.evaluate_qa``: the official SQuAD v1.1 EM/F1 of a predictions file (minispanbert/finetune/evaluate_qa.py)."""
from minispanbert.finetune.evaluate_qa import main

if __name__ == "__main__":
    main()
