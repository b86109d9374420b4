"""Cased WordPiece tokenizer (Hugging Face ``tokenizers``) with minispanbert's fixed special ids.

SpanBERT reuses BERT-cased's WordPiece vocabulary (paper, implementation details). We train our own,
much smaller one on the pretraining corpus with the same pipeline as BERT-cased:

    normalizer     BertNormalizer(lowercase=False, strip_accents=False)   (cased: "Apple" != "apple")
    pre-tokenizer  BertPreTokenizer: split on whitespace, and every punctuation character is a word
    model          WordPiece, continuation pieces carry the "##" prefix, unknown words -> [UNK]
    decoder        WordPiece: drop "##" and join pieces; cleanup re-attaches " ." " ," " ?" " !"

Special tokens have fixed ids project-wide, in this order: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3,
[MASK]=4; ids >= 5 are ordinary tokens. There is no post-processor: ``encode`` never adds [CLS] or
[SEP]; the masking code adds them around a block after masking (so they are never masked).

A "word" is one pre-tokenized word: a word-start piece plus its following "##" pieces. The span
masker counts span lengths in these words (SpanBERT §3.1), so ``encode_lines`` returns a boolean
``word_starts`` array beside each id array, read from the encoding's ``word_ids``.

WikiText-2's tokenised version writes out-of-vocabulary words as the literal ``<unk>``; we replace
it by the text "[UNK]", which the tokenizer recognises as the special token (id 1), so ``<unk>``
never becomes the three pieces "<", "unk", ">". The same happens to any literal "[MASK]", "[CLS]",
... in the text: they are read as the special tokens.

What decode recovers: the BERT pre-tokenizer throws whitespace away, so ``decode(encode(x)) == x``
holds for text whose only punctuation is ``. , ? !`` written directly after a word; other
punctuation comes back space separated ("isn't" -> "isn ' t", "(a)" -> "( a )"). What always holds
is that re-encoding the decoded text gives the same ids (tested).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL = len(SPECIAL_TOKENS)
CONTINUATION_PREFIX = "##"
WIKITEXT_UNK = "<unk>"
ENCODE_BATCH_LINES = 16384


def _prepare(text: str) -> str:
    """Map WikiText's literal ``<unk>`` to the special token text "[UNK]" (see module docstring)."""
    return text.replace(WIKITEXT_UNK, SPECIAL_TOKENS[UNK_ID])


# WordPiece encodes a word longer than this many characters as [UNK] (the model's
# max_input_chars_per_word, 100 as in BERT), so such words teach the trainer nothing useful, while
# its cost grows with the square of a word's length (a 2 MB line without spaces, of letters, emoji,
# symbols or combining accents, ran for > 10 minutes, deaf to Ctrl-C inside the Rust trainer). Words
# this long, as the tokenizer's own normalizer and pre-tokenizer cut them (so CJK text, split into
# one-character words, stays), are left out of training.
MAX_WORD_CHARS = 100
LONG_RUN = re.compile(r"\S{%d,}" % (MAX_WORD_CHARS + 1))  # only a line with such a run can hold an overlong word


def _training_text(text: str) -> str:
    """Text for the WordPiece trainer: ``<unk>``, special-token strings and overlong words removed.

    The trainer, unlike ``encode``, does not split registered special tokens out of its input, so
    a literal "[UNK]" would teach it pieces such as "[UNK" and "##NK" (checked in the tests).
    """
    for token in (WIKITEXT_UNK, *SPECIAL_TOKENS):
        text = text.replace(token, " ")
    if not LONG_RUN.search(text):
        return text
    words = _PRE_TOKENIZER.pre_tokenize_str(_NORMALIZER.normalize_str(text))
    return " ".join(word for word, _ in words if len(word) <= MAX_WORD_CHARS)


_NORMALIZER = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                         lowercase=False)
_PRE_TOKENIZER = pre_tokenizers.BertPreTokenizer()


def _empty_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS[UNK_ID], continuing_subword_prefix=CONTINUATION_PREFIX,
                                     max_input_chars_per_word=MAX_WORD_CHARS))
    tok.normalizer = _NORMALIZER
    tok.pre_tokenizer = _PRE_TOKENIZER
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX, cleanup=True)
    return tok


