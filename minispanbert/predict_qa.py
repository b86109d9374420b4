"""``python -m minispanbert.predict_qa``: SQuAD answers from a fine-tuned model folder.

The command lives in minispanbert/interop/predict_qa.py; this file lets ``-m`` find it."""
from minispanbert.interop.predict_qa import main

if __name__ == "__main__":
    main()
