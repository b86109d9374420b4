"""Random numbers keyed by what they are for, not by who draws them.

A training step draws dropout masks. If every thread or MPI rank drew from a stream of its own,
the masks, and so the weights, would depend on how the batch was split over them. Here a draw is
a pure function of its key and its place in the batch:

    values of row r in the n-th draw of a step = Philox_K(counters r*c, r*c + 1, ...; word n)
    K = 128 bits from SeedSequence((seed, step, purpose))       (purpose 3: dropout)
    c = counter blocks per row (a row's values padded to a whole block: 4 float64 or 8 float32)

Philox (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3") is counter-based: its
i-th block is a cipher of (K, i), so any block can be computed without the ones before it. A shard
holding the global rows [a, b) starts at counter a*c and draws exactly the values one process
draws for those rows, whatever the number of threads or ranks: the same run reaches the same
weights on 1, 2 or 3 threads and on N ranks (up to the order in which gradients are summed).

Every draw is made on the host with NumPy and copied to the device with ``xp.asarray``, so NumPy
and CuPy runs draw identical masks (the engineering notes' "all randomness on the host"). The
float32 and float64 draws use different bits, so the two dtypes draw different masks.
"""
from __future__ import annotations

import math

import numpy as np

DROPOUT = 3  # the purpose word of dropout keys: (seed, step, DROPOUT)


class KeyedRandom:
    """``random(shape, dtype)`` like ``numpy.random.Generator.random``, axis 0 being batch rows:
    row i of the result is global row ``first_row + i``. Each call is the next draw of the step
    (every shard makes the same calls in the same order: one per dropout site of the forward)."""

    def __init__(self, key, *, xp, first_row: int = 0):
        self.key, self.xp, self.first_row = key, xp, first_row
        self.philox_key = np.random.SeedSequence(key).generate_state(2, np.uint64)
        self.draws = 0

    def rows(self, rows: slice) -> KeyedRandom:
        """A fresh generator for the rows ``rows`` of this one's batch (a shard's share)."""
        return KeyedRandom(self.key, xp=self.xp, first_row=self.first_row + (rows.start or 0))

    def random(self, shape, dtype=np.float64):
        """Uniforms in [0, 1) of ``shape`` and ``dtype``, on the backend's device."""
        dtype = np.dtype(dtype)
        rows, per_row = shape[0], math.prod(shape[1:])
        per_block = 32 // dtype.itemsize  # a Philox4x64 block is 4 x 64 bits: 4 float64 or 8 float32
        padded = -(-per_row // per_block) * per_block
        start = self.first_row * (padded // per_block)
        generator = np.random.Generator(np.random.Philox(key=self.philox_key, counter=[start, self.draws, 0, 0]))
        self.draws += 1
        values = generator.random(rows * padded, dtype=dtype).reshape(rows, padded)[:, :per_row]
        return self.xp.asarray(values.reshape(shape))


def dropout_random(seed: int, step: int, *, xp) -> KeyedRandom:
    """The dropout masks of one training step: keyed by (seed, step, DROPOUT)."""
    return KeyedRandom((seed, step, DROPOUT), xp=xp)
