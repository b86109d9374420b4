"""The encoder generalised to the BERT family (config.py, model/encoder.py, layers/activation.py):
the tanh GeLU and ReLU against closed forms, float64 gradient checks of the RoBERTa, ALBERT and
ELECTRA encoders (dropout off, and on with fixed masks), ALBERT's shared layers against an unrolled
copy, the layer order, RoBERTa's position ids, the padding_idx rule, config validation, and the
encoders against Hugging Face's BertModel / RobertaModel / AlbertModel / ElectraModel in float64."""
import math

import numpy as np
import pytest
from scipy.special import erf as scipy_erf

from minispanbert.config import ModelConfig
from minispanbert.engine.check_gradients import (
    FAMILY_CHECK_CONFIGS,
    MODEL_TOLERANCE,
    check_family_encoder,
    encoder_inputs,
)
from minispanbert.gradcheck import format_errors, rel_error
from minispanbert.layers.activation import activation_backward, activation_forward
from minispanbert.layers.gelu import gelu_forward, gelu_new_backward, gelu_new_forward
from minispanbert.model.encoder import encoder_backward, encoder_forward, init_encoder_params, position_ids
from minispanbert.model.names import key_bias_names, layer_schedule

SMALL = ModelConfig(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=24, max_position_embeddings=16, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)


def test_gelu_new_is_the_tanh_form_with_its_derivative():
    x = np.linspace(-6, 6, 2401)
    y, cache = gelu_new_forward(x, xp=np)
    c = math.sqrt(2 / math.pi)
    u = c * (x + 0.044715 * x ** 3)
    np.testing.assert_allclose(y, 0.5 * x * (1 + np.tanh(u)), rtol=1e-14, atol=1e-15)
    # the spec's derivative, written independently of the code's grouping
    expected = 0.5 * (1 + np.tanh(u)) + 0.5 * x * (1 - np.tanh(u) ** 2) * c * (1 + 0.134145 * x ** 2)
    np.testing.assert_allclose(gelu_new_backward(np.ones_like(x), cache, xp=np), expected, rtol=1e-13, atol=1e-15)
    assert np.all(cache[0] == x)  # the forward does not overwrite its input
    # the largest gap to the erf form is 4.7e-4 near |x| = 2.70 (spec §4 item 5): too big for parity
    gap = np.abs(y - gelu_forward(x, xp=np)[0])
    assert 4.5e-4 < gap.max() < 4.9e-4 and abs(abs(x[gap.argmax()]) - 2.70) < 0.05


