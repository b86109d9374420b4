"""Embedding lookup: row gather forward, scatter-add backward.

Forward:   out[b, t] = E[ids[b, t]]                    ids (B, T) int, E (V, H) -> out (B, T, H)
Backward:  dE[v] = sum over {(b, t) : ids[b, t] = v} of dout[b, t]

The backward must ADD once per occurrence: a token that appears twice receives twice the
gradient. ``dE[ids] += dout`` would silently keep only one of the duplicates, so the sum goes
through :func:`minispanbert.backend.scatter_add` (np.add.at / cupyx.scatter_add).
"""
from __future__ import annotations

from minispanbert.backend import scatter_add


def embedding_forward(ids, table, *, xp):
    """ids (...) int, table (V, H) -> (out (..., H), cache)."""
    return table[ids], (ids, table.shape, table.dtype)


def embedding_backward(dout, cache, *, xp):
    """dout (..., H) -> dtable (V, H)."""
    ids, shape, dtype = cache
    dtable = xp.zeros(shape, dtype=dtype)
    scatter_add(dtable, ids.reshape(-1), dout.reshape(-1, shape[1]), xp=xp)
    return dtable
