"""Pretraining data: corpora, WordPiece tokenizer, block packing and data-set downloads.

The pipeline from text to the masker's input, all on the host in NumPy:

    documents = read_corpus(path)                   # or resolve_default_corpus(data_dir)
    tok       = train_tokenizer((l for d in documents for l in d), vocab_size)
    encoded   = encode_documents(tok, documents)    # per line: ids int64, word_starts bool
    ids, word_starts = pack_blocks(encoded, seq_len - 2)   # blocks within one document each
    unigram   = unigram_distribution(ids, tok.get_vocab_size())

Command line: ``python -m minispanbert.data {list,download}`` (see ``__main__``).
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
from minispanbert.data.download import (
    DATASETS,
    DownloadError,
    dataset_dir,
    dataset_files,
    dataset_status,
    download,
    install_from,
    sha256_file,
)
from minispanbert.data.resolve import resolve_default_corpus
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
    "CLS_ID", "DATASETS", "Document", "DownloadError", "MASK_ID", "NUM_SPECIAL", "PAD_ID", "SEP_ID",
    "SPECIAL_TOKENS", "UNK_ID", "dataset_dir", "dataset_files", "dataset_status", "download",
    "encode_documents", "encode_lines", "install_from", "load_tokenizer", "pack_blocks",
    "pydoc_documents", "read_corpus", "read_text", "read_wikitext", "resolve_default_corpus",
    "save_tokenizer", "sha256_file", "split_documents", "wikitext_sentences",
    "train_tokenizer", "unigram_distribution",
]
