"""Tests for minispanbert.masking: SpanBERT span masking (§3.1) and SBO pair targets (§3.2).

The statistical tests mask 10,000 synthetic blocks with realistic word-piece structure and check
the results against numbers derived independently of the code under test (closed forms of the
truncated geometric, exact fractions for the budget, the 80/10/10 shares of the spec).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.masking import (
    MaskedBlock,
    PretrainingBatch,
    make_pretraining_batch,
    mask_block,
    masking_budget,
    sample_span_lengths,
    span_length_pmf,
)

MASK_ID = 4
VOCAB = 6000
# Synthetic vocabulary: word-start pieces in [5, 3000), continuation ("##") pieces in [3000, 5000).
# Ids >= 5000 never occur in a block, so a token replaced from UNIGRAM is recognisable for sure.
UNIGRAM_IDS = np.array([5000, 5001, 5002, 5003])
UNIGRAM_PROBS = np.array([0.1, 0.2, 0.3, 0.4])
UNIGRAM = np.zeros(VOCAB)
UNIGRAM[UNIGRAM_IDS] = UNIGRAM_PROBS
PIECES_PER_WORD_PROBS = [0.55, 0.25, 0.12, 0.08]  # words of 1-4 pieces, most of one piece
NUM_BLOCKS = 10_000


def synthetic_block(rng, n):
    """One block of n tokens made of words of 1-4 pieces: (token_ids, word_starts)."""
    pieces = rng.choice(4, size=n, p=PIECES_PER_WORD_PROBS) + 1  # n words always cover n tokens
    starts_at = np.cumsum(pieces) - pieces
    word_starts = np.zeros(n, dtype=bool)
    word_starts[starts_at[starts_at < n]] = True
    token_ids = np.where(word_starts, rng.integers(5, 3000, n), rng.integers(3000, 5000, n))
    return token_ids, word_starts


def synthetic_corpus(seed, num_blocks, low=64, high=128):
    rng = np.random.default_rng(seed)
    return [synthetic_block(rng, int(n)) for n in rng.integers(low, high + 1, num_blocks)]


def expected_budget(n, ratio=0.15):
    return math.ceil(Fraction(str(ratio)) * n)


class Flat:
    """The masked corpus concatenated into flat arrays (global token positions) for vectorised checks."""

    def __init__(self, corpus, results):
        lengths = np.array([ids.size for ids, _ in corpus])
        self.offsets = np.cumsum(lengths) - lengths
        self.lengths = lengths
        self.orig = np.concatenate([ids for ids, _ in corpus])
        self.word_starts = np.concatenate([ws for _, ws in corpus])
        self.input_ids = np.concatenate([r.input_ids for r in results])
        self.labels = np.concatenate([r.mlm_labels for r in results])
        self.masked = self.labels != IGNORE_INDEX
        self.block_of_token = np.repeat(np.arange(len(corpus)), lengths)
        span_counts = np.array([len(r.spans) for r in results])
        self.block_of_span = np.repeat(np.arange(len(corpus)), span_counts)
        local = np.array([se for r in results for se in r.spans]).reshape(-1, 2)
        self.local_start, self.local_end = local[:, 0], local[:, 1]
        self.start = local[:, 0] + self.offsets[self.block_of_span]
        self.end = local[:, 1] + self.offsets[self.block_of_span]
        self.span_len = self.end - self.start + 1
        self.span_of_masked_token = np.repeat(np.arange(self.start.size), self.span_len)
        self.masked_positions = np.concatenate(
            [np.arange(s, e + 1) for s, e in zip(self.start, self.end)]) if self.start.size else np.zeros(0, int)

    def token_decisions(self):
        """Per masked token: 0 = [MASK], 1 = random replacement (an id >= 5000), 2 = kept."""
        pos = self.masked_positions
        new, old = self.input_ids[pos], self.orig[pos]
        decision = np.full(pos.size, -1)
        decision[new == MASK_ID] = 0
        decision[new >= 5000] = 1
        decision[new == old] = 2
        assert (decision >= 0).all(), "a masked token is neither [MASK], a unigram id, nor unchanged"
        return decision


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(seed=1, num_blocks=NUM_BLOCKS)


@pytest.fixture(scope="module")
def span_run(corpus):
    rng = np.random.default_rng(123)
    results = [mask_block(ids, ws, "span", rng, vocab_size=VOCAB, unigram=UNIGRAM) for ids, ws in corpus]
    return results, Flat(corpus, results)


@pytest.fixture(scope="module")
def token_run(corpus):
    rng = np.random.default_rng(456)
    results = [mask_block(ids, ws, "token", rng, vocab_size=VOCAB, unigram=UNIGRAM) for ids, ws in corpus]
    return results, Flat(corpus, results)


# ---------------------------------------------------------------- span-length distribution


def test_pmf_is_the_truncated_geometric_not_the_clipped_one():
    p, q = 0.2, 0.8
    pmf = span_length_pmf(p, 1, 10)
    lengths = np.arange(1, 11)
    # Conditional law of a geometric G given G <= 10: P(G = L) / P(G <= 10).
    np.testing.assert_allclose(pmf, p * q ** (lengths - 1) / (1 - q**10), rtol=1e-12)
    # Closed-form mean of the truncated geometric; the paper and the design notes quote 3.8 / 3.797.
    closed_form_mean = 1 / p - 10 * q**10 / (1 - q**10)
    assert pmf @ lengths == pytest.approx(closed_form_mean, rel=1e-12)
    assert round(closed_form_mean, 3) == 3.797
    clipped_mean = sum(L * p * q ** (L - 1) for L in range(1, 10)) + 10 * q**9
    assert abs(pmf @ lengths - clipped_mean) > 0.5  # clipping (mean 4.46) would be a different objective


def test_pmf_other_bounds_and_p_one():
    pmf = span_length_pmf(0.5, 2, 4)
    np.testing.assert_allclose(pmf, np.array([4, 2, 1]) / 7)
    np.testing.assert_array_equal(span_length_pmf(1.0, 1, 5), [1, 0, 0, 0, 0])
    assert (sample_span_lengths(np.random.default_rng(0), 1000, p=1.0, upper=5) == 1).all()


def test_sample_span_lengths_matches_pmf_in_bulk():
    draws = sample_span_lengths(np.random.default_rng(0), 200_000)
    assert draws.dtype == np.int64 and draws.min() >= 1 and draws.max() <= 10
    pmf = span_length_pmf()
    np.testing.assert_allclose(np.bincount(draws, minlength=11)[1:] / draws.size, pmf, atol=0.004)


def test_sampled_span_lengths_in_mask_block(span_run, corpus):
    # The realistic run gives ~29k spans, too few for a +-0.03 check on a length with standard
    # deviation 2.55; a second pass at mask_ratio 0.5 (~9 spans per block, same iid lengths) adds ~88k.
    results, _ = span_run
    rng = np.random.default_rng(321)
    dense = [mask_block(ids, ws, "span", rng, vocab_size=VOCAB, mask_ratio=0.5) for ids, ws in corpus]
    sampled = np.concatenate([r.sampled_span_lengths for r in results + dense])
    pmf = span_length_pmf()
    lengths = np.arange(1, 11)
    mean, var = pmf @ lengths, pmf @ lengths**2 - (pmf @ lengths) ** 2
    assert 0.03 > 3.5 * math.sqrt(var / sampled.size)  # the tolerance below is a real test, not noise
    assert abs(sampled.mean() - mean) < 0.03
    counts = np.bincount(sampled, minlength=11)[1:]
    assert counts.sum() == sampled.size  # nothing outside 1..10
    chi2 = ((counts - sampled.size * pmf) ** 2 / (sampled.size * pmf)).sum()
    assert chi2 < stats.chi2.ppf(0.999, df=9)


# ---------------------------------------------------------------- span scheme structure


def test_budget_is_exact_in_subword_tokens(span_run, corpus):
    results, flat = span_run
    masked_per_block = np.bincount(flat.block_of_token[flat.masked], minlength=len(corpus))
    np.testing.assert_array_equal(masked_per_block, [expected_budget(n) for n in flat.lengths])
    np.testing.assert_array_equal(flat.masked_positions, np.flatnonzero(flat.masked))


def test_masking_budget_function():
    for n in range(1, 600):
        for ratio in (0.07, 0.15, 0.3):
            assert masking_budget(n, ratio) == expected_budget(n, ratio)


def test_merged_spans_are_separated_and_external_boundaries_unmasked(span_run):
    _, flat = span_run
    same_block = flat.block_of_span[1:] == flat.block_of_span[:-1]
    # Sorted, disjoint and not adjacent: at least one unmasked token between spans of a block.
    assert (flat.start[1:][same_block] > flat.end[:-1][same_block] + 1).all()
    block_len = flat.lengths[flat.block_of_span]
    left_inside, right_inside = flat.local_start > 0, flat.local_end < block_len - 1
    assert not flat.masked[flat.start[left_inside] - 1].any()
    assert not flat.masked[flat.end[right_inside] + 1].any()


def test_spans_cover_whole_words_except_the_budget_cut(span_run):
    _, flat = span_run
    assert flat.word_starts[flat.start].all()  # a span always starts at a word start
    block_len = flat.lengths[flat.block_of_span]
    at_block_end = flat.local_end == block_len - 1
    next_token = np.where(at_block_end, flat.start, flat.end + 1)  # dummy index at the block end
    ends_mid_word = ~at_block_end & ~flat.word_starts[next_token]
    cuts_per_block = np.bincount(flat.block_of_span[ends_mid_word], minlength=flat.lengths.size)
    assert cuts_per_block.max() <= 1  # only the last, budget-cut span may stop inside a word
    assert cuts_per_block.sum() > 100  # and the cut really happens, so the rule is exercised


def test_budget_cut_stops_inside_a_word_deterministically():
    # One word of 20 pieces, budget ceil(0.15 * 20) = 3: whatever the anchor, the span starts at the
    # word start and stops after exactly 3 pieces.
    word_starts = np.zeros(20, dtype=bool)
    word_starts[0] = True
    for seed in range(20):
        out = mask_block(np.arange(100, 120), word_starts, "span", np.random.default_rng(seed), vocab_size=200)
        assert out.spans == [(0, 2)]
        assert out.sbo_target.size == 0  # the span touches the block start: no SBO target
    # Words of 4 pieces, n = 40, budget 6: one whole word plus 2 pieces, so exactly one mid-word end.
    word_starts = np.arange(40) % 4 == 0
    for seed in range(20):
        out = mask_block(np.arange(100, 140), word_starts, "span", np.random.default_rng(seed), vocab_size=200)
        ends = [e for _, e in out.spans]
        assert sum(e < 39 and not word_starts[e + 1] for e in ends) == 1
        assert sum(e - s + 1 for s, e in out.spans) == 6


def test_word_starts_first_flag_is_forced_true():
    word_starts = np.zeros(20, dtype=bool)  # no word start at all: the whole block is one word
    out = mask_block(np.arange(100, 120), word_starts, "span", np.random.default_rng(0), vocab_size=200)
    assert out.spans == [(0, 2)]


# ---------------------------------------------------------------- 80/10/10 replacement


def test_one_replacement_decision_per_merged_span(span_run):
    _, flat = span_run
    decision = flat.token_decisions()
    per_span_min = np.minimum.reduceat(decision, np.cumsum(flat.span_len) - flat.span_len)
    per_span_max = np.maximum.reduceat(decision, np.cumsum(flat.span_len) - flat.span_len)
    assert (per_span_min == per_span_max).all()  # every token of a span shares the decision
    shares = np.bincount(per_span_min, minlength=3) / per_span_min.size
    np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.01)
    assert (flat.span_len > 1).mean() > 0.5  # most spans have several tokens: the test has teeth


def test_unigram_replacement_draws_from_the_given_distribution(span_run):
    _, flat = span_run
    replaced = flat.input_ids[flat.masked_positions][flat.token_decisions() == 1]
    assert np.isin(replaced, UNIGRAM_IDS).all()
    np.testing.assert_allclose(np.bincount(replaced - 5000, minlength=4) / replaced.size, UNIGRAM_PROBS, atol=0.02)


def test_uniform_replacement_without_unigram_avoids_specials():
    rng = np.random.default_rng(7)
    vocab = 100
    replaced = []
    for _ in range(1500):
        ids = rng.integers(5, 50, 64)
        out = mask_block(ids, np.ones(64, dtype=bool), "span", rng, vocab_size=vocab)
        changed = (out.input_ids != ids) & (out.input_ids != MASK_ID)
        replaced.append(out.input_ids[changed])
    replaced = np.concatenate(replaced)
    assert replaced.min() >= 5 and replaced.max() < vocab
    assert set(range(50, vocab)) <= set(replaced.tolist())  # ids absent from the blocks are drawn too


def test_unmasked_tokens_are_untouched(span_run):
    _, flat = span_run
    np.testing.assert_array_equal(flat.input_ids[~flat.masked], flat.orig[~flat.masked])
    np.testing.assert_array_equal(flat.labels[flat.masked], flat.orig[flat.masked])


def test_span_scheme_with_per_token_replacement_mixes_decisions(corpus):
    rng = np.random.default_rng(9)
    results = [mask_block(ids, ws, "span", rng, vocab_size=VOCAB, unigram=UNIGRAM, replacement="token")
               for ids, ws in corpus[:2000]]
    flat = Flat(corpus[:2000], results)
    decision = flat.token_decisions()
    first = np.cumsum(flat.span_len) - flat.span_len
    mixed = np.minimum.reduceat(decision, first) != np.maximum.reduceat(decision, first)
    assert mixed.any()
    np.testing.assert_allclose(np.bincount(decision, minlength=3) / decision.size, [0.8, 0.1, 0.1], atol=0.015)


# ---------------------------------------------------------------- token (BERT) and word schemes


def test_token_scheme_budget_and_per_token_decisions(token_run):
    results, flat = token_run
    masked_per_block = np.bincount(flat.block_of_token[flat.masked], minlength=flat.lengths.size)
    np.testing.assert_array_equal(masked_per_block, [expected_budget(n) for n in flat.lengths])
    assert all(r.sampled_span_lengths.size == 0 for r in results)
    decision = flat.token_decisions()
    np.testing.assert_allclose(np.bincount(decision, minlength=3) / decision.size, [0.8, 0.1, 0.1], atol=0.01)
    # Runs of two adjacent masked tokens decide independently: they differ with probability
    # 1 - (0.8^2 + 0.1^2 + 0.1^2) = 0.34 (shared decisions would give 0).
    first = np.cumsum(flat.span_len) - flat.span_len
    pairs = flat.span_len == 2
    differ = decision[first[pairs]] != decision[first[pairs] + 1]
    assert differ.mean() == pytest.approx(0.34, abs=0.02)


def test_token_scheme_spans_are_maximal_runs_and_masking_ignores_words(token_run):
    _, flat = token_run
    same_block = flat.block_of_span[1:] == flat.block_of_span[:-1]
    assert (flat.start[1:][same_block] > flat.end[:-1][same_block] + 1).all()
    # BERT masks subword tokens: continuation pieces are masked alone about as often as any token.
    continuation = ~flat.word_starts
    assert flat.masked[continuation].mean() == pytest.approx(flat.masked.mean(), abs=0.01)


def test_token_scheme_span_replacement_shares_decision_per_run(corpus):
    rng = np.random.default_rng(11)
    results = [mask_block(ids, ws, "token", rng, vocab_size=VOCAB, unigram=UNIGRAM, replacement="span")
               for ids, ws in corpus[:1000]]
    flat = Flat(corpus[:1000], results)
    decision = flat.token_decisions()
    first = np.cumsum(flat.span_len) - flat.span_len
    assert (np.minimum.reduceat(decision, first) == np.maximum.reduceat(decision, first)).all()


def test_word_scheme_masks_single_whole_words(corpus):
    rng = np.random.default_rng(13)
    blocks = corpus[:2000]
    results = [mask_block(ids, ws, "word", rng, vocab_size=VOCAB, unigram=UNIGRAM) for ids, ws in blocks]
    flat = Flat(blocks, results)
    sampled = np.concatenate([r.sampled_span_lengths for r in results])
    assert sampled.size > 0 and (sampled == 1).all()
    masked_per_block = np.bincount(flat.block_of_token[flat.masked], minlength=len(blocks))
    np.testing.assert_array_equal(masked_per_block, [expected_budget(n) for n in flat.lengths])
    assert flat.word_starts[flat.start].all()
    block_len = flat.lengths[flat.block_of_span]
    at_block_end = flat.local_end == block_len - 1
    ends_mid_word = ~at_block_end & ~flat.word_starts[np.where(at_block_end, flat.start, flat.end + 1)]
    assert np.bincount(flat.block_of_span[ends_mid_word], minlength=len(blocks)).max() <= 1
    decision = flat.token_decisions()
    first = np.cumsum(flat.span_len) - flat.span_len
    assert (np.minimum.reduceat(decision, first) == np.maximum.reduceat(decision, first)).all()


# ---------------------------------------------------------------- special tokens


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
def test_pad_cls_sep_are_never_masked_and_block_spans(scheme):
    rng = np.random.default_rng(17)
    for _ in range(300):
        ids, ws = synthetic_block(rng, 100)
        special_at = rng.random(100) < 0.1
        ids = np.where(special_at, rng.choice([0, 2, 3], 100), ids)
        out = mask_block(ids, ws, scheme, rng, vocab_size=VOCAB)
        assert (out.mlm_labels[special_at] == IGNORE_INDEX).all()
        np.testing.assert_array_equal(out.input_ids[special_at], ids[special_at])
        assert (out.mlm_labels != IGNORE_INDEX).sum() == min(15, (~special_at).sum())
        for s, e in out.spans:
            assert not special_at[s:e + 1].any()


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
def test_budget_capped_when_block_is_mostly_special(scheme):
    ids = np.full(100, 0)  # [PAD] everywhere except three ordinary tokens
    ids[[10, 50, 51]] = [7, 8, 9]
    out = mask_block(ids, np.ones(100, dtype=bool), scheme, np.random.default_rng(0), vocab_size=20)
    assert out.spans == [(10, 10), (50, 51)]
    assert out.sbo_target.tolist() == [7, 8, 9]
    out = mask_block(np.full(30, 3), np.ones(30, dtype=bool), scheme, np.random.default_rng(0), vocab_size=20)
    assert out.spans == [] and out.sbo_target.size == 0 and (out.mlm_labels == IGNORE_INDEX).all()


def test_unk_is_an_ordinary_word_as_in_the_authors_code():
    """[UNK] is masked like any one-piece word (label [UNK]) and spans run through it."""
    rng = np.random.default_rng(5)
    counts = np.zeros((2, 2))  # rows: [UNK], other one-piece words; columns: masked, total
    for _ in range(2000):
        ids, ws = synthetic_block(rng, 100)
        unk_at = rng.random(100) < 0.2
        ids = np.where(unk_at, 1, ids)
        ws = ws | unk_at  # [UNK] is a whole word of its own, as the tokenizer makes it
        ws[1:] |= unk_at[:-1]
        one_piece = ws & np.append(ws[1:], True) & ~unk_at
        out = mask_block(ids, ws, "span", rng, vocab_size=VOCAB)
        masked = out.mlm_labels != IGNORE_INDEX
        assert (out.mlm_labels[masked & unk_at] == 1).all()  # the label of a masked [UNK] is [UNK]
        for row, where in enumerate((unk_at, one_piece)):
            counts[row] += (masked & where).sum(), where.sum()
    unk_rate, word_rate = counts[:, 0] / counts[:, 1]
    assert abs(unk_rate - word_rate) < 0.01 and unk_rate > 0.1, (unk_rate, word_rate)
    ids = np.array([7, 1, 8, 1, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24])
    spans_through_unk = 0
    for seed in range(200):
        out = mask_block(ids, np.ones(20, dtype=bool), "span", np.random.default_rng(seed), vocab_size=VOCAB)
        spans_through_unk += any(s < 1 < e or s < 3 < e for s, e in out.spans)
    assert spans_through_unk > 5  # 0.1 stopped every span at an [UNK]: never one across it


# ---------------------------------------------------------------- SBO targets


def expected_sbo(block, spans, max_pair_targets):
    """The authors' rule written out as a plain loop: (left, right, rel_pos, position, target) rows."""
    rows = []
    for s, e in spans:
        if s == 0 or e == block.size - 1:
            continue
        for i in range(s, min(e, s + max_pair_targets - 1) + 1):
            rows.append((s - 1, e + 1, i - s, i, block[i]))
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def sbo_rows(out: MaskedBlock):
    return np.stack([out.sbo_left, out.sbo_right, out.sbo_rel_pos, out.sbo_position, out.sbo_target], axis=1)


