"""SpanBERT input corruption on the host: span masking (paper §3.1) and SBO pair targets (§3.2).

One block of subword token ids (no [CLS]/[SEP]) goes in; a :class:`MaskedBlock` comes out with the
corrupted input, the MLM labels and the Span Boundary Objective targets. :func:`make_pretraining_batch`
masks several blocks, wraps each as ``[CLS] block [SEP]``, pads them to one length and returns plain
NumPy arrays; the model moves them to the device with ``xp.asarray``. All randomness comes from one
``numpy.random.Generator``, so masks are identical whichever backend trains on them.

Span masking, as in ``PairWithSpanMaskingScheme`` of the authors' code (``fairseq/data/masking.py``)::

    budget = ceil(mask_ratio * n)                  # in subword tokens
    w_L   ∝ p (1-p)^(L-1),  L = 1..max_span_len     # truncated geometric, renormalised (mean 3.797 words)
    while |masked| < budget:
        L = sample from w                          # span length in WHOLE WORDS
        a = uniform position not yet masked; s = start of the word containing a
        mask whole words from s, at most L of them, never past the block end,
        stopping the moment |masked| == budget     # so the last span may end mid-word
    merge overlapping and adjacent spans           # x_{s-1}, x_{e+1} are then never masked
    per merged span draw r once: r < 0.8 -> all [MASK]; r < 0.9 -> all random tokens; else unchanged

Other schemes, the baselines of the paper's Table 6: ``"word"`` (whole-word masking: the same loop
with every L = 1) and ``"token"`` (BERT: ``budget`` positions without replacement, 80/10/10 per token).

Choices this module makes where neither the paper nor the code decides (each also noted where it
happens):

* [PAD], [CLS] and [SEP] are never masked (``NEVER_MASKED_IDS``). Each is a word of its own and a
  barrier: a span stops before it, so it can serve as an external boundary. [UNK] is an ordinary
  word, as in the authors' code (their masker only sees dictionary ids, and <unk> is one of them):
  it can be masked (label [UNK]) and spans run through it. A literal "[MASK]" in the text (there
  is none in the corpora) is likewise an ordinary word.
* ``word_starts[0]`` is treated as True (a block always begins a word), and the token after a
  special token always starts a word.
* The budget is capped by the number of maskable tokens, so a block made mostly of [PAD]/[CLS]/[SEP]
  cannot loop forever.
* Random replacement tokens come from the ``unigram`` distribution when one is given, as in the
  paper; otherwise uniform over the ordinary ids ``[5, vocab_size)``, a documented simplification.
* For the ``"token"`` scheme each maximal run of adjacent masked tokens counts as a span for SBO.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minispanbert.layers.cross_entropy import IGNORE_INDEX

MASK_ID = 4
NUM_SPECIAL_IDS = 5  # [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4; ids >= 5 are ordinary tokens
NEVER_MASKED_IDS = (0, 2, 3)  # [PAD], [CLS], [SEP] (the authors'); [UNK] and [MASK] are ordinary words
MASK_PROB, RANDOM_PROB = 0.8, 0.1  # the rest (0.1) keeps the original token

SCHEMES = ("span", "word", "token")
REPLACEMENTS = ("span", "token")
DEFAULT_REPLACEMENT = {"span": "span", "word": "span", "token": "token"}


def span_length_pmf(p: float = 0.2, lower: int = 1, upper: int = 10) -> np.ndarray:
    """Probabilities of span lengths ``lower..upper`` (in words): p (1-p)^(L-lower), renormalised.

    This is the authors' ``len_distrib``: the geometric distribution truncated to [lower, upper] and
    renormalised, NOT clipped (clipping would pile the tail onto ``upper`` and give mean 4.46 words
    instead of 3.797 for the defaults). Returns shape (upper - lower + 1,), float64, summing to 1.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"geometric_p must be in (0, 1], got {p}: pass e.g. geometric_p=0.2")
    if not 1 <= lower <= upper:
        raise ValueError(f"need 1 <= lower <= upper for span lengths, got {lower}..{upper}")
    weights = p * (1.0 - p) ** np.arange(upper - lower + 1, dtype=np.float64)
    return weights / weights.sum()


