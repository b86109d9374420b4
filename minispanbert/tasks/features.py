"""Single-sequence model inputs: ``[CLS] pieces [SEP]`` padded to the longest row of the set, as
BERT feeds one sentence (BERT §3, Figure 2: segment A only, token type 0 everywhere).

Special ids are looked up in the tokenizer by their text ([CLS], [SEP], [PAD]) rather than assumed,
so a tokenizer with another numbering (a Hugging Face vocabulary) works unchanged.
"""
from __future__ import annotations

import numpy as np


def special_id(tokenizer, token: str) -> int:
    """The id of ``token`` ([CLS], [SEP], [PAD]) in ``tokenizer``; ValueError when it has none."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {token} token: use a BERT WordPiece tokenizer")
    return token_id


def pack_sequences(piece_ids: list[list[int]], tokenizer, max_seq_len: int) -> tuple[dict, int]:
    """Piece-id lists -> ({input_ids, token_type_ids, attention_mask} (N, T) int64, number of rows
    cut). Each row is ``[CLS] ids[:max_seq_len - 2] [SEP]``; T is the longest row, at most max_seq_len."""
    if max_seq_len < 3:
        raise ValueError(f"--max-seq-len must be at least 3 ([CLS] one piece [SEP]), got {max_seq_len}")
    cls, sep, pad = (special_id(tokenizer, t) for t in ("[CLS]", "[SEP]", "[PAD]"))
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
