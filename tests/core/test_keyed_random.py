"""Keyed randomness (minispanbert/keyed_random.py): a draw depends on its key, its call and its global
batch row only, so any split of the rows draws what the whole batch draws."""
import numpy as np
import pytest

from minispanbert.keyed_random import DROPOUT, KeyedRandom, dropout_random


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5), (7, 3, 8), (7,)])  # 5 and 1 values a row: rows padded to a block
def test_any_split_of_the_rows_draws_what_the_whole_batch_draws(dtype, shape):
    whole = KeyedRandom((1, 2, 3), xp=np)
    first, second = whole.random(shape, dtype), whole.random(shape, dtype)
    for cuts in ([0, 3, 7], [0, 1, 2, 7], [0, 6, 7]):
        parts = [KeyedRandom((1, 2, 3), xp=np).rows(slice(a, b)) for a, b in zip(cuts, cuts[1:])]
        pieces = [part.random((b - a, *shape[1:]), dtype) for part, a, b in zip(parts, cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(pieces), first)
        pieces = [part.random((b - a, *shape[1:]), dtype) for part, a, b in zip(parts, cuts, cuts[1:])]
        np.testing.assert_array_equal(np.concatenate(pieces), second)  # the second call of each shard
    assert first.dtype == dtype and not np.array_equal(first, second)


def test_a_view_of_a_view_counts_rows_from_the_batch():
    whole = KeyedRandom((9,), xp=np).random((10, 4))
    inner = KeyedRandom((9,), xp=np).rows(slice(2, 9)).rows(slice(3, 5))
    np.testing.assert_array_equal(inner.random((2, 4)), whole[5:7])


def test_draws_are_uniform_and_differ_by_key():
    values = dropout_random(0, 1, xp=np).random((200, 500))
    assert 0.0 <= values.min() and values.max() < 1.0
    assert abs(values.mean() - 0.5) < 0.005  # 1e5 uniforms: standard error 9e-4
    assert not np.array_equal(values, dropout_random(0, 2, xp=np).random((200, 500)))
    assert not np.array_equal(values, dropout_random(1, 1, xp=np).random((200, 500)))
    np.testing.assert_array_equal(values, KeyedRandom((0, 1, DROPOUT), xp=np).random((200, 500)))