def sample_span_lengths(rng: np.random.Generator, size: int, *, p: float = 0.2, lower: int = 1,
                        upper: int = 10) -> np.ndarray:
    """Draw ``size`` span lengths (in words) from :func:`span_length_pmf`; shape (size,), int64.

    Inverse-CDF sampling: one uniform per length, vectorised (``rng.choice`` with ``p`` costs far more
    per call, and :func:`mask_block` calls this once per block).
    """
    cdf = np.cumsum(span_length_pmf(p, lower, upper))
    cdf[-1] = 1.0  # so a uniform in [0, 1) can never fall past the last length through round-off
    return lower + np.searchsorted(cdf, rng.random(size), side="right").astype(np.int64)


def masking_budget(n: int, mask_ratio: float) -> int:
    """ceil(mask_ratio * n), the number of subword tokens to mask in a block of n tokens.

    The 1e-9 guards against float round-off adding a token (0.07 * 100 == 7.000000000000001).
    """
    return math.ceil(mask_ratio * n - 1e-9)


@dataclass(frozen=True)
class MaskedBlock:
    """One masked block (n tokens, P SBO targets), all arrays int64 in block coordinates.

    input_ids   (n,)  tokens after 80/10/10 replacement
    mlm_labels  (n,)  original id at every token of every span, IGNORE_INDEX elsewhere
    spans       merged spans as inclusive (start, end) pairs, sorted
    sbo_left    (P,)  s - 1, the external left boundary of the target's span
    sbo_right   (P,)  e + 1, the external right boundary
    sbo_rel_pos (P,)  i - s, 0-based row of the relative-position table (the paper's p_{i-s+1})
    sbo_position(P,)  i, the masked token being predicted
    sbo_target  (P,)  original id of token i
    sampled_span_lengths  the L drawn (in words) for each span, before cutting and merging;
                          all ones for "word", empty for "token" (which draws no lengths)
    """

    input_ids: np.ndarray
    mlm_labels: np.ndarray
    spans: list[tuple[int, int]]
    sbo_left: np.ndarray
    sbo_right: np.ndarray
    sbo_rel_pos: np.ndarray
    sbo_position: np.ndarray
    sbo_target: np.ndarray
    sampled_span_lengths: np.ndarray


def _check_block(token_ids, word_starts, vocab_size) -> tuple[np.ndarray, np.ndarray]:
    token_ids = np.asarray(token_ids)
    word_starts = np.asarray(word_starts)
    if token_ids.ndim != 1 or token_ids.size == 0:
        raise ValueError(f"token_ids must be a non-empty 1-D array, got shape {token_ids.shape}: "
                         "pass one block of ids without [CLS]/[SEP]")
    if not np.issubdtype(token_ids.dtype, np.integer):
        raise ValueError(f"token_ids must be integers, got dtype {token_ids.dtype}: convert with .astype(np.int64)")
    if word_starts.shape != token_ids.shape:
        raise ValueError(f"word_starts has shape {word_starts.shape} but the block has {token_ids.shape}: "
                         "give one flag per token (True at the first piece of each word)")
    if token_ids.min() < 0 or token_ids.max() >= vocab_size:
        raise ValueError(f"token ids must lie in [0, vocab_size={vocab_size}), got range "
                         f"[{token_ids.min()}, {token_ids.max()}]: check the tokenizer and vocab_size")
    return token_ids.astype(np.int64), word_starts.astype(bool)


def _check_unigram(unigram, vocab_size) -> np.ndarray:
    unigram = np.asarray(unigram, dtype=np.float64)
    if unigram.shape != (vocab_size,):
        raise ValueError(f"unigram must have shape ({vocab_size},), got {unigram.shape}: "
                         "give one probability per vocabulary id")
    if not np.all(np.isfinite(unigram)) or unigram.min() < 0 or abs(unigram.sum() - 1.0) > 1e-6:
        raise ValueError("unigram must be a probability vector (finite, >= 0, summing to 1): "
                         "normalise the token counts by their total")
    if unigram[:NUM_SPECIAL_IDS].any():
        raise ValueError(f"unigram gives probability to special ids < {NUM_SPECIAL_IDS}: "
                         "set their entries to 0 and renormalise")
    return unigram


def _random_tokens(rng, size, vocab_size, unigram) -> np.ndarray:
    """``size`` replacement ids: from ``unigram`` when given (as in the paper), else uniform over the
    ordinary ids [5, vocab_size) (our simplification). Inverse-CDF sampling, and only when tokens are
    needed: ``rng.choice(p=...)`` re-validates the whole vocabulary on every call."""
    if unigram is None:
        return rng.integers(NUM_SPECIAL_IDS, vocab_size, size=size)
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    cdf = np.cumsum(unigram)
    cdf /= cdf[-1]  # exactly 1.0 at the end, so a uniform in [0, 1) always lands on an id
    # side="right" skips zero-probability ids (they repeat the previous cdf value), specials included.
    return np.searchsorted(cdf, rng.random(size), side="right").astype(np.int64)


