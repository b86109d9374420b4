"""Pretraining text, on the host in NumPy: corpora, the WordPiece tokenizer and block packing.

    documents = read_corpus(path)                   # a list of documents, each a list of sentences
    tok       = train_tokenizer((l for d in documents for l in d), vocab_size)
    encoded   = encode_documents(tok, documents)    # per line: ids int64, word_starts bool
    ids, word_starts = pack_blocks(encoded, seq_len - 2)   # blocks within one document each
    unigram   = unigram_distribution(ids, tok.get_vocab_size())

Downloading the public data sets (``python -m minispanbert.data``) lives in engine/datasets.py.
"""
from minispanbert.data.blocks import pack_blocks
from minispanbert.data.corpus import (
    Document,
    pydoc_documents,
    read_corpus,
    read_text,
    read_wikitext,
    split_documents,
    wikitext_sentences,
)
from minispanbert.data.tokenizer import (
    CLS_ID,
    MASK_ID,
    NUM_SPECIAL,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    encode_documents,
    encode_lines,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
    unigram_distribution,
)

__all__ = [
    "CLS_ID", "Document", "MASK_ID", "NUM_SPECIAL", "PAD_ID", "SEP_ID", "SPECIAL_TOKENS", "UNK_ID",
    "encode_documents", "encode_lines", "load_tokenizer", "pack_blocks", "pydoc_documents", "read_corpus",
    "read_text", "read_wikitext", "save_tokenizer", "split_documents", "train_tokenizer", "unigram_distribution",
    "wikitext_sentences",
]
