"""SpanBERT's heads and loss: float64 gradient checks (the tied embedding included), SBO reading
only the external boundaries, gathered-vs-full MLM logits, the three sources of the embedding
gradient, and the ln(V) sanity check at initialisation."""
import math

import numpy as np
import pytest

from minispanbert.backend import get_backend, to_numpy
from minispanbert.config import preset
from minispanbert.engine.check_gradients import CHECK_CONFIG as TINY
from minispanbert.engine.check_gradients import (
    MODEL_TOLERANCE,
    OP_TOLERANCE,
    check_mlm_head,
    check_pretraining_loss,
    check_sbo_head,
    hand_batch,
    scaled_model_params,
)
from minispanbert.gradcheck import assert_errors_below
from minispanbert.layers.cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from minispanbert.model.encoder import encoder_backward
from minispanbert.model.mlm_head import init_mlm_head_params, mlm_head_backward, mlm_head_forward
from minispanbert.model.names import WORD_EMBEDDINGS
from minispanbert.model.sbo_head import init_sbo_head_params, sbo_head_backward, sbo_head_forward
from minispanbert.model.spanbert_loss import (
    SpanBertForPretraining,
    init_pretraining_params,
    pretraining_backward,
    pretraining_forward,
)

from conftest import BACKENDS, TOLERANCES, assert_allclose_finite


def test_mlm_head_gradients_float64():
    errors = check_mlm_head()
    assert "h (encoder output)" in errors and WORD_EMBEDDINGS in errors
    assert_errors_below(errors, OP_TOLERANCE, "MLM head")


def test_mlm_head_gives_unmasked_positions_no_gradient():
    rng = np.random.default_rng(0)
    params = init_mlm_head_params(TINY, rng)
    params[WORD_EMBEDDINGS] = rng.normal(size=(TINY.vocab_size, TINY.hidden_size))
    logits, cache = mlm_head_forward(params, rng.normal(size=(2, 5, TINY.hidden_size)), np.array([1, 3, 7, 8]), xp=np)
    dh, _ = mlm_head_backward(rng.normal(size=logits.shape), cache, xp=np)
    assert np.all(dh.reshape(10, -1)[[0, 2, 4, 5, 6, 9]] == 0)


def test_sbo_head_gradients_float64():
    errors = check_sbo_head()
    assert "h (encoder output)" in errors and "cls.sbo.position_embeddings.weight" in errors
    assert_errors_below(errors, OP_TOLERANCE, "SBO head")


def test_sbo_reads_only_the_external_boundaries():
    rng = np.random.default_rng(2)
    params = init_sbo_head_params(TINY, rng)
    params[WORD_EMBEDDINGS] = rng.normal(size=(TINY.vocab_size, TINY.hidden_size))
    h = rng.normal(size=(1, 8, TINY.hidden_size))
    # span x_3..x_5: boundaries are x_2 and x_6 (flat indices 2 and 6)
    left, right, rel = np.array([2, 2, 2]), np.array([6, 6, 6]), np.array([0, 1, 2])
    base = sbo_head_forward(params, h, left, right, rel, xp=np)[0]
    for t in (0, 1, 3, 4, 5, 7):  # inside the span and outside it, but not the boundaries
        changed = h.copy()
        changed[0, t] += 5.0
        np.testing.assert_array_equal(sbo_head_forward(params, changed, left, right, rel, xp=np)[0], base)
    for t in (2, 6):
        changed = h.copy()
        changed[0, t] += 5.0
        assert np.max(np.abs(sbo_head_forward(params, changed, left, right, rel, xp=np)[0] - base)) > 1e-3
    # the relative position matters too: the same boundaries, different p_{i-s+1}
    assert not np.allclose(base[0], base[1])


def test_full_pretraining_loss_gradients_float64_every_parameter():
    errors = check_pretraining_loss()
    assert set(errors) == set(init_pretraining_params(TINY, 0, xp=np))
    assert_errors_below(errors, MODEL_TOLERANCE, "pretraining loss")


def test_full_pretraining_loss_gradients_float64_with_dropout_on():
    """The loss as training computes it (every dropout on), the masks fixed by re-seeding the
    generator for each evaluation; a sample of each tensor's elements."""
    errors = check_pretraining_loss(dropout=True)
    assert set(errors) == set(init_pretraining_params(TINY, 0, xp=np))
    assert_errors_below(errors, MODEL_TOLERANCE, "pretraining loss with dropout")