def _word_boundaries(word_starts: np.ndarray, special: np.ndarray):
    """Per token: its word index; per word: first token, one-past-last token, and the first word at
    or after it that is special (a barrier spans cannot cross; num_words when there is none)."""
    starts = word_starts.copy()
    starts[0] = True  # a block always begins a word
    starts |= special  # each special token is a word of its own ...
    starts[1:] |= special[:-1]  # ... and the token after it starts a new word
    word_of_token = np.cumsum(starts) - 1
    word_begin = np.flatnonzero(starts)
    word_end = np.append(word_begin[1:], starts.size)
    special_words = np.flatnonzero(special[word_begin])
    barrier = np.append(special_words, word_begin.size)
    next_barrier = barrier[np.searchsorted(special_words, np.arange(word_begin.size))]
    return word_of_token, word_begin, word_end, next_barrier


def _mask_word_spans(word_starts, special, budget, lengths, rng) -> tuple[np.ndarray, int]:
    """The span loop of §3.1 with lengths (in words) taken in order from ``lengths``.

    Returns the boolean mask and how many lengths were used (one per span). The authors draw an
    anchor uniformly over all positions and retry when it is already masked; drawing it uniformly
    over the unmasked, non-special positions is the same distribution without the retries. Every
    span masks at least one new token (an unmasked anchor's word is wholly unmasked, since only the
    final, budget-cut span can stop mid-word), so at most ``budget`` lengths are ever needed.
    """
    word_of_token, word_begin, word_end, next_barrier = _word_boundaries(word_starts, special)
    masked = np.zeros(special.size, dtype=bool)
    count, used = 0, 0
    while count < budget:
        candidates = np.flatnonzero(~(masked | special))
        anchor_word = word_of_token[candidates[rng.integers(candidates.size)]]
        last_word = min(anchor_word + lengths[used] - 1, next_barrier[anchor_word] - 1)
        used += 1
        start, stop = word_begin[anchor_word], word_end[last_word]
        # Tokens already masked by an earlier span are covered again but do not count.
        newly = np.cumsum(~masked[start:stop])
        remaining = budget - count
        if newly[-1] > remaining:  # budget reached inside this span: stop right at that token
            stop = start + int(np.searchsorted(newly, remaining)) + 1
        masked[start:stop] = True
        count += min(int(newly[-1]), remaining)
    return masked, used


