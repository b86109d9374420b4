"""RoBERTa's byte-level BPE (RoBERTa §4.4, GPT-2's scheme) trained with Hugging Face ``tokenizers``.

    pre-tokenizer  ByteLevel(add_prefix_space=False): text -> bytes mapped to 256 printable symbols,
                   split GPT-2 style (a leading space is part of the word: "Ġcat")
    model          BPE merges learned from the corpus; every byte is in the base alphabet, so no
                   text is ever unknown (<unk> only appears where the corpus writes it)
    decoder        ByteLevel: symbols -> bytes -> UTF-8

Special tokens at RoBERTa's ids: <s>=0 (bos / [CLS]), <pad>=1, </s>=2 (eos / [SEP]), <unk>=3,
<mask>=4; ids >= 5 are ordinary, so the project's maskers (which never mask ids < 5 and write
[MASK] as id 4) work unchanged. RobertaConfig's pad/bos/eos = 1/0/2 match. WikiText's literal
``<unk>`` is the special token's text, so it encodes to id 3 directly.

``word_starts`` comes from the encoding's word ids, as for WordPiece (tokenizer.py): a word is one
pre-tokenized chunk ("Ġcat", ",", "Ġ1990").
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from minispanbert.data.tokenizer import (
    ENCODE_BATCH_LINES,
    LONG_RUN,
    WIKITEXT_UNK,
    _to_arrays,
    without_padding_or_truncation,
)

BPE_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BOS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = range(len(BPE_SPECIAL_TOKENS))


def check_bpe_special_ids(tok: Tokenizer, source: str) -> None:
    for expected_id, token in enumerate(BPE_SPECIAL_TOKENS):
        if tok.token_to_id(token) != expected_id:
            raise ValueError(f"{source}: special token {token} has id {tok.token_to_id(token)}, expected "
                             f"{expected_id}; this is not a minispanbert RoBERTa tokenizer (train one with "
                             "--objective roberta)")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer of at most ``vocab_size`` ids (specials and the 256 bytes included)."""
    if not isinstance(vocab_size, int) or vocab_size <= 256 + len(BPE_SPECIAL_TOKENS):
        raise ValueError(f"a byte-level BPE vocabulary needs more than 261 ids (256 bytes + 5 specials), "
                         f"got {vocab_size!r}: use a larger preset")
    seen = False

    def prepared():
        nonlocal seen
        for text in texts:
            seen = seen or bool(text.strip())
            # the trainer does not split specials out of its input; a run of over 100 characters
            # without a space costs the BPE trainer the square of its length and teaches it nothing
            yield LONG_RUN.sub(" ", text.replace(WIKITEXT_UNK, " "))

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(prepared(), trainer)
    if not seen:
        raise ValueError("train_bpe_tokenizer got no text: pass a non-empty corpus")
    check_bpe_special_ids(tok, "trained tokenizer")
    return tok


def load_bpe_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tokenizer file {path} not found: train one with --objective roberta")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for bad JSON or schema
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not a tokenizer.json ({reason}): pass the tokenizer.json a run saved, or leave "
                         "--tokenizer out to train a new one") from None
    check_bpe_special_ids(tok, str(path))
    return without_padding_or_truncation(tok)


def encode_bpe_documents(tok: Tokenizer, documents: Sequence[Sequence[str]]) -> list:
    """Per document, per line: (ids int64, word_starts bool), no <s>/</s> added."""
    lines = [line for doc in documents for line in doc]
    flat = []
    for first in range(0, len(lines), ENCODE_BATCH_LINES):
        flat.extend(_to_arrays(enc) for enc in tok.encode_batch(lines[first:first + ENCODE_BATCH_LINES],
                                                                 add_special_tokens=False))
    out, pos = [], 0
    for doc in documents:
        out.append(flat[pos:pos + len(doc)])
        pos += len(doc)
    return out