@pytest.mark.parametrize("name, closed_form", [
    ("gelu", lambda x: 0.5 * x * (1 + scipy_erf(x / math.sqrt(2)))),
    ("gelu_new", lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    ("relu", lambda x: np.maximum(x, 0)),
])
def test_activation_by_name(name, closed_form):
    x = np.array([-3.0, -0.5, 0.25, 2.0])
    y, cache = activation_forward(x, name, xp=np)
    np.testing.assert_allclose(y, closed_form(x), rtol=1e-14)
    h = 1e-6
    numeric = (closed_form(x + h) - closed_form(x - h)) / (2 * h)
    np.testing.assert_allclose(activation_backward(np.ones(4), cache, xp=np), numeric, rtol=1e-7)
    with pytest.raises(ValueError, match="unknown activation"):
        activation_forward(x, "swish", xp=np)


# RoBERTa's and ALBERT's encoders are also checked inside their whole losses (test_family_objectives.py)
# and every combination runs in python -m minispanbert.check_gradients; these keep the suite short.
@pytest.mark.parametrize("model_type, dropout", [("albert", False), ("electra", False), ("electra", True)])
def test_family_encoder_gradients_float64(model_type, dropout):
    errors = check_family_encoder(model_type, dropout=dropout)
    assert len(errors) == len(init_encoder_params(FAMILY_CHECK_CONFIGS[model_type], np.random.default_rng(0)))
    assert max(errors.values()) < MODEL_TOLERANCE, format_errors(errors)


def _run(params, config, inputs, dout):
    h, cache = encoder_forward(params, *inputs, config, xp=np)
    return h, encoder_backward(dout, cache, xp=np)


@pytest.mark.parametrize("layers, inner", [(3, 1), (2, 2)])
def test_albert_shared_layer_gradient_is_the_sum_over_an_unrolled_copy(layers, inner):
    """One shared group applied L times equals L groups holding copies of it; the shared gradient
    equals the sum of the copies' gradients (spec §7 sanity check)."""
    shared = SMALL.replace(model_type="albert", hidden_act="gelu_new", embedding_size=8, num_hidden_layers=layers,
                           num_hidden_groups=1, inner_group_num=inner)
    unrolled = shared.replace(num_hidden_groups=layers)
    rng = np.random.default_rng(3)
    params = {k: v * 8 if v.ndim == 2 and "embeddings." not in k else v
              for k, v in init_encoder_params(shared, rng).items()}
    copies = {}
    for name, value in params.items():
        if ".albert_layer_groups.0." in name:
            for g in range(layers):
                copies[name.replace(".albert_layer_groups.0.", f".albert_layer_groups.{g}.")] = value.copy()
        else:
            copies[name] = value
    assert set(copies) == set(init_encoder_params(unrolled, np.random.default_rng(0)))
    inputs = encoder_inputs(rng, config=shared)
    dout = rng.normal(size=(*inputs[0].shape, shared.hidden_size))
    h_shared, g_shared = _run(params, shared, inputs, dout)
    h_unrolled, g_unrolled = _run(copies, unrolled, inputs, dout)
    np.testing.assert_allclose(h_shared, h_unrolled, rtol=1e-13, atol=1e-13)
    for name in params:
        if ".albert_layer_groups.0." in name:
            total = sum(g_unrolled[name.replace(".albert_layer_groups.0.", f".albert_layer_groups.{g}.")]
                        for g in range(layers))
            single = g_unrolled[name]
            if name not in key_bias_names(shared):
                assert rel_error(g_shared[name], total) < 1e-12, name
                assert rel_error(g_shared[name], single) > 1e-3, name  # the sum, not one application
        else:
            assert rel_error(g_shared[name], g_unrolled[name]) < 1e-12, name


def test_albert_layer_order_matches_hugging_face():
    """The orders checked on transformers 5.24 (spec §4 item 2)."""
    def schedule(L, G, K):
        return layer_schedule(SMALL.replace(model_type="albert", num_hidden_layers=L, num_hidden_groups=G,
                                            inner_group_num=K))
    assert schedule(2, 2, 2) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [g for g, _ in schedule(6, 4, 1)] == [0, 0, 1, 2, 2, 3]
    assert schedule(3, 1, 1) == [(0, 0)] * 3
    assert layer_schedule(SMALL) == [0, 1, 2]


def test_roberta_position_ids():
    config = SMALL.replace(model_type="roberta", pad_token_id=1, type_vocab_size=1)
    ids = np.array([[0, 7, 1, 8, 2, 1], [0, 9, 9, 2, 1, 1]])
    np.testing.assert_array_equal(position_ids(ids, config, xp=np), [[2, 3, 1, 4, 5, 1], [2, 3, 4, 5, 1, 1]])
    np.testing.assert_array_equal(position_ids(ids, SMALL, xp=np), [[0, 1, 2, 3, 4, 5]] * 2)
    assert config.max_sequence_length == 14
    with pytest.raises(ValueError, match="exceeds max_position_embeddings 16"):
        encoder_forward(init_encoder_params(config, np.random.default_rng(0)), np.zeros((1, 15), dtype=np.int64),
                        np.zeros((1, 15), dtype=np.int64), np.ones((1, 15), dtype=np.int64), config, xp=np)


def test_padding_idx_rows_start_at_zero_and_get_no_lookup_gradient():
    config = SMALL.replace(model_type="roberta", pad_token_id=1, type_vocab_size=1)
    rng = np.random.default_rng(0)
    params = init_encoder_params(config, rng)
    word, pos = params["roberta.embeddings.word_embeddings.weight"], params["roberta.embeddings.position_embeddings.weight"]
    assert not word[1].any() and not pos[1].any() and word[2].any() and pos[0].any()
    ids = np.array([[0, 7, 1, 8, 2, 1]])
    dout = rng.normal(size=(1, 6, config.hidden_size))
    _, grads = _run(params, config, (ids, np.zeros_like(ids), np.ones_like(ids)), dout)
    assert not grads["roberta.embeddings.word_embeddings.weight"][1].any()
    assert not grads["roberta.embeddings.position_embeddings.weight"][1].any()
    assert grads["roberta.embeddings.word_embeddings.weight"][7].any()
    # without pad_token_id (BERT, SpanBERT) the pad row is an ordinary row
    _, grads = _run(init_encoder_params(SMALL, rng), SMALL, (ids, np.zeros_like(ids), np.ones_like(ids)), dout)
    assert grads["bert.embeddings.word_embeddings.weight"][1].any()


def test_defaults_keep_bert_and_old_configs_load():
    old = {k: v for k, v in SMALL.to_dict().items()
           if k not in ("model_type", "hidden_act", "embedding_size", "num_hidden_groups", "inner_group_num",
                        "pad_token_id", "classifier_dropout_prob")}
    assert ModelConfig.from_dict(old) == SMALL
    names = list(init_encoder_params(SMALL, np.random.default_rng(0)))
    assert all(n.startswith("bert.") for n in names) and len(names) == 5 + 16 * 3


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(model_type="gpt"), "model_type"),
    (dict(embedding_size=8), "no embedding projection"),
    (dict(num_hidden_groups=2), "ALBERT's layer sharing"),
    (dict(model_type="albert", num_hidden_groups=4), "exceeds num_hidden_layers"),
    (dict(model_type="roberta"), "needs pad_token_id"),
    (dict(pad_token_id=40), "pad_token_id"),
    (dict(classifier_dropout_prob=1.0), "classifier_dropout_prob"),
])
def test_config_rejects_incompatible_fields(changes, message):
    with pytest.raises(ValueError, match=message):
        SMALL.replace(**changes)