def test_sbo_targets_follow_the_authors_rule(span_run, corpus):
    results, flat = span_run
    for (ids, _), out in zip(corpus[:2000], results[:2000]):
        np.testing.assert_array_equal(sbo_rows(out), expected_sbo(ids, out.spans, 15))
        assert all(a.dtype == np.int64 for a in (out.input_ids, out.mlm_labels, out.sbo_left, out.sbo_target))
    # The edge rule is exercised: some spans touch a block edge and get no targets.
    block_len = flat.lengths[flat.block_of_span]
    assert ((flat.local_start == 0) | (flat.local_end == block_len - 1)).sum() > 100


def test_sbo_truncates_long_spans_to_max_pair_targets(corpus):
    rng = np.random.default_rng(19)
    truncated = 0
    for ids, ws in corpus[:300]:
        out = mask_block(ids, ws, "span", rng, vocab_size=VOCAB, geometric_p=0.05, max_pair_targets=3)
        np.testing.assert_array_equal(sbo_rows(out), expected_sbo(ids, out.spans, 3))
        assert out.sbo_rel_pos.max(initial=0) <= 2
        assert (out.mlm_labels[out.sbo_left] == IGNORE_INDEX).all()
        assert (out.mlm_labels[out.sbo_right] == IGNORE_INDEX).all()
        truncated += sum(e - s + 1 > 3 and 0 < s and e < ids.size - 1 for s, e in out.spans)
    assert truncated > 50