def check_special_ids(tok: Tokenizer, source: str) -> None:
    """Refuse a tokenizer whose special tokens do not sit at the project's fixed ids 0..4."""
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != expected_id:
            raise ValueError(
                f"{source}: special token {token} has id {tok.token_to_id(token)}, expected {expected_id}; "
                "this is not a minispanbert tokenizer, retrain it with train_tokenizer"
            )


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a cased WordPiece tokenizer on ``texts`` (lines or documents, any granularity).

    ``vocab_size`` is a target including the 5 specials; the trainer always keeps every character
    it saw, so a tiny target on a varied corpus can end a little above it. Use
    ``tok.get_vocab_size()`` as the model's V.

    Not reproducible across processes: ``tokenizers`` (0.23) breaks ties between equally frequent
    merges in the order of its internal hash maps, which are seeded at random per process (also
    with one thread, ``RAYON_NUM_THREADS=1``), and it offers no seed. Two runs on the same text get
    vocabularies that differ in a few pieces and in many ids, so runs meant to be compared must
    share one saved tokenizer (``python -m minispanbert.train --tokenizer PATH``).
    """
    if not isinstance(vocab_size, int) or vocab_size <= NUM_SPECIAL:
        raise ValueError(f"vocab_size must be an integer > {NUM_SPECIAL} (the special tokens), got {vocab_size!r}")
    seen_text = False

    def prepared():
        nonlocal seen_text
        for text in texts:
            if text.strip():
                seen_text = True
            yield _training_text(text)

    tok = _empty_tokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=CONTINUATION_PREFIX,
        show_progress=False,
    )
    # The trainer puts the specials first in the vocabulary (ids 0..4, checked below) and registers
    # them as added tokens, so encode() recognises "[UNK]" etc. written in the text.
    tok.train_from_iterator(prepared(), trainer)
    if not seen_text:
        raise ValueError("train_tokenizer got no text: pass a non-empty corpus")
    check_special_ids(tok, "trained tokenizer")
    return tok


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> Path:
    """Write ``tok`` as a tokenizer.json file at ``path`` (a run's checkpoints carry their own copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tok.to_str(), encoding="utf-8")
    return path


def without_padding_or_truncation(tok: Tokenizer) -> Tokenizer:
    """``tok`` without the padding and truncation a tokenizer.json may switch on (sentence-transformers'
    files pad and cut every text to 128 pieces): the model would attend to the [PAD] ids and every
    text would look cut. Batches pad themselves and count what they cut, so every loader calls this.
    A copy when either is set (the caller's tokenizer keeps its settings), else ``tok`` itself."""
    if tok.padding is None and tok.truncation is None:
        return tok
    plain = Tokenizer.from_str(tok.to_str())
    plain.no_padding()
    plain.no_truncation()
    return plain


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer.json written by ``save_tokenizer``; ValueError if missing, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tokenizer file {path} not found: train one with train_tokenizer and save_tokenizer")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for bad JSON or schema
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not a tokenizer.json ({first_line}): pass the tokenizer.json a run saved, or "
                         "leave --tokenizer out to train a new one") from None
    check_special_ids(tok, str(path))
    return without_padding_or_truncation(tok)


def encode_lines(tok: Tokenizer, lines: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Encode each line to ``(ids int64 (n,), word_starts bool (n,))`` with batched (parallel) calls.

    ``word_starts[i]`` is True where token i begins a new pre-tokenized word (``word_ids`` changes),
    i.e. exactly at the pieces without the "##" prefix. No [CLS]/[SEP] is added. A line with no
    tokens (only whitespace or control characters) gives two empty arrays.
    """
    out = []
    # Batches of a bounded size: encode_batch runs in parallel in Rust, but each Encoding object
    # also stores offsets and masks, so one batch of a WikiText-103-sized corpus would not fit.
    for first in range(0, len(lines), ENCODE_BATCH_LINES):
        batch = [_prepare(line) for line in lines[first : first + ENCODE_BATCH_LINES]]
        out.extend(_to_arrays(enc) for enc in tok.encode_batch(batch, add_special_tokens=False))
    return out


def _to_arrays(enc) -> tuple[np.ndarray, np.ndarray]:
    """One ``tokenizers.Encoding`` -> (ids, word_starts) arrays."""
    ids = np.asarray(enc.ids, dtype=np.int64)
    # With add_special_tokens=False every token, in-text specials included, has a word id.
    word_ids = np.asarray(enc.word_ids, dtype=np.int64)
    word_starts = np.ones(len(word_ids), dtype=bool)
    word_starts[1:] = word_ids[1:] != word_ids[:-1]
    return ids, word_starts


def unigram_distribution(token_id_arrays: Iterable[np.ndarray], vocab_size: int) -> np.ndarray:
    """Corpus unigram probabilities p (V,) float64 for the masker's random replacement tokens.

    SpanBERT §3.1 (as BERT) replaces 10% of masked spans by random tokens; the authors' code
    samples them from the corpus unigram distribution. Specials (ids < 5, [UNK] included) get
    probability exactly 0 so they are never sampled.
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ids in token_id_arrays:
        ids = np.asarray(ids)
        if ids.size == 0:
            continue
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        if bad.size:
            raise ValueError(
                f"token id {int(bad[0])} is outside [0, {vocab_size}): "
                "pass the tokenizer's get_vocab_size() as vocab_size"
            )
        counts += np.bincount(ids, minlength=vocab_size)
    counts[:NUM_SPECIAL] = 0
    total = counts.sum()
    if total == 0:
        raise ValueError("unigram_distribution found no ordinary tokens (ids >= 5): the corpus is empty")
    return counts / total


def encode_documents(tok: Tokenizer, documents: Sequence[Sequence[str]]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """``encode_lines`` over every line of every document in one batch, regrouped per document.

    The result is what ``pack_blocks`` takes: one list of ``(ids, word_starts)`` per document.
    """
    flat = encode_lines(tok, [line for doc in documents for line in doc])
    out, pos = [], 0
    for doc in documents:
        out.append(flat[pos : pos + len(doc)])
        pos += len(doc)
    return out
