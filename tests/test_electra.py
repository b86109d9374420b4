"""ELECTRA: the stable binary cross-entropy, the 85/15 masking with host-drawn sampling uniforms,
inverse-CDF sampling and replaced labels, the discriminator and generator heads, float64 gradient
checks of the whole loss with the samples held fixed, and the shared embeddings' summed gradient."""
import math

import numpy as np
import pytest

from minispanbert.data.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from minispanbert.electra_masking import make_electra_batch, mask_for_electra, max_predictions
from minispanbert.gradcheck import numerical_gradient, rel_error
from minispanbert.layers.binary_cross_entropy import binary_cross_entropy_backward, binary_cross_entropy_forward
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.model.electra import replace_tokens, sample_tokens

# --------------------------------------------------------------------------- binary cross-entropy


def naive_bce(z, y, m):
    p = 1.0 / (1.0 + np.exp(-z))
    return np.sum(m * -(y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(m)


def test_bce_matches_the_textbook_form_and_masks_out_padding(rng):
    z, y = rng.normal(size=(3, 5)) * 3, rng.integers(0, 2, size=(3, 5))
    m = np.ones((3, 5), dtype=np.int64)
    m[2, 3:] = 0
    loss, _ = binary_cross_entropy_forward(z, y, m, xp=np)
    assert float(loss) == pytest.approx(naive_bce(z, y, m), rel=1e-12)
    z2 = z.copy()
    z2[2, 3:] = 1e6  # a padded position can hold anything
    assert float(binary_cross_entropy_forward(z2, y, m, xp=np)[0]) == pytest.approx(float(loss), rel=1e-14)


def test_bce_is_exact_at_logits_of_plus_minus_1000():
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0])
    y = np.array([1, 0, 0, 1])
    m = np.ones(4)
    loss, cache = binary_cross_entropy_forward(z, y, m, xp=np)
    # confident and right: 0; confident and wrong: |z| = 1000
    assert float(loss) == pytest.approx((0 + 0 + 1000 + 1000) / 4, rel=1e-15)
    dz = binary_cross_entropy_backward(1.0, cache, xp=np)
    np.testing.assert_array_equal(dz, np.array([0.0, 0.0, 1.0, -1.0]) / 4)
    assert np.all(np.isfinite(dz))


def test_bce_float32_stays_finite_at_large_logits():
    z = np.array([-1000, -100, 0, 100, 1000], dtype=np.float32)
    y = np.array([1, 0, 1, 1, 0])
    loss, cache = binary_cross_entropy_forward(z, y, np.ones(5, dtype=np.int64), xp=np)
    dz = binary_cross_entropy_backward(1.0, cache, xp=np)
    assert loss.dtype == np.float32 and dz.dtype == np.float32
    assert float(loss) == pytest.approx((1000 + 0 + math.log(2) + 0 + 1000) / 5, rel=1e-6)
    assert np.all(np.isfinite(dz))


def test_bce_gradient_float64_including_large_logits(rng):
    z = np.concatenate([rng.normal(size=10) * 4, [1000.0, -1000.0, 999.0, -999.0]])
    y = np.array([0, 1] * 7)
    m = np.array([1] * 12 + [0, 1])
    _, cache = binary_cross_entropy_forward(z, y, m, xp=np)
    analytic = binary_cross_entropy_backward(0.7, cache, xp=np)
    numeric = numerical_gradient(lambda: 0.7 * binary_cross_entropy_forward(z, y, m, xp=np)[0], z)
    # f ~ 1000 here, so centred differences carry ~1e-16 * 1000 / 1e-5 of rounding: OP_TOLERANCE
    assert rel_error(analytic, numeric) < 1e-7
    assert analytic[12] == 0.0  # masked out


def test_bce_with_an_empty_mask_is_zero_not_nan():
    loss, cache = binary_cross_entropy_forward(np.ones(3), np.ones(3), np.zeros(3), xp=np)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(binary_cross_entropy_backward(1.0, cache, xp=np), np.zeros(3))


# --------------------------------------------------------------------------- masking


def padded_batch(rng, lengths, T, V=50):
    blocks = [rng.integers(5, V, size=n - 2) for n in lengths]
    return blocks


