"""The whole BERT encoder: float64 gradient check of every parameter, padding invariance,
input validation, backend parity, and Hugging Face parameter naming."""
import numpy as np
import pytest

from minispanbert.backend import get_backend, to_numpy
from minispanbert.config import PRESETS, ModelConfig, preset
from minispanbert.engine.check_gradients import CHECK_CONFIG as TINY
from minispanbert.engine.check_gradients import (
    DROPOUT_CONFIG,
    MODEL_TOLERANCE,
    check_encoder,
    encoder_inputs,
    fixed_dropout_rng,
)
from minispanbert.gradcheck import assert_errors_below
from minispanbert.model.encoder import attentions, encoder_backward, encoder_forward, hidden_states, init_encoder_params

from conftest import BACKENDS, TOLERANCES, assert_allclose_finite


def test_encoder_gradients_float64_every_parameter():
    errors = check_encoder()
    assert len(errors) == len(init_encoder_params(TINY, np.random.default_rng(0)))
    assert_errors_below(errors, MODEL_TOLERANCE, "encoder")


def test_encoder_gradients_float64_with_dropout_on():
    """All four dropouts on (embeddings, attention weights, both residual branches), the masks fixed
    by re-creating the generator from one seed for every evaluation: a backward pass that forgets a
    mask fails here and nowhere else."""
    errors = check_encoder(dropout=True)
    assert len(errors) == len(init_encoder_params(TINY, np.random.default_rng(0)))
    assert_errors_below(errors, MODEL_TOLERANCE, "encoder with dropout")


def test_encoder_dropout_is_on_in_the_dropout_check():
    rng = np.random.default_rng(0)
    params = init_encoder_params(DROPOUT_CONFIG, rng)
    ids, types, mask = encoder_inputs(rng)
    plain = encoder_forward(params, ids, types, mask, DROPOUT_CONFIG, xp=np)[0]
    dropped = encoder_forward(params, ids, types, mask, DROPOUT_CONFIG, xp=np, train=True, rng=fixed_dropout_rng())[0]
    again = encoder_forward(params, ids, types, mask, DROPOUT_CONFIG, xp=np, train=True, rng=fixed_dropout_rng())[0]
    assert np.max(np.abs(dropped - plain)) > 1e-2
    np.testing.assert_array_equal(again, dropped)


def test_padded_positions_do_not_change_real_outputs():
    rng = np.random.default_rng(1)
    params = init_encoder_params(TINY, rng)
    ids, types, mask = encoder_inputs(rng)
    h, _ = encoder_forward(params, ids, types, mask, TINY, xp=np)
    ids2, types2 = ids.copy(), types.copy()
    ids2[1, 4:] = [11, 12]
    types2[1, 4:] = 1
    h2, _ = encoder_forward(params, ids2, types2, mask, TINY, xp=np)
    np.testing.assert_allclose(h2[1, :4], h[1, :4], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h2[0], h[0], rtol=1e-12, atol=1e-12)


def test_every_layer_s_output_and_attention_weights_are_exposed():
    """hidden_states: h_0 (the embeddings' output) then the output of layer k, which is what the same
    weights give with the model cut to k layers; attentions: softmax rows (sum 1) that give padded
    keys exactly 0. As Hugging Face's output_hidden_states / output_attentions (the real-weights test
    compares them with transformers)."""
    rng = np.random.default_rng(0)
    params = init_encoder_params(TINY, rng)
    ids, types, mask = encoder_inputs(rng)
    h, cache = encoder_forward(params, ids, types, mask, TINY, xp=np)
    states, weights = hidden_states(cache), attentions(cache)
    assert len(states) == TINY.num_hidden_layers + 1 and len(weights) == TINY.num_hidden_layers
    assert states[-1] is h
    for k in range(1, TINY.num_hidden_layers + 1):
        cut, _ = encoder_forward(params, ids, types, mask, TINY.replace(num_hidden_layers=k), xp=np)
        np.testing.assert_array_equal(states[k], cut)
    for w in weights:
        assert w.shape == (ids.shape[0], TINY.num_attention_heads, ids.shape[1], ids.shape[1])
        np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)
        assert np.all(w.transpose(0, 3, 1, 2)[mask == 0] == 0)


