"""ALBERT's n-gram masking (ALBERT §4.1; Google's ``create_pretraining_data.py``,
``create_masked_lm_predictions``; bert-family-spec.md §4).

The units are whole words (a start piece and its "##" continuations); specials are never units.
For a sequence of n tokens (specials included, as in the code)::

    num_to_predict = max(1, round(0.15 n))                      # Python round: half to even
    p(k) = (1/k) / sum_{j<=3} 1/j  for k = 1, 2, 3              # 6/11, 3/11, 2/11
    for each start word s in a shuffled order, while fewer than num_to_predict tokens are masked:
        draw k ~ p restricted to the k-grams that exist from s (fewer near the end, renormalised)
        while the k words starting at s would overshoot num_to_predict: k -= 1 (skip s if k = 0)
        skip s if any of those tokens is already masked; else mask them all
    each masked token independently: 80% [MASK], 10% kept, 10% a random id      (per token)

The k words are k consecutive units in the candidate list, which skips the specials, so a k-gram
may run across the [SEP] between A and B, as in the code. Where we differ: no ``max_predictions``
cap (the code's 20 at length 512 is above round(0.15 n) for the lengths trained here), and the
random token is uniform over the ordinary ids [5, V) (the code: the whole vocabulary).
"""
from __future__ import annotations

import numpy as np

from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.masking import MASK_ID, MASK_PROB, NUM_SPECIAL_IDS, RANDOM_PROB

MAX_NGRAM = 3
NGRAM_PMF = (1.0 / np.arange(1, MAX_NGRAM + 1)) / (1.0 / np.arange(1, MAX_NGRAM + 1)).sum()


def ngram_mask(token_ids, word_starts, rng, *, vocab_size: int, mask_ratio: float = 0.15, record=None):
    """(n,) ids and word starts -> (input_ids (n,), mlm_labels (n,)). ``record``, a list, receives
    the k drawn for every start word that had all three k-grams available (before any shortening):
    the draws whose shares are 6/11, 3/11, 2/11."""
    token_ids = np.asarray(token_ids, dtype=np.int64)
    special = token_ids < NUM_SPECIAL_IDS
    starts = np.asarray(word_starts, dtype=bool) | special
    starts[1:] |= special[:-1]
    starts[:1] = True
    n = token_ids.size
    word_begin = np.flatnonzero(starts)
    word_end = np.append(word_begin[1:], n)
    units = [np.arange(b, e) for b, e in zip(word_begin, word_end) if not special[b]]  # specials are single-token words
    num_to_predict = max(1, round(mask_ratio * n))
    masked = np.zeros(n, dtype=bool)
    count = 0
    for s in rng.permutation(len(units)):
        if count >= num_to_predict:
            break
        available = min(MAX_NGRAM, len(units) - s)
        k = int(rng.choice(available, p=NGRAM_PMF[:available] / NGRAM_PMF[:available].sum())) + 1
        if record is not None and available == MAX_NGRAM:
            record.append(k)
        tokens = np.concatenate(units[s:s + k])
        while count + tokens.size > num_to_predict and k > 1:
            k -= 1
            tokens = np.concatenate(units[s:s + k])
        if count + tokens.size > num_to_predict or masked[tokens].any():
            continue
        masked[tokens] = True
        count += tokens.size
    positions = np.flatnonzero(masked)
    draw = rng.random(positions.size)
    input_ids = token_ids.copy()
    input_ids[positions[draw < MASK_PROB]] = MASK_ID
    randomised = positions[(draw >= MASK_PROB) & (draw < MASK_PROB + RANDOM_PROB)]
    input_ids[randomised] = rng.integers(NUM_SPECIAL_IDS, vocab_size, size=randomised.size)
    labels = np.full(n, IGNORE_INDEX, dtype=np.int64)
    labels[positions] = token_ids[positions]
    return input_ids, labels