def _runs(masked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive (starts, ends) of the maximal runs of True. Every span is a contiguous masked run
    and the mask is the union of the spans, so these are exactly the spans after merging
    overlapping and adjacent ones (the authors' ``merge_intervals``)."""
    edges = np.diff(np.concatenate(([0], masked.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def _replace_spans(token_ids, starts, ends, replacement: str, rng, *, vocab_size: int, unigram) -> np.ndarray:
    """BERT's 80/10/10 corruption of the masked tokens -> a corrupted copy of ``token_ids`` (n,).

    starts, ends  (S,) inclusive bounds of the merged spans (sorted, disjoint): every token in
                  them is masked, no other token is touched
    replacement   "span": ONE uniform r per merged span, shared by all its tokens (SpanBERT §3.1,
                  the code's ``span`` replacement), so a span is all [MASK], all random or all
                  unchanged; "token": one r per masked token (BERT)
    r < 0.8 -> [MASK] (MASK_PROB);  0.8 <= r < 0.9 -> a random token (RANDOM_PROB, drawn by
    :func:`_random_tokens` from ``unigram`` or uniformly over the ordinary ids);  else unchanged.
    Randomness, in this order: the uniforms (S of them, or one per masked token), then the
    random tokens.
    """
    lengths = ends - starts + 1
    positions = np.repeat(starts, lengths) + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    # One uniform per merged span, shared by its tokens, or one per token.
    if replacement == "span":
        draw = np.repeat(rng.random(starts.size), lengths)
    else:
        draw = rng.random(positions.size)
    input_ids = token_ids.copy()
    input_ids[positions[draw < MASK_PROB]] = MASK_ID
    randomised = positions[(draw >= MASK_PROB) & (draw < MASK_PROB + RANDOM_PROB)]
    input_ids[randomised] = _random_tokens(rng, randomised.size, vocab_size, unigram)
    return input_ids


def _sbo_targets(starts, ends, n, max_pair_targets):
    """Pair targets as in the authors' ``span_masking``: spans touching the block edges have no
    external boundary inside the block and are skipped; a span contributes only its first
    ``max_pair_targets`` tokens. Returns (left, right, rel_pos, position), each (P,) int64."""
    inner = (starts > 0) & (ends < n - 1)
    starts, ends = starts[inner], ends[inner]
    counts = np.minimum(ends - starts + 1, max_pair_targets)
    rel_pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    span_start = np.repeat(starts, counts)
    return span_start - 1, np.repeat(ends, counts) + 1, rel_pos, span_start + rel_pos


def mask_block(token_ids, word_starts, scheme: str, rng: np.random.Generator, *, vocab_size: int,
               mask_ratio: float = 0.15, geometric_p: float = 0.2, max_span_len: int = 10,
               max_pair_targets: int = 15, replacement: str | None = None,
               unigram=None) -> MaskedBlock:
    """Mask one block of n subword tokens (no [CLS]/[SEP]) for MLM + SBO (SpanBERT §3.1, §3.2).

    token_ids    (n,) ints in [0, vocab_size); [PAD], [CLS], [SEP] are never masked ([UNK] may be)
    word_starts  (n,) bool, True at the first piece of each word (word_starts[0] is taken as True)
    scheme       "span" (geometric whole-word spans), "word" (whole words), "token" (BERT)
    rng          numpy.random.Generator, the only source of randomness
    replacement  "span": one 80/10/10 draw per merged span (SpanBERT); "token": one per token (BERT,
                 the code's ``word_piece``); None: the scheme's paper default (span/word -> "span",
                 token -> "token"), which is the default.
    unigram      optional (vocab_size,) probabilities for random replacements (specials must be 0);
                 None: uniform over ids [5, vocab_size)

    The budget is ``ceil(mask_ratio * n)`` subword tokens, capped by the number of maskable tokens.
    Every token of every merged span is an MLM target; SBO targets follow the authors' code (see
    :func:`_sbo_targets`). For "token" each run of adjacent masked tokens is a span for SBO.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}: "
                         "pass np.random.default_rng(seed)")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown masking scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    if replacement is None:
        replacement = DEFAULT_REPLACEMENT[scheme]
    if replacement not in REPLACEMENTS:
        raise ValueError(f"unknown replacement {replacement!r}: choose one of {', '.join(REPLACEMENTS)} or None")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}: the paper uses 0.15")
    if max_span_len < 1:
        raise ValueError(f"max_span_len must be >= 1, got {max_span_len}: the paper uses 10")
    if max_pair_targets < 1:
        raise ValueError(f"max_pair_targets must be >= 1, got {max_pair_targets}: the code uses 15")
    if vocab_size <= NUM_SPECIAL_IDS:
        raise ValueError(f"vocab_size must exceed the {NUM_SPECIAL_IDS} special ids, got {vocab_size}")
    pmf_args = dict(p=geometric_p, lower=1, upper=max_span_len)
    span_length_pmf(**pmf_args)  # validates geometric_p before any work
    token_ids, word_starts = _check_block(token_ids, word_starts, vocab_size)
    if unigram is not None:
        unigram = _check_unigram(unigram, vocab_size)

    n = token_ids.size
    special = np.isin(token_ids, NEVER_MASKED_IDS)  # the name is the barrier's: never masked, spans stop there
    budget = min(masking_budget(n, mask_ratio), n - int(special.sum()))
    if scheme == "token":
        masked = np.zeros(n, dtype=bool)
        masked[rng.choice(np.flatnonzero(~special), size=budget, replace=False)] = True
        sampled = np.zeros(0, dtype=np.int64)
    else:
        lengths = (sample_span_lengths(rng, budget, **pmf_args) if scheme == "span"
                   else np.ones(budget, dtype=np.int64))
        masked, used = _mask_word_spans(word_starts, special, budget, lengths, rng)
        sampled = lengths[:used]

    starts, ends = _runs(masked)
    positions = np.flatnonzero(masked)
    input_ids = _replace_spans(token_ids, starts, ends, replacement, rng, vocab_size=vocab_size, unigram=unigram)
    mlm_labels = np.full(n, IGNORE_INDEX, dtype=np.int64)
    mlm_labels[positions] = token_ids[positions]

    left, right, rel_pos, sbo_position = _sbo_targets(starts, ends, n, max_pair_targets)
    return MaskedBlock(
        input_ids=input_ids, mlm_labels=mlm_labels,
        spans=[(int(s), int(e)) for s, e in zip(starts, ends)],
        sbo_left=left, sbo_right=right, sbo_rel_pos=rel_pos, sbo_position=sbo_position,
        sbo_target=token_ids[sbo_position], sampled_span_lengths=sampled,
    )


@dataclass(frozen=True)
class PretrainingBatch:
    """A padded batch of B sequences ``[CLS] block [SEP] [PAD]...`` of length T, NumPy int64.

    input_ids       (B, T)  masked tokens
    attention_mask  (B, T)  1 at real tokens (including [CLS]/[SEP]), 0 at padding (int64, not bool,
                            so the model can turn it into an additive mask with arithmetic)
    token_type_ids  (B, T)  all 0 (single-sequence training, no NSP)
    mlm_labels      (B, T)  original ids at masked positions, IGNORE_INDEX elsewhere ([CLS]/[SEP]/pad too)
    sbo_batch       (P,)    row of each SBO target
    sbo_left        (P,)    column of x_{s-1} in the padded sequence (block position + 1 for [CLS])
    sbo_right       (P,)    column of x_{e+1}
    sbo_rel_pos     (P,)    i - s, row of the relative-position table
    sbo_target      (P,)    original id of the masked token
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    mlm_labels: np.ndarray
    sbo_batch: np.ndarray
    sbo_left: np.ndarray
    sbo_right: np.ndarray
    sbo_rel_pos: np.ndarray
    sbo_target: np.ndarray


def make_pretraining_batch(blocks, word_starts_list, scheme: str, rng: np.random.Generator, *,
                           seq_len: int, vocab_size: int, cls_id: int = 2, sep_id: int = 3,
                           pad_id: int = 0, **mask_kwargs) -> PretrainingBatch:
    """Mask each block with :func:`mask_block` (in order, sharing ``rng``), wrap it as
    ``[CLS] block [SEP]``, pad to ``seq_len`` and stack. SBO boundary columns are shifted by +1 for
    the leading [CLS]. ``mask_kwargs`` go to :func:`mask_block` (mask_ratio, replacement, unigram, ...).
    """
    if len(blocks) == 0:
        raise ValueError("make_pretraining_batch needs at least one block")
    if len(word_starts_list) != len(blocks):
        raise ValueError(f"got {len(blocks)} blocks but {len(word_starts_list)} word_starts arrays: "
                         "give one word_starts array per block")
    batch_size = len(blocks)
    input_ids = np.full((batch_size, seq_len), pad_id, dtype=np.int64)
    attention_mask = np.zeros((batch_size, seq_len), dtype=np.int64)
    mlm_labels = np.full((batch_size, seq_len), IGNORE_INDEX, dtype=np.int64)
    sbo_parts = []
    for row, (block, word_starts) in enumerate(zip(blocks, word_starts_list)):
        n = len(block)
        if n > seq_len - 2:
            raise ValueError(f"block {row} has {n} tokens but seq_len={seq_len} leaves room for "
                             f"{seq_len - 2} between [CLS] and [SEP]: raise seq_len or pack shorter blocks")
        masked = mask_block(block, word_starts, scheme, rng, vocab_size=vocab_size, **mask_kwargs)
        input_ids[row, 0], input_ids[row, n + 1] = cls_id, sep_id
        input_ids[row, 1:n + 1] = masked.input_ids
        attention_mask[row, :n + 2] = 1
        mlm_labels[row, 1:n + 1] = masked.mlm_labels
        sbo_parts.append((np.full(masked.sbo_target.size, row, dtype=np.int64), masked.sbo_left + 1,
                          masked.sbo_right + 1, masked.sbo_rel_pos, masked.sbo_target))
    sbo_batch, sbo_left, sbo_right, sbo_rel_pos, sbo_target = (
        np.concatenate(column).astype(np.int64) for column in zip(*sbo_parts))
    return PretrainingBatch(
        input_ids=input_ids, attention_mask=attention_mask,
        token_type_ids=np.zeros((batch_size, seq_len), dtype=np.int64), mlm_labels=mlm_labels,
        sbo_batch=sbo_batch, sbo_left=sbo_left, sbo_right=sbo_right, sbo_rel_pos=sbo_rel_pos,
        sbo_target=sbo_target,
    )
