"""Two-segment examples ``[CLS] A [SEP] B [SEP]`` for BERT's next-sentence prediction (NSP) and
ALBERT's sentence-order prediction (SOP), built from encoded documents as Google's
``create_pretraining_data.py`` does (bert-family-spec.md §2 and §4; BERT §3.1, ALBERT §3.1).

Per document, over its sentences (lines) in order::

    max_num_tokens = seq_len - 3;  target = max_num_tokens, or randint(2, max_num_tokens) w.p. 0.1
    fill a chunk with whole sentences until it reaches target (or the document ends), then:
        a_end ~ randint(1, len(chunk) - 1)   (1 for a one-sentence chunk);  A = chunk[:a_end]
        NSP:  w.p. 0.5, or always for a one-sentence chunk: B = sentences of ANOTHER document from
              a random start, filled to target - |A| (label 1, NotNext); the unused chunk
              sentences go back to the stream.  Else B = chunk[a_end:] (label 0, IsNext).
        SOP:  a one-sentence chunk: B from another document, label 1 (the ALBERT code's quirk);
              else B = chunk[a_end:] and w.p. 0.5 A and B are swapped (label 1), else kept (label 0).
    truncate the longer of A and B, from the front or the back (50/50), to max_num_tokens in all.

The labels are Hugging Face's: ``next_sentence_label`` 0 = IsNext, 1 = random; ``sentence_order_label``
0 = in order, 1 = swapped.

Where we differ from Google's code (noted where it happens):
* The random document is drawn uniformly among the OTHER documents, so B never comes from A's
  document (the code retries 10 times, which can fail on a tiny corpus).
* One pass over the corpus with one ``rng`` (the code makes ``dupe_factor`` = 10 passes); masks are
  drawn later, afresh at every step (``make_pair_batch``), as for every objective here.
* The coin decides only for chunks of two or more sentences; a one-sentence chunk is always
  NotNext / label 1, so the overall share of label 1 is 0.5 + (one-sentence chunks) / 2 (the
  examples record ``forced``; the tests check the coin on the rest, 0.50 +- 0.01).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from minispanbert.data.tokenizer import CLS_ID, PAD_ID, SEP_ID
from minispanbert.layers.cross_entropy import IGNORE_INDEX

MODES = ("nsp", "sop")
SHORT_SEQ_PROB = 0.1


@dataclass(frozen=True)
class PairExample:
    """One ``[CLS] A [SEP] B [SEP]`` sequence before masking (NumPy arrays of length n <= seq_len).

    input_ids       (n,) ids with the three specials; element 0 of the tuple-like record
    word_starts     (n,) True at the first piece of each word (specials are words of their own)
    token_type_ids  (n,) 0 for [CLS] A [SEP], 1 for B [SEP]
    label           0 IsNext / in order, 1 random next / swapped
    forced          True when a one-sentence chunk forced label 1 (no coin was thrown)
    a_doc, b_doc    the documents A and B came from (equal unless B is a random segment)
    """

    input_ids: np.ndarray
    word_starts: np.ndarray
    token_type_ids: np.ndarray
    label: int
    forced: bool
    a_doc: int
    b_doc: int

    def __getitem__(self, i):  # example[0] is the ids, as for every objective's examples
        return (self.input_ids, self.word_starts)[i]


def _concat(segments):
    if not segments:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    return (np.concatenate([s[0] for s in segments]).astype(np.int64),
            np.concatenate([s[1] for s in segments]).astype(bool))


def truncate_pair(a, b, max_num_tokens: int, rng) -> tuple:
    """Google's ``truncate_seq_pair``: while |A| + |B| > max, drop a token from the longer one, at
    its front or its back with equal probability. a and b are (ids, word_starts) pairs."""
    (a_ids, a_starts), (b_ids, b_starts) = a, b
    a_lo, a_hi, b_lo, b_hi = 0, len(a_ids), 0, len(b_ids)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        front = rng.random() < 0.5
        if a_hi - a_lo > b_hi - b_lo:
            a_lo, a_hi = (a_lo + 1, a_hi) if front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if front else (b_lo, b_hi - 1)
    a_starts, b_starts = a_starts[a_lo:a_hi].copy(), b_starts[b_lo:b_hi].copy()
    a_starts[:1] = True  # a segment cut mid-word starts a word of its own
    b_starts[:1] = True
    return (a_ids[a_lo:a_hi], a_starts), (b_ids[b_lo:b_hi], b_starts)


def _assemble(a, b, label, forced, a_doc, b_doc) -> PairExample:
    (a_ids, a_starts), (b_ids, b_starts) = a, b
    ids = np.concatenate([[CLS_ID], a_ids, [SEP_ID], b_ids, [SEP_ID]]).astype(np.int64)
    starts = np.concatenate([[True], a_starts, [True], b_starts, [True]]).astype(bool)
    types = np.zeros(ids.size, dtype=np.int64)
    types[a_ids.size + 2:] = 1
    return PairExample(ids, starts, types, int(label), bool(forced), a_doc, b_doc)


def _random_segment(documents, doc_index, target_len, rng):
    """Sentences of a random other document from a random start, until target_len tokens."""
    other = int(rng.integers(len(documents) - 1))
    other += other >= doc_index  # uniform over the other documents: never A's own
    doc = documents[other]
    segment, length = [], 0
    for j in range(int(rng.integers(len(doc))), len(doc)):
        segment.append(doc[j])
        length += len(doc[j][0])
        if length >= target_len:
            break
    return segment, other


def pairs_from_document(documents, doc_index, *, seq_len, mode, rng, short_seq_prob=SHORT_SEQ_PROB) -> list:
    """Google's ``create_instances_from_document`` for one document (see the module docstring)."""
    document = documents[doc_index]
    max_num_tokens = seq_len - 3
    target = max_num_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_num_tokens + 1))
    examples, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i][0])
        if i == len(document) - 1 or length >= target:
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            a = _concat(chunk[:a_end])
            forced = len(chunk) == 1
            b_doc = doc_index
            if forced or (mode == "nsp" and rng.random() < 0.5):
                segment, b_doc = _random_segment(documents, doc_index, target - len(a[0]), rng)
                b, label = _concat(segment), 1
                i -= len(chunk) - a_end  # the unused sentences go back to the stream
            else:
                b, label = _concat(chunk[a_end:]), 0
                if mode == "sop" and rng.random() < 0.5:
                    a, b, label = b, a, 1
            a, b = truncate_pair(a, b, max_num_tokens, rng)
            if len(a[0]) and len(b[0]):
                examples.append(_assemble(a, b, label, forced, doc_index, b_doc))
            chunk, length = [], 0
        i += 1
    return examples