def test_masking_counts_candidates_and_the_85_15_split(rng):
    lengths = [128, 60, 7, 3]
    blocks = padded_batch(rng, lengths, 128)
    counts, masked_tokens, kept = [], 0, 0
    for seed in range(30):
        b = make_electra_batch(blocks, np.random.default_rng(seed), seq_len=128)
        targets = b.mlm_labels != IGNORE_INDEX
        counts.append(targets.sum(axis=1))
        # never [CLS], [SEP] or padding; the labels are the original ids
        assert not np.any(targets & (b.attention_mask == 0))
        assert not np.any(targets & np.isin(b.original_ids, [CLS_ID, SEP_ID]))
        np.testing.assert_array_equal(b.mlm_labels[targets], b.original_ids[targets])
        # x_masked differs from x only at targets, and only by [MASK]: no random tokens
        changed = b.input_ids != b.original_ids
        assert not np.any(changed & ~targets)
        assert np.all(b.input_ids[changed] == MASK_ID)
        masked_tokens += changed.sum()
        kept += (targets & ~changed).sum()
        # one uniform per target, in [0, 1), none elsewhere
        assert np.all((b.sample_uniforms[targets] >= 0) & (b.sample_uniforms[targets] < 1))
        assert np.all(b.sample_uniforms[~targets] == 0)
        assert len(set(b.sample_uniforms[targets].tolist())) == targets.sum()
    # k = max(1, min(N, round(0.15 n), candidates)): N = int(0.155 * 128) = 19
    assert max_predictions(128) == 19
    expected = [min(19, round(0.15 * 128)), round(0.15 * 60), 1, 1]
    np.testing.assert_array_equal(np.array(counts), np.tile(expected, (30, 1)))
    share = masked_tokens / (masked_tokens + kept)
    assert 0.80 < share < 0.90, share


def test_masking_is_a_function_of_the_generator_only(rng):
    blocks = padded_batch(rng, [20, 15], 24)
    a = make_electra_batch(blocks, np.random.default_rng([3, 7, 1]), seq_len=24)
    b = make_electra_batch(blocks, np.random.default_rng([3, 7, 1]), seq_len=24)
    c = make_electra_batch(blocks, np.random.default_rng([3, 8, 1]), seq_len=24)
    for field in ("input_ids", "mlm_labels", "sample_uniforms"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.sample_uniforms, c.sample_uniforms)


def test_masking_rejects_bad_input():
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        mask_for_electra(np.ones((1, 4), dtype=np.int64), np.ones((1, 4)), 0)
    with pytest.raises(ValueError, match="seq_len"):
        make_electra_batch([np.arange(5, 20)], np.random.default_rng(0), seq_len=10)


# --------------------------------------------------------------------------- sampling and labels


def test_inverse_cdf_sampling_picks_the_right_bucket():
    logits = np.log(np.array([[0.1, 0.2, 0.0001, 0.6999]]))
    logits = np.repeat(logits, 7, axis=0)  # cdf 0.1, 0.3, 0.3001, 1.0
    u = np.array([0.0, 0.0999, 0.1001, 0.2999, 0.30005, 0.3002, 0.9999])
    np.testing.assert_array_equal(sample_tokens(logits, u, xp=np), [0, 0, 1, 1, 2, 3, 3])


def test_sampling_follows_the_softmax_and_never_picks_impossible_ids():
    rng = np.random.default_rng(5)
    logits = np.tile(np.array([2.0, 0.0, -1e4, 1.0, -1.0]), (20000, 1)).astype(np.float32)
    samples = sample_tokens(logits, rng.random(20000), xp=np)
    p = np.exp(logits[0].astype(np.float64) - logits[0].max())
    p /= p.sum()
    freq = np.bincount(samples, minlength=5) / samples.size
    assert freq[2] == 0
    assert np.max(np.abs(freq - p)) < 0.015, (freq, p)


def test_replaced_labels_a_sample_equal_to_the_original_is_original():
    original = np.array([[2, 10, 11, 12, 3, 0]])
    positions = np.array([1, 2, 3])
    corrupt, labels = replace_tokens(original, positions, np.array([10, 20, 12]), xp=np)
    np.testing.assert_array_equal(corrupt, [[2, 10, 20, 12, 3, 0]])
    np.testing.assert_array_equal(labels, [[0, 0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(original, [[2, 10, 11, 12, 3, 0]])  # not modified in place