def test_sbo_hand_worked_example():
    # Block of 10 one-piece words; the 3 masked tokens form one interior span (4, 6) when the mask
    # lands there. Find such a seed, then check every field by hand.
    ids = np.arange(10, 20)
    for seed in range(500):
        out = mask_block(ids, np.ones(10, dtype=bool), "span", np.random.default_rng(seed),
                         vocab_size=30, mask_ratio=0.3)
        if out.spans == [(4, 6)]:
            break
    else:
        pytest.fail("no seed produced the span (4, 6)")
    assert out.sbo_left.tolist() == [3, 3, 3]
    assert out.sbo_right.tolist() == [7, 7, 7]
    assert out.sbo_rel_pos.tolist() == [0, 1, 2]
    assert out.sbo_position.tolist() == [4, 5, 6]
    assert out.sbo_target.tolist() == [14, 15, 16]
    assert out.mlm_labels.tolist() == [IGNORE_INDEX] * 4 + [14, 15, 16] + [IGNORE_INDEX] * 3


# ---------------------------------------------------------------- determinism and errors


@pytest.mark.parametrize("scheme", ["span", "word", "token"])
def test_same_seed_same_masks(scheme, corpus):
    def run(seed):
        rng = np.random.default_rng(seed)
        return [mask_block(ids, ws, scheme, rng, vocab_size=VOCAB) for ids, ws in corpus[:50]]

    a, b, c = run(5), run(5), run(6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.input_ids, y.input_ids)
        np.testing.assert_array_equal(x.sbo_target, y.sbo_target)
        assert x.spans == y.spans
    assert any(x.spans != z.spans for x, z in zip(a, c))


