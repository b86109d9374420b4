"""AdamW, the warmup/decay schedule and gradient clipping (minispanbert/optim.py). The AdamW tests
run on both implementations: the textbook update of the core and the in-place one the commands
install (engine/kernels/adamw.py), each against values worked out by hand or from PyTorch."""
import math

import numpy as np
import pytest

from minispanbert.engine.kernels import adamw as in_place
from minispanbert.optim import (
    adamw_init,
    adamw_update,
    clip_and_step,
    clip_grad_norm,
    linear_warmup_decay,
    no_decay_mask,
)

EPS = 1e-8
ADAMW = [pytest.param(adamw_update, id="textbook"), pytest.param(in_place.adamw_update, id="in-place")]


@pytest.mark.parametrize("adamw", ADAMW)
def test_adamw_matches_hand_computed_steps(adamw):
    """Three steps, worked out by hand from the update rule.

    With lr=0.1, betas (0.9, 0.999), wd=0.5 and gradients of size 1, v_hat = 1 at every step, so
    the Adam direction is just m_hat / (1 + eps):
      t=1, g=+1: m = 0.1,                v = 0.001,               m_hat = 0.1/0.1 = 1
      t=2, g=-1: m = 0.09 - 0.1 = -0.01, v = 0.000999 + 0.001 = 0.001999 = 1 - 0.999^2
                 m_hat = -0.01 / 0.19 = -1/19
      t=3, g=+1: m = -0.009 + 0.1 = 0.091, v = 0.001997001 + 0.001 = 0.002997001 = 1 - 0.999^3
                 m_hat = 0.091 / 0.271 = 91/271
    The decayed weight is first multiplied by 1 - lr*wd = 0.95; the bias is exempt.
    """
    params = {"dense.weight": np.array([2.0, -3.0]), "dense.bias": np.array([0.5])}
    weight_id = id(params["dense.weight"])
    signs = {"dense.weight": np.array([1.0, -1.0]), "dense.bias": np.array([1.0])}
    state = adamw_init(params, xp=np)
    mask = no_decay_mask(params)
    assert mask == {"dense.weight": True, "dense.bias": False}

    expected_m_hat = [1.0, -1 / 19, 91 / 271]
    expected_m = [0.1, -0.01, 0.091]
    expected_v = [0.001, 0.001999, 0.002997001]
    weight, bias = np.array([2.0, -3.0]), 0.5
    for t, g in enumerate([1.0, -1.0, 1.0]):
        grads = {name: g * s for name, s in signs.items()}
        adamw(params, grads, state, lr=0.1, weight_decay=0.5, decay_mask=mask, xp=np)
        weight = weight * 0.95 - 0.1 * expected_m_hat[t] * signs["dense.weight"] / (1 + EPS)
        bias = bias - 0.1 * expected_m_hat[t] / (1 + EPS)
        assert state.t == t + 1
        np.testing.assert_allclose(params["dense.weight"], weight, rtol=1e-13)
        np.testing.assert_allclose(params["dense.bias"], [bias], rtol=1e-13)
        np.testing.assert_allclose(state.m["dense.bias"], [expected_m[t]], rtol=1e-13)
        np.testing.assert_allclose(state.v["dense.bias"], [expected_v[t]], rtol=1e-13)
    assert id(params["dense.weight"]) == weight_id  # updated in place
    assert params["dense.bias"][0] == pytest.approx(0.5 - 0.1 * (1 - 1 / 19 + 91 / 271) / (1 + EPS), rel=1e-13)


