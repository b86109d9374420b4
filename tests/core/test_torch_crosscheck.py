"""The NumPy engine against an independent PyTorch implementation (minispanbert/torch_reference.py):
encoder outputs and gradients, the full pretraining loss and the gradient of every parameter (the
tied embedding included) in float64, float32 agreement on the `tiny` preset, and AdamW steps
against torch.optim.AdamW. Skipped when torch is not installed."""
from types import SimpleNamespace

import numpy as np
import pytest

from minispanbert.config import ModelConfig, preset
from minispanbert.engine.bench.torch_reference import (
    build_reference,
    reference_gradients,
    reference_loss,
    to_torch_batch,
    torch_train_step_factory,
)
from minispanbert.gradcheck import rel_error
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.model.encoder import encoder_backward, encoder_forward
from minispanbert.model.spanbert_loss import init_pretraining_params, pretraining_backward, pretraining_forward

from conftest import assert_allclose_finite

torch = pytest.importorskip("torch")  # torch_reference itself never imports it

# Larger than check_gradients.CHECK_CONFIG: 4 heads of size 4, and a batch of three rows of different lengths.
SMALL = ModelConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=32, max_position_embeddings=16, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0, sbo_max_targets=5, sbo_position_dim=6)
FLOAT64_TOL = 1e-10
CLS, SEP, PAD, MASK = 2, 3, 0, 4


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These matrices are tiny: torch's worker threads only add synchronisation, and when other
    processes share the cores their spin-waiting makes each op ~100x slower. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def key_bias_names(config):
    """Their gradient is exactly 0 in exact arithmetic (softmax ignores a shift shared by a whole
    score row), so both sides hold rounding noise there and only its size can be compared."""
    return {f"bert.encoder.layer.{i}.attention.self.key.bias" for i in range(config.num_hidden_layers)}


def assert_grads_match(ours, ref, config, tol):
    assert ours.keys() == ref.keys()
    scale = max(float(np.abs(g).max()) for g in ref.values())
    errors = {}
    for name in ref:
        if name in key_bias_names(config):
            noise = 100 * np.finfo(ref[name].dtype).eps * scale
            assert np.abs(ours[name]).max() < noise and np.abs(ref[name]).max() < noise, name
        else:
            errors[name] = rel_error(ours[name], ref[name])
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert worst[0][1] < tol, f"worst relative errors: {worst}"


def nontrivial_params(config, seed, dtype="float64"):
    """Initial parameters moved away from the init point: LayerNorm weights off 1, biases off 0 and
    weights 15x larger, so attention is far from uniform and a swapped gamma/beta, a missing bias or
    a wrong attention scale would all show."""
    rng = np.random.default_rng(seed)
    params = init_pretraining_params(config, seed, xp=np, dtype="float64")
    out = {}
    for name, value in params.items():
        if "LayerNorm" in name or name.endswith("bias"):
            value = value + 0.3 * rng.normal(size=value.shape)
        else:
            value = value * 15
        out[name] = value.astype(dtype)
    return out