def test_hugging_face_parameter_names_and_shapes():
    params = init_encoder_params(TINY, np.random.default_rng(0))
    H, F = TINY.hidden_size, TINY.intermediate_size
    assert params["bert.embeddings.word_embeddings.weight"].shape == (TINY.vocab_size, H)
    assert params["bert.encoder.layer.1.attention.self.query.weight"].shape == (H, H)
    assert params["bert.encoder.layer.0.intermediate.dense.weight"].shape == (F, H)  # (out, in) like torch
    assert params["bert.encoder.layer.0.output.dense.weight"].shape == (H, F)
    assert params["bert.encoder.layer.1.output.LayerNorm.bias"].shape == (H,)
    # 3 embedding tables + the embedding LayerNorm pair, then 16 tensors per layer
    # (Q, K, V, O weight+bias = 8; two LayerNorm pairs = 4; two FFN weight+bias = 4)
    assert sum(not k.startswith("bert.encoder.") for k in params) == 5
    assert len(params) == 5 + 16 * TINY.num_hidden_layers


def test_init_statistics():
    config = PRESETS["tiny"]
    params = init_encoder_params(config, np.random.default_rng(0))
    w = params["bert.embeddings.word_embeddings.weight"]
    assert abs(w.std() - 0.02) < 1e-3 and abs(w.mean()) < 1e-3
    assert np.all(params["bert.encoder.layer.0.attention.self.query.bias"] == 0)
    assert np.all(params["bert.encoder.layer.0.output.LayerNorm.weight"] == 1)


@pytest.mark.parametrize("name,expected", [
    ("tiny", (2, 128, 2, 512, 8192, 128)), ("mini", (4, 256, 4, 1024, 16384, 128)),
    ("small", (4, 512, 8, 2048, 30522, 128)), ("base", (12, 768, 12, 3072, 28996, 512)),
])
def test_presets_match_the_issue(name, expected):
    c = preset(name)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.vocab_size,
            c.max_position_embeddings) == expected


def test_bad_config_and_preset():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")


@pytest.mark.parametrize("mutate,message", [
    (lambda i, t, m: (i[0], t, m), "2-D"),
    (lambda i, t, m: (i.astype(np.float32), t, m), "integer token ids"),
    (lambda i, t, m: (np.concatenate([i, i], axis=1), np.concatenate([t, t], axis=1), np.concatenate([m, m], axis=1)),
     "exceeds max_position_embeddings"),
    (lambda i, t, m: (i + 100, t, m), r"token ids must lie in \[0, 13\)"),
    (lambda i, t, m: (i, t[:, :3], m), "token_type_ids must have the shape"),
    (lambda i, t, m: (i, t, m[:1]), "attention_mask must have the shape"),
])
def test_bad_inputs_raise_clear_errors(mutate, message):
    rng = np.random.default_rng(0)
    params = init_encoder_params(TINY, rng)
    with pytest.raises(ValueError, match=message):
        encoder_forward(params, *mutate(*encoder_inputs(rng)), TINY, xp=np)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        get_backend("jax")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_encoder_backend_parity(backend, dtype):
    xp = get_backend(backend)
    assert xp is not np, "parity of NumPy with NumPy proves nothing"
    rng = np.random.default_rng(5)
    host = {k: v.astype(dtype) for k, v in init_encoder_params(TINY, rng).items()}
    ids, types, mask = encoder_inputs(rng)
    dout = rng.normal(size=(2, 6, TINY.hidden_size)).astype(dtype)
    results = []
    for module in (np, xp):
        params = {k: module.asarray(v) for k, v in host.items()}
        h, cache = encoder_forward(params, ids, types, mask, TINY, xp=module)
        grads = encoder_backward(module.asarray(dout), cache, xp=module)
        results.append({"h": to_numpy(h), **{k: to_numpy(v) for k, v in grads.items()}})
    tol = TOLERANCES[f"parity_{dtype}"]
    for name in results[0]:
        assert_allclose_finite(results[1][name], results[0][name], err_msg=name, **tol)