# --------------------------------------------------------------------------- Hugging Face parity


def hf_encoder(config):
    """The Hugging Face base model with ``config``'s settings (tests/family_hf.py)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from family_hf import hf_model

    name = {"bert": "BertModel", "roberta": "RobertaModel", "albert": "AlbertModel", "electra": "ElectraModel"}
    kwargs = {} if config.model_type == "electra" else dict(add_pooling_layer=False)
    return torch, hf_model(config, name[config.model_type], **kwargs)


@pytest.mark.parametrize("config", [
    SMALL,
    SMALL.replace(model_type="roberta", pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5, hidden_act="relu"),
    SMALL.replace(model_type="albert", hidden_act="gelu_new", embedding_size=8, num_hidden_layers=3,
                  num_hidden_groups=2, inner_group_num=2),
    SMALL.replace(model_type="electra", embedding_size=8),
], ids=["bert", "roberta", "albert", "electra"])
def test_encoder_equals_hugging_face_float64(config):
    torch, model = hf_encoder(config)
    prefix = f"{config.model_type}."
    rng = np.random.default_rng(5)
    params = {k: v * 6 if v.ndim == 2 and "embeddings." not in k else v + 0.2 * rng.normal(size=v.shape)
              for k, v in init_encoder_params(config, rng).items()}
    ours = {prefix + name for name, _ in model.named_parameters()}
    assert ours == set(params), sorted(ours ^ set(params))
    model.load_state_dict({name: torch.from_numpy(params[prefix + name].copy()) for name in model.state_dict()
                           if prefix + name in params}, strict=False)
    pad = 0 if config.pad_token_id is None else config.pad_token_id
    ids = rng.integers(3, config.vocab_size, size=(3, 12))
    ids[0, 1] = ids[0, 2]                     # a duplicate id: its rows accumulate
    mask = np.ones_like(ids)
    mask[1, 8:], mask[2, 5:] = 0, 0
    ids[mask == 0] = pad
    types = np.zeros_like(ids)
    if config.type_vocab_size > 1:
        types[:, 6:] = 1
    dout = rng.normal(size=(*ids.shape, config.hidden_size)) * mask[..., None]
    h, grads = _run(params, config, (ids, types, mask), dout)
    t = {k: torch.from_numpy(v) for k, v in dict(input_ids=ids, attention_mask=mask, token_type_ids=types).items()}
    out = model(**t).last_hidden_state
    (out * torch.from_numpy(dout)).sum().backward()
    real = mask.astype(bool)
    assert rel_error(h[real], out.detach().numpy()[real]) < 1e-12
    for name, p in model.named_parameters():
        if prefix + name in key_bias_names(config):
            assert np.abs(grads[prefix + name]).max() < 1e-10 and p.grad.abs().max() < 1e-10
        else:
            assert rel_error(grads[prefix + name], p.grad.numpy()) < 1e-10, name