def build_pair_examples(encoded_documents: Sequence, *, seq_len: int, mode: str, rng) -> list[PairExample]:
    """Every document's pairs, documents in order. ``encoded_documents`` as ``encode_documents``
    returns them (one list of (ids, word_starts) per document); empty lines and documents are
    dropped. NSP and SOP need at least two non-empty documents (B may come from another one)."""
    if mode not in MODES:
        raise ValueError(f"unknown pair mode {mode!r}: choose one of {', '.join(MODES)}")
    if seq_len < 5:
        raise ValueError(f"--seq-len {seq_len} leaves no room for [CLS] A [SEP] B [SEP]: use at least 5")
    documents = [[line for line in doc if len(line[0])] for doc in encoded_documents]
    documents = [doc for doc in documents if doc]
    if len(documents) < 2:
        raise ValueError(f"{mode.upper()} needs a corpus of at least two documents (a random segment comes from "
                         f"another document), got {len(documents)}: give more text, with documents separated "
                         "by a blank line")
    out = []
    for d in range(len(documents)):
        out.extend(pairs_from_document(documents, d, seq_len=seq_len, mode=mode, rng=rng))
    return out


@dataclass(frozen=True)
class PairBatch:
    """A padded batch of B pair sequences of length T (NumPy int64), rows on axis 0.

    input_ids, attention_mask, token_type_ids, mlm_labels  (B, T), as ``masking.PretrainingBatch``
    sentence_labels  (B,)  the NSP or SOP label of each row
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    mlm_labels: np.ndarray
    sentence_labels: np.ndarray


def make_pair_batch(examples, mask, rng, *, seq_len: int, pad_id: int = PAD_ID) -> PairBatch:
    """Mask each example with ``mask(ids, word_starts, rng) -> (input_ids, mlm_labels)`` (in order,
    sharing ``rng``; specials are never masked), pad to ``seq_len`` and stack."""
    B = len(examples)
    if B == 0:
        raise ValueError("make_pair_batch needs at least one example")
    input_ids = np.full((B, seq_len), pad_id, dtype=np.int64)
    attention_mask = np.zeros((B, seq_len), dtype=np.int64)
    token_type_ids = np.zeros((B, seq_len), dtype=np.int64)
    mlm_labels = np.full((B, seq_len), IGNORE_INDEX, dtype=np.int64)
    for row, ex in enumerate(examples):
        n = ex.input_ids.size
        if n > seq_len:
            raise ValueError(f"example {row} has {n} tokens but seq_len is {seq_len}: build the pairs with this seq_len")
        input_ids[row, :n], mlm_labels[row, :n] = mask(ex.input_ids, ex.word_starts, rng)
        attention_mask[row, :n] = 1
        token_type_ids[row, :n] = ex.token_type_ids
    labels = np.array([ex.label for ex in examples], dtype=np.int64)
    return PairBatch(input_ids, attention_mask, token_type_ids, mlm_labels, labels)
