"""ELECTRA's input corruption on the host: which positions the generator sees masked, and the
keys of the noise that later picks its samples (Clark et al. 2020 §2; spec bert-family §5 "Objective" and
"Positions", from the authors' ``pretrain_helpers.mask``).

For one padded batch of original ids x (B, T) with attention mask (1 real / 0 pad):

    n_b   = sum_t mask[b, t]                              (real tokens, [CLS] and [SEP] included)
    k_b   = max(1, min(N, round(0.15 n_b), |C_b|))        N = int((0.15 + 0.005) T): 19 at T = 128
    C_b   = real positions whose id is not [CLS], [SEP] or [MASK]  (the candidates)
    M_b   = k_b positions drawn from C_b uniformly without replacement
    x_masked[m] = [MASK] with probability 0.85, else x[m] unchanged;  no random tokens
    key_m a 64-bit key per masked position, in flat (b, t) order: the Gumbel noise that picks the
            generator's sample at m is drawn from it (:func:`minispanbert.family.electra.gumbel_noise`)

Where this follows the authors' code rather than the paper: the paper (§2) masks with [MASK] only;
the code keeps 15% of the masked tokens unchanged (``ph.mask``), and so does this module. The code
draws positions WITH replacement (``tf.random.categorical``), duplicates collapsing to fewer than k;
we draw without replacement, so every row gets exactly k_b (a documented simplification, spec §5).
[UNK] and [PAD]-id tokens inside the real part are candidates, as in the code.

All randomness comes from one ``numpy.random.Generator``, derived by the caller from (seed, step),
and the sampling keys are drawn here, on the host, with the masks: they travel with their rows when
a batch is split over threads or ranks, so the sampling step is deterministic given the
generator's logits, whatever the split, and a resumed run draws exactly the replacements the
uninterrupted run drew, on NumPy and CuPy alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minispanbert.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from minispanbert.layers.cross_entropy import IGNORE_INDEX

MASK_RATIO = 0.15
MASK_TOKEN_PROB = 0.85  # the rest of the masked positions keep their token (authors' code)


@dataclass(frozen=True)
class ElectraBatch:
    """A padded batch ``[CLS] block [SEP] [PAD]...`` of B sequences of length T, NumPy int64.

    original_ids    (B, T)  the uncorrupted ids: the discriminator's labels compare against them
    input_ids       (B, T)  x_masked, the generator's input
    attention_mask  (B, T)  1 at real tokens ([CLS]/[SEP] included), 0 at padding
    token_type_ids  (B, T)  all 0 (single segment), given to both networks
    mlm_labels      (B, T)  original id at the masked positions, IGNORE_INDEX elsewhere
    sample_keys     (B, T)  uint64 noise keys at the masked positions (drawn in flat (b, t) order),
                            0 elsewhere: per row like every field, so a batch can be sliced by rows
    """

    original_ids: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    mlm_labels: np.ndarray
    sample_keys: np.ndarray


def max_predictions(seq_len: int, mask_ratio: float = MASK_RATIO) -> int:
    """The code's cap N = int((mask_ratio + 0.005) * seq_len) on masked positions per sequence."""
    return int((mask_ratio + 0.005) * seq_len)


def mask_for_electra(original_ids, attention_mask, rng: np.random.Generator, *, token_type_ids=None,
                     mask_ratio: float = MASK_RATIO) -> ElectraBatch:
    """Mask a padded batch for ELECTRA (module docstring) and draw its sampling keys."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}: "
                         "pass np.random.default_rng([seed, step, ...])")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}: ELECTRA uses 0.15")
    original_ids = np.asarray(original_ids, dtype=np.int64)
    attention_mask = np.asarray(attention_mask, dtype=np.int64)
    if original_ids.ndim != 2 or attention_mask.shape != original_ids.shape:
        raise ValueError(f"original_ids and attention_mask must be (B, T) arrays of one shape, got "
                         f"{original_ids.shape} and {attention_mask.shape}")
    B, T = original_ids.shape
    cap = max(1, max_predictions(T, mask_ratio))
    candidate = (attention_mask == 1) & (original_ids != CLS_ID) & (original_ids != SEP_ID) & (original_ids != MASK_ID)
    mlm_labels = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
    for b in range(B):
        candidates = np.flatnonzero(candidate[b])
        k = min(max(1, int(np.rint(mask_ratio * attention_mask[b].sum()))), cap, candidates.size)
        chosen = rng.choice(candidates, size=k, replace=False)
        mlm_labels[b, chosen] = original_ids[b, chosen]
    flat = np.flatnonzero(mlm_labels.reshape(-1) != IGNORE_INDEX)
    input_ids = original_ids.copy()
    to_mask = flat[rng.random(flat.size) < MASK_TOKEN_PROB]
    input_ids.reshape(-1)[to_mask] = MASK_ID
    sample_keys = np.zeros((B, T), dtype=np.uint64)
    sample_keys.reshape(-1)[flat] = rng.integers(0, 2**64, size=flat.size, dtype=np.uint64)
    return ElectraBatch(
        original_ids=original_ids, input_ids=input_ids, attention_mask=attention_mask,
        token_type_ids=(np.zeros((B, T), dtype=np.int64) if token_type_ids is None
                        else np.asarray(token_type_ids, dtype=np.int64)),
        mlm_labels=mlm_labels, sample_keys=sample_keys,
    )


def make_electra_batch(blocks, rng: np.random.Generator, *, seq_len: int, cls_id: int = CLS_ID,
                       sep_id: int = SEP_ID, pad_id: int = PAD_ID, mask_ratio: float = MASK_RATIO) -> ElectraBatch:
    """Wrap each block of ids as ``[CLS] block [SEP]``, pad to ``seq_len`` and mask for ELECTRA."""
    if len(blocks) == 0:
        raise ValueError("make_electra_batch needs at least one block")
    ids = np.full((len(blocks), seq_len), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(blocks), seq_len), dtype=np.int64)
    for row, block in enumerate(blocks):
        n = len(block)
        if n > seq_len - 2:
            raise ValueError(f"block {row} has {n} tokens but seq_len={seq_len} leaves room for "
                             f"{seq_len - 2} between [CLS] and [SEP]: raise seq_len or pack shorter blocks")
        ids[row, 0], ids[row, 1:n + 1], ids[row, n + 1] = cls_id, block, sep_id
        attention_mask[row, :n + 2] = 1
    return mask_for_electra(ids, attention_mask, rng, mask_ratio=mask_ratio)
