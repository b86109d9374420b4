"""Single-sequence model inputs: ``[CLS] pieces [SEP]`` padded to the longest row of the set, as
BERT feeds one sentence (BERT §3, Figure 2: segment A only, token type 0 everywhere).

Special ids are looked up in the tokenizer (`interop.tokenizer.special_token_ids`) rather than
assumed, so a tokenizer with another numbering (a Hugging Face vocabulary) works unchanged.
"""
from __future__ import annotations

import numpy as np

from minispanbert.interop.tokenizer import special_token_ids


def pack_sequences(piece_ids: list[list[int]], tokenizer, max_seq_len: int) -> tuple[dict, int]:
    """Piece-id lists -> ({input_ids, token_type_ids, attention_mask} (N, T) int64, number of rows
    cut). Each row is ``[CLS] ids[:max_seq_len - 2] [SEP]``; T is the longest row, at most max_seq_len."""
    if max_seq_len < 3:
        raise ValueError(f"--max-seq-len must be at least 3 ([CLS] one piece [SEP]), got {max_seq_len}")
    special = special_token_ids(tokenizer)
    cls, sep, pad = special["cls"], special["sep"], special["pad"]
    room = max_seq_len - 2
    T = min(max_seq_len, max((len(ids) for ids in piece_ids), default=0) + 2)
    input_ids = np.full((len(piece_ids), T), pad, dtype=np.int64)
    attention_mask = np.zeros((len(piece_ids), T), dtype=np.int64)
    for row, ids in enumerate(piece_ids):
        kept = [cls, *ids[:room], sep]
        input_ids[row, :len(kept)] = kept
        attention_mask[row, :len(kept)] = 1
    cut = sum(len(ids) > room for ids in piece_ids)
    return dict(input_ids=input_ids, token_type_ids=np.zeros_like(input_ids), attention_mask=attention_mask), cut
