"""SpanBERT's siblings on the same engine (bert-family-spec.md): each file is one model with its
loss, its batch builder and what the trainer needs from it as ``--objective NAME``.

    objectives.py        the registry behind --objective, and what an objective module provides
    spanbert.py          the core's SpanBERT as an objective (the default)
    bert.py              BERT: MLM + next-sentence prediction (also the base of RoBERTa and ALBERT)
    roberta.py           RoBERTa: MLM only, dynamic masking, FULL-SENTENCES, byte-level BPE
    albert.py            ALBERT: factorised embeddings, shared layers, n-gram MLM + SOP
    electra.py           ELECTRA: a generator MLM and a discriminator of replaced tokens
    pairs.py             NSP / SOP pairs of segments        full_sentences.py  RoBERTa's blocks
    bpe_tokenizer.py     byte-level BPE (RoBERTa)           ngram_masking.py   ALBERT's n-grams
    electra_masking.py   ELECTRA's 85/15 masking and the sampled replacements
    compare_objectives.py  python -m minispanbert.compare_objectives
"""
