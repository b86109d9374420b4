"""Hugging Face interoperability: load real BERT / SpanBERT checkpoints and their tokenizers into the
NumPy engine (`huggingface.load_pretrained`, `heads.bert_outputs`) and save minispanbert models as
folders that ``transformers`` opens (`huggingface.save_pretrained`)."""