def random_batch(rng, config, lengths, seq_len, max_span=3):
    """[CLS] tokens [SEP] [PAD]... rows of the given real lengths, token types 0 then 1 (a pair
    input), masked spans with their SBO targets, plus one MLM-only target at column 1 of row 0 (a
    span touching the block edge gets no SBO target, spec §2)."""
    B, V = len(lengths), config.vocab_size
    original = rng.integers(5, V, size=(B, seq_len))
    original[:, 0] = CLS
    original[0, 1] = original[0, 2]  # a duplicate token id: its embedding rows must accumulate
    attention_mask = np.zeros((B, seq_len), dtype=np.int64)
    token_type_ids = np.zeros((B, seq_len), dtype=np.int64)
    for b, n in enumerate(lengths):
        original[b, n - 1], original[b, n:] = SEP, PAD
        attention_mask[b, :n] = 1
        token_type_ids[b, n // 2:n] = 1
    input_ids, mlm_labels = original.copy(), np.full((B, seq_len), IGNORE_INDEX)
    sbo = {k: [] for k in ("batch", "left", "right", "rel_pos", "target")}
    for b, n in enumerate(lengths):
        cursor = 2 if b == 0 else 1                            # row 0, column 1: the MLM-only target
        while True:
            start = cursor + int(rng.integers(1, 3))          # >= 1 unmasked token before the span
            length = min(int(rng.integers(1, max_span + 1)), n - 2 - start)  # x_{e+1} may be [SEP], not pad
            if length < 1:
                break
            span = np.arange(start, start + length)
            mlm_labels[b, span] = original[b, span]
            input_ids[b, span] = MASK if rng.random() < 0.8 else rng.integers(5, V, size=length)
            for i in span:
                for key, value in zip(sbo, (b, start - 1, start + length, i - start, original[b, i])):
                    sbo[key].append(value)
            cursor = start + length
    mlm_labels[0, 1] = original[0, 1]
    input_ids[0, 1] = MASK
    return SimpleNamespace(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           mlm_labels=mlm_labels, **{f"sbo_{k}": np.array(v, dtype=np.int64) for k, v in sbo.items()})


def engine_loss_and_grads(params, batch, config, sbo_weight=1.0):
    out, cache = pretraining_forward(params, batch, config, xp=np, sbo_weight=sbo_weight)
    parts = {k: float(getattr(out, k)) for k in ("loss", "mlm_loss", "sbo_loss")}
    return parts, pretraining_backward(cache, xp=np)


def test_random_batch_is_well_formed():
    batch = random_batch(np.random.default_rng(0), SMALL, [12, 9, 6], 12)
    rows = batch.sbo_batch
    assert rows.size >= 3 and set(rows) == {0, 1, 2}
    assert np.all(batch.attention_mask[rows, batch.sbo_left] == 1) and np.all(batch.attention_mask[rows, batch.sbo_right] == 1)
    assert np.all(batch.mlm_labels[rows, batch.sbo_left] == IGNORE_INDEX)   # boundaries are never masked
    assert np.all(batch.mlm_labels[rows, batch.sbo_right] == IGNORE_INDEX)
    targets_at = batch.mlm_labels[rows, batch.sbo_left + 1 + batch.sbo_rel_pos]
    np.testing.assert_array_equal(targets_at, batch.sbo_target)
    assert (batch.mlm_labels != IGNORE_INDEX).sum() == batch.sbo_target.size + 1
    assert batch.sbo_rel_pos.max() < SMALL.sbo_max_targets


def test_encoder_outputs_and_gradients_float64():
    rng = np.random.default_rng(1)
    params = nontrivial_params(SMALL, seed=1)
    batch = random_batch(rng, SMALL, [12, 9, 6], 12)
    h, cache = encoder_forward(params, batch.input_ids, batch.token_type_ids, batch.attention_mask, SMALL, xp=np)
    dh = rng.normal(size=h.shape)
    grads = encoder_backward(dh, cache, xp=np)

    model = build_reference(torch, params, SMALL, dtype="float64")
    tb = to_torch_batch(torch, batch, SMALL)
    h_ref = model.encode(tb.input_ids, tb.token_type_ids, tb.attention_mask)
    (h_ref * torch.from_numpy(dh)).sum().backward()
    assert rel_error(h, h_ref.detach().numpy()) < FLOAT64_TOL
    ref = {name: p.grad.numpy() for name, p in model.named_parameters() if name.startswith("bert.")}
    assert len(ref) == 5 + 16 * SMALL.num_hidden_layers
    assert_grads_match(grads, ref, SMALL, FLOAT64_TOL)


@pytest.mark.parametrize("sbo_weight", [1.0, 0.5, 0.0])
def test_pretraining_loss_and_every_gradient_float64(sbo_weight):
    rng = np.random.default_rng(2)
    params = nontrivial_params(SMALL, seed=2)
    batch = random_batch(rng, SMALL, [12, 10, 7], 12)
    parts, grads = engine_loss_and_grads(params, batch, SMALL, sbo_weight)
    ref_parts, ref_grads = reference_gradients(torch, params, batch, SMALL, dtype="float64", sbo_weight=sbo_weight)
    for key in ("loss", "mlm_loss", "sbo_loss"):
        assert parts[key] == pytest.approx(ref_parts[key], rel=FLOAT64_TOL, abs=1e-300), key
    assert ref_parts["mlm_loss"] > 1.0 and (ref_parts["sbo_loss"] > 1.0) == (sbo_weight != 0)
    assert ref_grads.keys() == params.keys()  # every parameter, the SBO head and the tied E included
    assert_grads_match(grads, ref_grads, SMALL, FLOAT64_TOL)
    if sbo_weight == 0:
        assert all(not g.any() for name, g in grads.items() if name.startswith("cls.sbo."))


def test_float32_tiny_preset_agrees_with_torch():
    config = preset("tiny").replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(3)
    params = init_pretraining_params(config, 3, xp=np, dtype="float32")
    batch = random_batch(rng, config, [32, 21], 32, max_span=5)
    parts, grads = engine_loss_and_grads(params, batch, config)
    ref_parts, ref_grads = reference_gradients(torch, params, batch, config, dtype="float32")
    for key in ("loss", "mlm_loss", "sbo_loss"):
        assert parts[key] == pytest.approx(ref_parts[key], rel=1e-5), key
    assert all(g.dtype == np.float32 for g in grads.values())
    assert_grads_match(grads, ref_grads, config, 1e-5)


def test_adamw_training_steps_match_torch():
    """Two full training steps (loss, backward, clipping to a norm the gradient exceeds, AdamW with
    BERT's no-decay groups) through the engine and through torch_train_step_factory."""
    optim = pytest.importorskip("minispanbert.optim")
    rng = np.random.default_rng(4)
    params = nontrivial_params(SMALL, seed=4)
    batch = random_batch(rng, SMALL, [12, 8], 12)
    hyper = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)
    mask = optim.no_decay_mask(params)
    step = torch_train_step_factory(torch, params, SMALL, decay_mask=mask, max_grad_norm=1.0,
                                    dtype="float64", **hyper)
    state = optim.adamw_init(params, xp=np)
    for _ in range(2):
        parts, grads = engine_loss_and_grads(params, batch, SMALL)
        norm = float(optim.clip_grad_norm(grads, 1.0, xp=np))
        assert norm > 1.0  # the clipping branch is exercised
        optim.adamw_update(params, grads, state, decay_mask=mask, xp=np, **hyper)
        ref_parts = step(batch)
        assert parts["loss"] == pytest.approx(ref_parts["loss"], rel=FLOAT64_TOL)
    ref_params = step.numpy_params()
    for name in params:
        if name in key_bias_names(SMALL):
            # Adam divides rounding noise (~1e-17) by eps: both sides move it by ~lr * 1e-9, not lr
            assert_allclose_finite(params[name], ref_params[name], rtol=0, atol=1e-6 * hyper["lr"], err_msg=name)
        else:
            assert_allclose_finite(params[name], ref_params[name], rtol=1e-10, atol=1e-12, err_msg=name)
    moved = params["bert.embeddings.LayerNorm.bias"] - nontrivial_params(SMALL, seed=4)["bert.embeddings.LayerNorm.bias"]
    assert np.abs(moved).max() > 1e-3  # the steps did something