@pytest.mark.parametrize("adamw", ADAMW)
def test_first_step_literal_values_and_decay_mask_none_decays_everything(adamw):
    params = {"dense.weight": np.array([2.0]), "dense.bias": np.array([0.5])}
    state = adamw_init(params, xp=np)
    grads = {"dense.weight": np.array([4.0]), "dense.bias": np.array([-2.0])}
    adamw(params, grads, state, lr=0.1, weight_decay=0.5, decay_mask=None, xp=np)
    # Step 1: m_hat = g and v_hat = g^2, so the Adam direction is g / (|g| + eps).
    # w = 2 * (1 - 0.1 * 0.5) - 0.1 * 4 / (4 + 1e-8) = 1.9 - 0.1 * (1 - 0.25e-8) = 1.80000000025
    # b = 0.5 * 0.95 + 0.1 * 2 / (2 + 1e-8)        = 0.475 + 0.1 * (1 - 0.5e-8) = 0.5749999995
    assert params["dense.weight"][0] == pytest.approx(1.80000000025, rel=1e-13)
    assert params["dense.bias"][0] == pytest.approx(0.5749999995, rel=1e-13)


@pytest.mark.parametrize("adamw", ADAMW)
def test_zero_learning_rate_moves_only_the_moments(adamw):
    params = {"w": np.array([1.0, 2.0])}
    state = adamw_init(params, xp=np)
    adamw(params, {"w": np.array([3.0, 3.0])}, state, lr=0.0, decay_mask=None, xp=np)
    np.testing.assert_array_equal(params["w"], [1.0, 2.0])
    np.testing.assert_allclose(state.m["w"], [0.3, 0.3])
    assert state.t == 1