GOOD = dict(token_ids=np.arange(10, 30), word_starts=np.ones(20, dtype=bool), scheme="span")


@pytest.mark.parametrize("change, message", [
    (dict(scheme="ngram"), "unknown masking scheme"),
    (dict(replacement="word_piece"), "unknown replacement"),
    (dict(word_starts=np.ones(19, dtype=bool)), "word_starts has shape"),
    (dict(mask_ratio=0.0), "mask_ratio"),
    (dict(mask_ratio=1.0), "mask_ratio"),
    (dict(geometric_p=0.0), "geometric_p"),
    (dict(geometric_p=1.5), "geometric_p"),
    (dict(max_span_len=0), "max_span_len"),
    (dict(max_pair_targets=0), "max_pair_targets"),
    (dict(unigram=np.full(99, 1 / 99)), "unigram must have shape"),
    (dict(unigram=np.r_[np.zeros(5), np.full(95, 0.02)]), "probability vector"),
    (dict(unigram=np.r_[0.5, np.zeros(4), np.full(95, 0.5 / 95)]), "special ids"),
    (dict(token_ids=np.zeros(0, dtype=int), word_starts=np.zeros(0, dtype=bool)), "non-empty"),
    (dict(token_ids=np.arange(90, 110)), "vocab_size"),
    (dict(token_ids=np.arange(-1, 19)), "vocab_size"),
    (dict(token_ids=np.arange(10, 30) + 0.5), "integers"),
    (dict(vocab_size=5), "vocab_size"),
    (dict(rng=np.random.RandomState(0)), "Generator"),
])
def test_bad_input_raises_one_line_value_error(change, message):
    kwargs = dict(GOOD, rng=np.random.default_rng(0), vocab_size=100) | change
    with pytest.raises(ValueError, match=message) as info:
        mask_block(**kwargs)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- batching