def test_word_embedding_gradient_is_the_sum_of_three_sources():
    params = scaled_model_params(1)
    batch = hand_batch()
    total = pretraining_backward(pretraining_forward(params, batch, TINY, xp=np)[1], xp=np)[WORD_EMBEDDINGS]
    # recompute each source on its own
    encoder_cache, mlm_cache, mlm_ce_cache, sbo_cache, sbo_ce_cache, *_ = pretraining_forward(params, batch, TINY, xp=np)[1]
    dh_mlm, mlm_grads = mlm_head_backward(cross_entropy_backward(1.0, mlm_ce_cache, xp=np), mlm_cache, xp=np)
    dh_sbo, sbo_grads = sbo_head_backward(cross_entropy_backward(1.0, sbo_ce_cache, xp=np), sbo_cache, xp=np)
    lookup = encoder_backward(dh_mlm + dh_sbo, encoder_cache, xp=np)[WORD_EMBEDDINGS]
    np.testing.assert_allclose(total, lookup + mlm_grads[WORD_EMBEDDINGS] + sbo_grads[WORD_EMBEDDINGS], rtol=1e-12, atol=1e-15)
    for part in (lookup, mlm_grads[WORD_EMBEDDINGS], sbo_grads[WORD_EMBEDDINGS]):
        assert np.max(np.abs(part)) > 1e-6  # each source really contributes


def test_gathered_logits_equal_logits_at_every_position():
    rng = np.random.default_rng(5)
    params = init_pretraining_params(TINY, 2, xp=np, dtype="float64")
    h = rng.normal(size=(2, 7, TINY.hidden_size))
    labels = hand_batch().mlm_labels.reshape(-1)
    masked = np.flatnonzero(labels != IGNORE_INDEX)
    results = []
    for positions, targets in ((masked, labels[masked]), (np.arange(14), labels)):
        logits, cache = mlm_head_forward(params, h, positions, xp=np)
        loss, ce_cache = cross_entropy_forward(logits, targets, xp=np)
        dh, grads = mlm_head_backward(cross_entropy_backward(1.0, ce_cache, xp=np), cache, xp=np)
        results.append((float(loss), dh, grads))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-13)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-16)
    for name in results[0][2]:
        np.testing.assert_allclose(results[0][2][name], results[1][2][name], rtol=1e-12, atol=1e-16)


def test_sbo_weight_zero_switches_sbo_off():
    params = scaled_model_params()
    batch = hand_batch()
    model = SpanBertForPretraining(TINY, params, xp=np, sbo_weight=0.0)
    out, cache = model.forward(batch)
    grads = model.backward(cache)
    assert float(out.loss) == float(out.mlm_loss) and out.sbo_count == 0
    assert all(np.all(g == 0) for k, g in grads.items() if k.startswith("cls.sbo."))
    with_sbo, _ = SpanBertForPretraining(TINY, params, xp=np, sbo_weight=1.0).forward(batch)
    assert float(with_sbo.loss) == pytest.approx(float(with_sbo.mlm_loss) + float(with_sbo.sbo_loss), rel=1e-12)


def test_initial_losses_are_about_ln_vocab():
    """CS231n sanity check: an untrained model is ~uniform over the vocabulary. Logits at init have
    std ~ sqrt(H) * 0.02 = 0.23, which adds ~0.03 to ln V; 256 targets keep the sampling noise ~0.015."""
    from types import SimpleNamespace

    config = preset("tiny").replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(7)
    B, T, P = 4, 64, 256
    mlm_labels = np.full((B, T), IGNORE_INDEX)
    mlm_labels[:, 1:T - 1] = rng.integers(5, config.vocab_size, size=(B, T - 2))
    batch = SimpleNamespace(
        input_ids=rng.integers(5, config.vocab_size, size=(B, T)), attention_mask=np.ones((B, T), dtype=np.int64),
        token_type_ids=np.zeros((B, T), dtype=np.int64), mlm_labels=mlm_labels,
        sbo_batch=rng.integers(0, B, size=P), sbo_left=rng.integers(1, 30, size=P), sbo_right=rng.integers(31, 62, size=P),
        sbo_rel_pos=rng.integers(0, config.sbo_max_targets, size=P), sbo_target=rng.integers(5, config.vocab_size, size=P))
    out, _ = SpanBertForPretraining.initialise(config, seed=0, xp=np).forward(batch)
    assert abs(float(out.mlm_loss) - math.log(config.vocab_size)) < 0.1
    assert abs(float(out.sbo_loss) - math.log(config.vocab_size)) < 0.1


def test_sbo_position_out_of_table_is_a_clear_error():
    batch = hand_batch()
    batch.sbo_rel_pos = np.array([0, 1, TINY.sbo_max_targets])
    with pytest.raises(ValueError, match="max_pair_targets"):
        pretraining_forward(init_pretraining_params(TINY, 0, xp=np, dtype="float64"), batch, TINY, xp=np)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pretraining_backend_parity(backend, dtype):
    xp = get_backend(backend)
    assert xp is not np, "parity of NumPy with NumPy proves nothing"
    batch = hand_batch()
    results = []
    for module in (np, xp):
        params = init_pretraining_params(TINY, 3, xp=module, dtype=dtype)
        out, cache = pretraining_forward(params, batch, TINY, xp=module)
        grads = pretraining_backward(cache, xp=module)
        results.append({"loss": to_numpy(out.loss), **{k: to_numpy(v) for k, v in grads.items()}})
    for name in results[0]:
        assert_allclose_finite(results[1][name], results[0][name], err_msg=name, **TOLERANCES[f"parity_{dtype}"])
