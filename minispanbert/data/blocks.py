"""Pack encoded documents into pretraining blocks of at most ``max_tokens`` tokens.

SpanBERT's input is one contiguous block per example, ``[CLS] block [SEP]`` (paper §3.3,
single-sequence training without NSP): consecutive whole sentences of one document, packed greedily
up to ``max_tokens = seq_len - 2`` tokens, never crossing a document boundary. [CLS]/[SEP] are
added later by the masking code, which is why the budget is seq_len - 2.

Greedy packing, per document, over its lines in order:

    for each line (a sentence): if it does not fit in the current block, close the block; append it.
    at the end of the document: close the block.

A line longer than ``max_tokens`` is first cut into pieces of at most ``max_tokens`` tokens. Each
cut goes at the last word start that keeps the piece within the limit, so words stay whole; only a
single word longer than ``max_tokens`` pieces is cut mid-word. The pieces are then packed like
lines, so the tail of a long line can share a block with the next sentences.

``word_starts[0]`` of every block is set True: a block that begins mid-word (only possible after
such a mid-word cut) treats its leading "##" pieces as a word of their own, because the masker
counts span lengths in whole words inside the block and cannot see the previous block.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EncodedLine = tuple[np.ndarray, np.ndarray]  # (ids int64 (n,), word_starts bool (n,))


def _cut_points(word_starts: np.ndarray, max_tokens: int) -> list[int]:
    """Boundaries 0 = c_0 < c_1 < ... < c_k = n with every piece c_{j+1} - c_j <= max_tokens."""
    n = len(word_starts)
    cuts = [0]
    while n - cuts[-1] > max_tokens:
        start = cuts[-1]
        # Candidate cut positions are start+1 .. start+max_tokens; take the last word start.
        candidates = np.flatnonzero(word_starts[start + 1 : start + max_tokens + 1])
        cuts.append(start + 1 + int(candidates[-1]) if candidates.size else start + max_tokens)
    cuts.append(n)
    return cuts


def _join(pieces: list[EncodedLine]) -> EncodedLine:
    """Concatenate line pieces into one block; its first token always counts as a word start."""
    ids = np.concatenate([p[0] for p in pieces]).astype(np.int64, copy=False)
    starts = np.concatenate([p[1] for p in pieces]).astype(bool)
    starts[0] = True
    return ids, starts


def pack_blocks(
    documents_encoded: Sequence[Sequence[EncodedLine]], max_tokens: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Greedy whole-line packing -> (block ids list, block word_starts list), in corpus order.

    ``documents_encoded``: one list of ``(ids, word_starts)`` per document, as returned by
    ``encode_documents``. Every block has 1..max_tokens tokens and comes from one document;
    lines with no tokens are skipped.
    """
    if not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer (seq_len - 2), got {max_tokens!r}")
    blocks: list[EncodedLine] = []
    for doc in documents_encoded:
        pieces: list[EncodedLine] = []
        filled = 0
        for ids, word_starts in doc:
            if len(ids) != len(word_starts):
                raise ValueError(
                    f"a line has {len(ids)} ids but {len(word_starts)} word_starts: encode it with encode_lines"
                )
            if len(ids) == 0:
                continue
            cuts = _cut_points(np.asarray(word_starts, dtype=bool), max_tokens)
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                if filled + (hi - lo) > max_tokens:
                    blocks.append(_join(pieces))
                    pieces, filled = [], 0
                pieces.append((ids[lo:hi], word_starts[lo:hi]))
                filled += hi - lo
        if pieces:
            blocks.append(_join(pieces))
    return [b[0] for b in blocks], [b[1] for b in blocks]