def test_make_pretraining_batch_layout_matches_mask_block():
    corpus = synthetic_corpus(seed=3, num_blocks=4, low=5, high=14)
    blocks, word_starts = [ids for ids, _ in corpus], [ws for _, ws in corpus]
    seq_len = 16
    batch = make_pretraining_batch(blocks, word_starts, "span", np.random.default_rng(21), seq_len=seq_len,
                                   vocab_size=VOCAB, mask_ratio=0.3)
    assert isinstance(batch, PretrainingBatch)
    rng = np.random.default_rng(21)  # replay: the batch masks the blocks in order with the same rng
    singles = [mask_block(ids, ws, "span", rng, vocab_size=VOCAB, mask_ratio=0.3) for ids, ws in corpus]
    for name in ("input_ids", "attention_mask", "token_type_ids", "mlm_labels"):
        array = getattr(batch, name)
        assert array.shape == (4, seq_len) and array.dtype == np.int64
    assert (batch.token_type_ids == 0).all()
    for row, (ids, single) in enumerate(zip(blocks, singles)):
        n = ids.size
        assert batch.input_ids[row, 0] == 2 and batch.input_ids[row, n + 1] == 3
        assert (batch.input_ids[row, n + 2:] == 0).all()
        np.testing.assert_array_equal(batch.input_ids[row, 1:n + 1], single.input_ids)
        np.testing.assert_array_equal(batch.attention_mask[row], np.arange(seq_len) < n + 2)
        np.testing.assert_array_equal(batch.mlm_labels[row, 1:n + 1], single.mlm_labels)
        assert batch.mlm_labels[row, 0] == IGNORE_INDEX and (batch.mlm_labels[row, n + 1:] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(batch.sbo_batch, np.repeat(np.arange(4), [s.sbo_target.size for s in singles]))
    np.testing.assert_array_equal(batch.sbo_left, np.concatenate([s.sbo_left for s in singles]) + 1)
    np.testing.assert_array_equal(batch.sbo_right, np.concatenate([s.sbo_right for s in singles]) + 1)
    np.testing.assert_array_equal(batch.sbo_rel_pos, np.concatenate([s.sbo_rel_pos for s in singles]))
    np.testing.assert_array_equal(batch.sbo_target, np.concatenate([s.sbo_target for s in singles]))
    assert batch.sbo_target.size > 0
    # In padded coordinates the boundaries are real, unmasked tokens and the target sits between them.
    rows = batch.sbo_batch
    assert (batch.mlm_labels[rows, batch.sbo_left] == IGNORE_INDEX).all()
    assert (batch.mlm_labels[rows, batch.sbo_right] == IGNORE_INDEX).all()
    assert (batch.attention_mask[rows, batch.sbo_right] == 1).all()
    np.testing.assert_array_equal(batch.mlm_labels[rows, batch.sbo_left + 1 + batch.sbo_rel_pos], batch.sbo_target)


def test_make_pretraining_batch_errors():
    ids, ws = np.arange(10, 25), np.ones(15, dtype=bool)
    with pytest.raises(ValueError, match="raise seq_len"):
        make_pretraining_batch([ids], [ws], "span", np.random.default_rng(0), seq_len=16, vocab_size=100)
    with pytest.raises(ValueError, match="one word_starts array per block"):
        make_pretraining_batch([ids, ids], [ws], "span", np.random.default_rng(0), seq_len=32, vocab_size=100)
    with pytest.raises(ValueError, match="at least one block"):
        make_pretraining_batch([], [], "span", np.random.default_rng(0), seq_len=32, vocab_size=100)
    batch = make_pretraining_batch([ids], [ws], "span", np.random.default_rng(0), seq_len=17, vocab_size=100)
    assert batch.input_ids[0, -1] == 3  # a block of exactly seq_len - 2 tokens fits