@pytest.mark.parametrize("adamw", ADAMW)
def test_adamw_matches_torch_over_five_steps(adamw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = {
        "bert.embeddings.word_embeddings.weight": (11, 6),
        "bert.embeddings.LayerNorm.weight": (6,),
        "bert.encoder.layer.0.attention.self.query.weight": (6, 6),
        "bert.encoder.layer.0.attention.self.query.bias": (6,),
        "cls.predictions.bias": (11,),
    }
    params = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    mask = no_decay_mask(params)
    tensors = {name: torch.tensor(w.copy(), requires_grad=True) for name, w in params.items()}
    groups = [
        {"params": [tensors[n] for n in params if mask[n]], "weight_decay": 0.01},
        {"params": [tensors[n] for n in params if not mask[n]], "weight_decay": 0.0},
    ]
    reference = torch.optim.AdamW(groups, lr=1.0, betas=(0.9, 0.999), eps=1e-8)
    state = adamw_init(params, xp=np)
    for step in range(5):
        lr = linear_warmup_decay(step + 1, peak_lr=3e-3, warmup_steps=2, total_steps=8)
        grads = {name: rng.standard_normal(w.shape) for name, w in params.items()}
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name])
        for group in reference.param_groups:
            group["lr"] = lr
        reference.step()
        adamw(params, grads, state, lr=lr, weight_decay=0.01, decay_mask=mask, xp=np)
    for name, tensor in tensors.items():
        np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=1e-12, atol=1e-15, err_msg=name)
        torch_state = reference.state[tensor]
        np.testing.assert_allclose(state.m[name], torch_state["exp_avg"].numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(state.v[name], torch_state["exp_avg_sq"].numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("adamw", ADAMW)
def test_float32_stays_float32(adamw):
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal((4, 3)).astype(np.float32), "b.bias": np.zeros(3, np.float32)}
    grads = {name: rng.standard_normal(w.shape).astype(np.float32) for name, w in params.items()}
    state = adamw_init(params, xp=np)
    clip_grad_norm(grads, 0.5, xp=np)
    adamw(params, grads, state, lr=1e-3, decay_mask=no_decay_mask(params), xp=np)
    for name in params:
        assert params[name].dtype == np.float32
        assert grads[name].dtype == np.float32
        assert state.m[name].dtype == np.float32 and state.v[name].dtype == np.float32


@pytest.mark.parametrize("adamw", ADAMW)
def test_float64_gradient_for_float32_weight_is_rejected(adamw):
    params = {"w": np.zeros(3, np.float32)}
    state = adamw_init(params, xp=np)
    with pytest.raises(ValueError, match="'w'"):
        adamw(params, {"w": np.zeros(3)}, state, lr=1e-3, decay_mask=None, xp=np)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"grads": {"other": np.zeros(2)}}, "grads"),
        ({"decay_mask": {}}, "decay_mask"),
        ({"lr": -1.0}, "learning rate"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
@pytest.mark.parametrize("adamw", ADAMW)
def test_adamw_bad_arguments(kwargs, message, adamw):
    params = {"w": np.zeros(2)}
    arguments = {"grads": {"w": np.ones(2)}, "lr": 1e-3, "decay_mask": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        adamw(params, arguments.pop("grads"), adamw_init(params, xp=np), xp=np, **arguments)


def test_no_decay_mask_follows_bert_names():
    names = [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.LayerNorm.weight",
        "bert.embeddings.LayerNorm.bias",
        "bert.encoder.layer.3.output.dense.weight",
        "bert.encoder.layer.3.output.dense.bias",
        "cls.predictions.bias",
        "cls.predictions.transform.LayerNorm.weight",
    ]
    mask = no_decay_mask({name: None for name in names})
    assert mask == {
        "bert.embeddings.word_embeddings.weight": True,
        "bert.embeddings.LayerNorm.weight": False,
        "bert.embeddings.LayerNorm.bias": False,
        "bert.encoder.layer.3.output.dense.weight": True,
        "bert.encoder.layer.3.output.dense.bias": False,
        "cls.predictions.bias": False,
        "cls.predictions.transform.LayerNorm.weight": False,
    }


def test_schedule_corner_values():
    def lr(step, warmup=4, total=12):
        return linear_warmup_decay(step, peak_lr=1e-3, warmup_steps=warmup, total_steps=total)

    assert lr(0) == 0.0  # Hugging Face convention: the first step has lr 0
    assert lr(1) == pytest.approx(0.25e-3)
    assert lr(2) == pytest.approx(0.5e-3)
    assert lr(4) == 1e-3  # peak exactly at step == warmup
    assert lr(8) == pytest.approx(0.5e-3)  # halfway through the 8 decay steps
    assert lr(11) == pytest.approx(0.125e-3)
    assert lr(12) == 0.0
    assert lr(1000) == 0.0  # never negative after the end
    assert lr(0, warmup=0) == 1e-3  # no warmup: start at peak
    assert lr(6, warmup=0) == pytest.approx(0.5e-3)
    assert lr(2, warmup=4, total=4) == pytest.approx(0.5e-3)
    assert lr(4, warmup=4, total=4) == 0.0
    assert all(lr(step) >= 0 for step in range(20))


@pytest.mark.parametrize(
    "step, warmup, total, message",
    [(0, 0, 0, "total_steps"), (0, 5, 4, "warmup_steps"), (0, -1, 4, "warmup_steps"), (-1, 0, 4, "step")],
)
def test_schedule_rejects_bad_arguments(step, warmup, total, message):
    with pytest.raises(ValueError, match=message):
        linear_warmup_decay(step, peak_lr=1e-3, warmup_steps=warmup, total_steps=total)


def test_clip_scales_to_max_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}  # global norm 5
    norm = clip_grad_norm(grads, 2.0, xp=np)
    assert isinstance(norm, np.ndarray) and norm.ndim == 0
    assert float(norm) == 5.0  # the norm before clipping
    scale = 2.0 / (5.0 + 1e-6)  # torch's coefficient
    np.testing.assert_allclose(grads["a"], [3.0 * scale, 0.0], rtol=1e-15)
    np.testing.assert_allclose(grads["b"], [[4.0 * scale]], rtol=1e-15)
    clipped = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    assert clipped == pytest.approx(2.0, rel=1e-6)


def test_clip_leaves_small_gradients_untouched():
    grads = {"a": np.array([0.3, -0.4], np.float32), "b": np.array([0.0], np.float32)}  # norm 0.5
    before = {name: g.copy() for name, g in grads.items()}
    norm = clip_grad_norm(grads, 1.0, xp=np)
    assert float(norm) == pytest.approx(0.5, rel=1e-6)
    for name in grads:
        np.testing.assert_array_equal(grads[name], before[name])
        assert grads[name].dtype == np.float32


def test_clip_bad_arguments():
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"a": np.ones(2)}, 0.0, xp=np)
    with pytest.raises(ValueError, match="no gradients"):
        clip_grad_norm({}, 1.0, xp=np)