def test_reference_loss_accepts_a_converted_batch_and_zero_targets():
    params = nontrivial_params(SMALL, seed=5)
    batch = random_batch(np.random.default_rng(5), SMALL, [10, 10], 10)
    model = build_reference(torch, params, SMALL, dtype="float64")
    converted = to_torch_batch(torch, batch, SMALL)
    assert to_torch_batch(torch, converted, SMALL) is converted
    assert reference_loss(torch, model, converted)["loss"].item() == reference_loss(torch, model, batch)["loss"].item()
    no_sbo = SimpleNamespace(**{**vars(batch), **{f"sbo_{k}": np.zeros(0, np.int64)
                                                  for k in ("batch", "left", "right", "rel_pos", "target")}})
    parts = reference_loss(torch, model, no_sbo)
    assert parts["sbo_loss"].item() == 0.0 and parts["loss"].item() == parts["mlm_loss"].item()
    assert parts["loss"].item() == pytest.approx(engine_loss_and_grads(params, no_sbo, SMALL)[0]["loss"], rel=FLOAT64_TOL)


def test_build_reference_rejects_mismatched_parameters():
    params = nontrivial_params(SMALL, seed=6)
    with pytest.raises(ValueError, match="missing"):
        build_reference(torch, {k: v for k, v in params.items() if k != "cls.sbo.bias"}, SMALL)
    with pytest.raises(ValueError, match="shape"):
        build_reference(torch, params, SMALL.replace(vocab_size=51))
    with pytest.raises(ValueError, match="dtype"):
        build_reference(torch, params, SMALL, dtype="float16")


@pytest.mark.parametrize("field, value, message", [
    ("input_ids", 50, "input_ids"), ("sbo_rel_pos", 5, "sbo_rel_pos"), ("token_type_ids", 2, "token_type_ids"),
])
def test_bad_batches_are_one_line_value_errors(field, value, message):
    batch = random_batch(np.random.default_rng(7), SMALL, [10, 10], 10)
    getattr(batch, field).flat[0] = value
    with pytest.raises(ValueError, match=message):
        to_torch_batch(torch, batch, SMALL)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        to_torch_batch(torch, random_batch(np.random.default_rng(7), SMALL, [17], 17), SMALL)
