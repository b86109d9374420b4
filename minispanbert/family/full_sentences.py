"""RoBERTa's FULL-SENTENCES inputs (RoBERTa §4.2; fairseq ``TokenBlockDataset``, break mode
"complete"; bert-family-spec.md §3): blocks of whole sentences taken contiguously from the corpus,
which MAY cross document boundaries, with one separator token between documents.

    for each document, for each sentence (cut first into pieces of at most max_tokens, at word starts):
        unit = [SEP] + sentence   if it is a document's first sentence and the block is not empty
             = sentence           otherwise
        if the unit does not fit in the block: close the block (and drop a leading [SEP]: a block
                                               start needs no separator); append the unit
    close the last block

So every block but the last is "full": the next sentence would not have fitted (tested). Blocks are
wrapped later as ``<s> block </s>`` (masking.make_pretraining_batch with RoBERTa's ids), and the
separator is ``</s>``, RoBERTa's end-of-sentence id (spec §8 leaves the exact boundary token of the
authors' runs unverified). Unlike ``blocks.pack_blocks`` (SpanBERT's single-document blocks).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minispanbert.data.blocks import _cut_points, _join


def pack_full_sentences(documents_encoded: Sequence, max_tokens: int, separator_id: int
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Encoded documents -> (block ids list, block word_starts list), in corpus order; every block
    has 1..max_tokens tokens."""
    if not isinstance(max_tokens, (int, np.integer)) or max_tokens < 2:
        raise ValueError(f"max_tokens must be an integer >= 2 (seq_len - 2), got {max_tokens!r}")
    separator = (np.array([separator_id], dtype=np.int64), np.array([True]))
    blocks, pieces, filled = [], [], 0
    for doc in documents_encoded:
        first = True
        for ids, word_starts in doc:
            if len(ids) == 0:
                continue
            cuts = _cut_points(np.asarray(word_starts, dtype=bool), max_tokens)
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                unit = [(ids[lo:hi], word_starts[lo:hi])]
                if first and pieces:
                    unit.insert(0, separator)
                first = False
                size = sum(len(u[0]) for u in unit)
                if filled + size > max_tokens:
                    blocks.append(_join(pieces))
                    unit = unit[-1:]  # a block never starts with the separator
                    pieces, filled = [], 0
                    size = len(unit[0][0])
                pieces.extend(unit)
                filled += size
    if pieces:
        blocks.append(_join(pieces))
    return [b[0] for b in blocks], [b[1] for b in blocks]
