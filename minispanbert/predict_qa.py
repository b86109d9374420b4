"""``python -m minispanbert.predict_qa``: SQuAD answers from a fine-tuned model folder (minispanbert/interop/predict_qa.py)."""
from minispanbert.interop.predict_qa import main

if __name__ == "__main__":
    main()
