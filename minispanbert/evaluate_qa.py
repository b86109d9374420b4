"""``python -m minispanbert.evaluate_qa``: the official SQuAD v1.1 EM/F1 of a predictions file.

The command lives in minispanbert/finetune/evaluate_qa.py; this file lets ``-m`` find it."""
from minispanbert.finetune.evaluate_qa import main

if __name__ == "__main__":
    main()