def test_clip_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    grads = {name: rng.standard_normal(shape) for name, shape in {"a": (5, 3), "b": (7,), "c": (2, 2, 2)}.items()}
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for tensor, g in zip(tensors, grads.values()):
        tensor.grad = torch.tensor(g.copy())
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, 1.5)
    norm = clip_grad_norm(grads, 1.5, xp=np)
    assert float(norm) == pytest.approx(float(torch_norm), rel=1e-14)
    for tensor, g in zip(tensors, grads.values()):
        np.testing.assert_allclose(g, tensor.grad.numpy(), rtol=1e-14)


def test_clip_and_step_is_clip_then_adamw_bit_for_bit():
    """The shared optimizer step against the two calls it replaces, done by hand on copies: two
    float32 steps, the first clipped (norm above max) and the second not, BERT's decay mask."""
    rng = np.random.default_rng(3)
    shapes = {"dense.weight": (4, 3), "dense.bias": (3,), "LayerNorm.weight": (3,)}
    params = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    by_hand = {name: w.copy() for name, w in params.items()}
    mask = no_decay_mask(params)
    state, hand_state = adamw_init(params, xp=np), adamw_init(by_hand, xp=np)
    for scale in (10.0, 0.01):
        grads = {name: (scale * rng.standard_normal(w.shape)).astype(np.float32) for name, w in params.items()}
        hand_grads = {name: g.copy() for name, g in grads.items()}
        norm = clip_and_step(params, grads, state, lr=1e-2, max_grad_norm=1.0, weight_decay=0.1, decay_mask=mask,
                             xp=np)
        hand_norm = clip_grad_norm(hand_grads, 1.0, xp=np)
        adamw_update(by_hand, hand_grads, hand_state, lr=1e-2, weight_decay=0.1, decay_mask=mask, xp=np)
        assert isinstance(norm, np.ndarray) and norm.ndim == 0
        assert norm == hand_norm and (norm > 1.0) == (scale == 10.0)
        assert state.t == hand_state.t
        for name in params:
            np.testing.assert_array_equal(grads[name], hand_grads[name])  # clipped in place, as by hand
            np.testing.assert_array_equal(params[name], by_hand[name])
            np.testing.assert_array_equal(state.m[name], hand_state.m[name])
            np.testing.assert_array_equal(state.v[name], hand_state.v[name])


def test_clip_leaves_small_gradients_untouched_on_the_device_path_too():
    """On CuPy clip_grad_norm scales unconditionally (testing the coefficient would wait for the
    device), so the coefficient itself must be min(1, max_norm / norm): torch's clamp, never above 1.
    Run on a stand-in array module that is not NumPy (the CUDA emulator's, NumPy underneath), which
    takes that path."""
    from cuda_emulator import EmulatedCuPy

    grads = {"a": np.array([0.3, -0.4]), "b": np.array([0.0])}  # norm 0.5 < 1
    before = {name: g.copy() for name, g in grads.items()}
    norm = clip_grad_norm(grads, 1.0, xp=EmulatedCuPy())
    assert float(norm) == pytest.approx(0.5, rel=1e-12)
    for name in grads:
        np.testing.assert_array_equal(grads[name], before[name])


def test_no_decay_covers_every_layer_norm_spelling_of_the_family():
    """Biases and LayerNorm gains are exempt from weight decay (BERT's optimizer, exclude_from_weight_decay
    = ["LayerNorm", "layer_norm", "bias"]): Hugging Face spells the LayerNorms LayerNorm in BERT and
    ALBERT's attention, layer_norm in RoBERTa's LM head and ALBERT's full_layer_layer_norm."""
    names = ["lm_head.layer_norm.weight", "albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.weight",
             "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.LayerNorm.weight", "lm_head.dense.weight",
             "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"]
    assert no_decay_mask({n: None for n in names}) == dict(zip(names, [False, False, False, True, True]))
