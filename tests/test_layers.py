"""Every op: forward against a closed form, backward against centred differences (float64), and
NumPy <-> CuPy parity on identical host-made inputs (float32 and float64).

Each case is (inputs, forward, backward, differentiable input names). The gradient check walks
every differentiable input of every op, weights and biases included, with a random upstream
gradient ``dout`` so no op is only tested against an all-ones output gradient.
"""
import math

import numpy as np
import pytest
from scipy.special import erf as scipy_erf

from conftest import BACKENDS, TOLERANCES
from minispanbert.backend import get_backend, to_numpy
from minispanbert.gradcheck import numerical_gradient, rel_error
from minispanbert.layers.attention import padding_mask_bias, self_attention_backward, self_attention_forward
from minispanbert.layers.cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.embedding import embedding_backward, embedding_forward
from minispanbert.layers.feedforward import feedforward_backward, feedforward_forward
from minispanbert.layers.gelu import gelu_backward, gelu_forward
from minispanbert.layers.layernorm import layernorm_backward, layernorm_forward
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.layers.residual import residual_layernorm_backward, residual_layernorm_forward
from minispanbert.layers.softmax import softmax_backward, softmax_forward

B, T, H, NH, F, V = 2, 5, 8, 2, 12, 11


def make_cases(rng):
    """name -> (inputs, forward(xp, **inputs) -> (out, cache), backward(xp, dout, cache) -> grads, diff_names)."""
    x = rng.normal(size=(B, T, H))
    attention_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    cases = {
        "linear": (
            dict(x=x, weight=rng.normal(size=(F, H)), bias=rng.normal(size=F)),
            lambda xp, x, weight, bias: linear_forward(x, weight, bias, xp=xp),
            lambda xp, d, c: linear_backward(d, c, xp=xp),
            ("x", "weight", "bias"),
        ),
        "embedding": (
            dict(ids=np.array([[1, 3, 3, 0, 10], [3, 1, 2, 2, 9]]), table=rng.normal(size=(V, H))),
            lambda xp, ids, table: embedding_forward(ids, table, xp=xp),
            lambda xp, d, c: (embedding_backward(d, c, xp=xp),),
            ("table",),
        ),
        "layernorm": (
            dict(x=x * 3 + 1, gamma=rng.normal(size=H), beta=rng.normal(size=H)),
            lambda xp, x, gamma, beta: layernorm_forward(x, gamma, beta, xp=xp),
            lambda xp, d, c: layernorm_backward(d, c, xp=xp),
            ("x", "gamma", "beta"),
        ),
        "gelu": (
            dict(x=x * 2),
            lambda xp, x: gelu_forward(x, xp=xp),
            lambda xp, d, c: (gelu_backward(d, c, xp=xp),),
            ("x",),
        ),
        "softmax": (
            dict(x=x * 2),
            lambda xp, x: softmax_forward(x, xp=xp),
            lambda xp, d, c: (softmax_backward(d, c, xp=xp),),
            ("x",),
        ),
        "feedforward": (
            dict(x=x, w1=rng.normal(size=(F, H)) * 0.3, b1=rng.normal(size=F), w2=rng.normal(size=(H, F)) * 0.3,
                 b2=rng.normal(size=H)),
            lambda xp, x, w1, b1, w2, b2: feedforward_forward(x, w1, b1, w2, b2, xp=xp),
            lambda xp, d, c: feedforward_backward(d, c, xp=xp),
            ("x", "w1", "b1", "w2", "b2"),
        ),
        "residual_layernorm": (
            dict(x=x, s=rng.normal(size=(B, T, H)), gamma=rng.normal(size=H), beta=rng.normal(size=H)),
            lambda xp, x, s, gamma, beta: residual_layernorm_forward(x, s, gamma, beta, xp=xp),
            lambda xp, d, c: residual_layernorm_backward(d, c, xp=xp),
            ("x", "s", "gamma", "beta"),
        ),
        "attention": (
            dict(x=x, **{n: rng.normal(size=(H, H)) * 0.4 for n in ("wq", "wk", "wv", "wo")},
                 **{n: rng.normal(size=H) * 0.4 for n in ("bq", "bk", "bv", "bo")}, attention_mask=attention_mask),
            lambda xp, x, wq, bq, wk, bk, wv, bv, wo, bo, attention_mask: self_attention_forward(
                x, wq, bq, wk, bk, wv, bv, wo, bo, padding_mask_bias(attention_mask, x.dtype, xp=xp), num_heads=NH, xp=xp),
            lambda xp, d, c: self_attention_backward(d, c, xp=xp),
            ("x", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"),
        ),
        "cross_entropy": (
            dict(logits=rng.normal(size=(7, V)) * 2, labels=np.array([3, IGNORE_INDEX, 0, 10, IGNORE_INDEX, 3, 5])),
            lambda xp, logits, labels: cross_entropy_forward(logits, labels, xp=xp),
            lambda xp, d, c: (cross_entropy_backward(d, c, xp=xp),),
            ("logits",),
        ),
    }
    return cases


def _to(xp, inputs, dtype):
    return {k: xp.asarray(v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in inputs.items()}


# The key bias's true gradient is exactly 0 (softmax ignores a constant shift of a score row), so
# its centred difference is pure rounding noise: a relative error is meaningless there and it is
# checked with an absolute bound instead.
EXACTLY_ZERO_GRADIENTS = {("attention", "bk")}


@pytest.mark.parametrize("name", list(make_cases(np.random.default_rng(0))))
def test_op_gradients_float64(name):
    rng = np.random.default_rng(42)
    inputs, forward, backward, diff_names = make_cases(rng)[name]
    inputs = _to(np, inputs, np.float64)
    out, cache = forward(np, **inputs)
    dout = rng.normal(size=np.shape(out))
    grads = dict(zip(diff_names, backward(np, np.array(dout) if np.ndim(out) else float(dout), cache)))
    worst = {}
    for arg in diff_names:
        numeric = numerical_gradient(lambda: forward(np, **inputs)[0], inputs[arg], dout)
        if (name, arg) in EXACTLY_ZERO_GRADIENTS:
            assert np.max(np.abs(grads[arg])) < 1e-12 and np.max(np.abs(numeric)) < 1e-8
            continue
        worst[arg] = rel_error(grads[arg], numeric)
        assert worst[arg] < TOLERANCES["gradcheck_op"], f"{name}.{arg}: rel error {worst[arg]:.2e}"


def test_linear_forward_closed_form(rng):
    x, w, b = rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), rng.normal(size=2)
    y, _ = linear_forward(x, w, b, xp=np)
    expected = [[sum(x[n, i] * w[o, i] for i in range(4)) + b[o] for o in range(2)] for n in range(3)]
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_layernorm_forward_normalises_with_biased_variance(rng):
    x = rng.normal(size=(4, 16)) * 5 + 3
    y, _ = layernorm_forward(x, np.ones(16), np.zeros(16), xp=np)
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1, rtol=1e-9)  # np.var is the biased variance


def test_gelu_is_exact_erf_form_not_tanh():
    x = np.linspace(-4, 4, 81)
    y, _ = gelu_forward(x, xp=np)
    np.testing.assert_allclose(y, x * 0.5 * (1 + scipy_erf(x / math.sqrt(2))), rtol=1e-14, atol=1e-15)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert np.max(np.abs(y - tanh_form)) > 1e-5


def test_softmax_is_stable_for_huge_inputs():
    y, _ = softmax_forward(np.array([[-1000.0, 1.0], [1000.0, 1000.0]]), xp=np)
    np.testing.assert_allclose(y, [[0.0, 1.0], [0.5, 0.5]])


def test_cross_entropy_ignored_targets_contribute_nothing(rng):
    logits = rng.normal(size=(4, 6))
    labels = np.array([2, IGNORE_INDEX, 5, IGNORE_INDEX])
    loss, cache = cross_entropy_forward(logits.copy(), labels, xp=np)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert float(loss) == pytest.approx(-(log_probs[0, 2] + log_probs[2, 5]) / 2, rel=1e-12)
    dlogits = cross_entropy_backward(1.0, cache, xp=np)
    assert np.all(dlogits[[1, 3]] == 0.0)
    # changing an ignored row's logits changes neither loss nor gradient
    other = logits.copy()
    other[1] += 100
    assert float(cross_entropy_forward(other, labels, xp=np)[0]) == pytest.approx(float(loss), rel=1e-14)


def test_cross_entropy_with_no_targets_is_zero():
    loss, cache = cross_entropy_forward(np.ones((3, 4)), np.full(3, IGNORE_INDEX), xp=np)
    assert float(loss) == 0.0
    assert np.all(cross_entropy_backward(1.0, cache, xp=np) == 0.0)


def test_embedding_backward_adds_duplicates(rng):
    table = rng.normal(size=(5, 3))
    ids = np.array([[2, 2, 4]])
    _, cache = embedding_forward(ids, table, xp=np)
    dtable = embedding_backward(np.ones((1, 3, 3)), cache, xp=np)
    np.testing.assert_array_equal(dtable[2], [2.0, 2.0, 2.0])  # the same token twice: twice the gradient
    np.testing.assert_array_equal(dtable[4], [1.0, 1.0, 1.0])
    assert np.all(dtable[[0, 1, 3]] == 0)


def test_dropout_train_vs_eval(rng):
    x = np.ones((200, 50))
    y_eval, cache = dropout_forward(x, 0.1, None, xp=np, train=False)
    assert y_eval is x and cache is None
    y, cache = dropout_forward(x, 0.1, np.random.default_rng(0), xp=np, train=True)
    kept = y != 0
    assert abs(kept.mean() - 0.9) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.9)
    dx = dropout_backward(np.ones_like(x), cache, xp=np)
    np.testing.assert_array_equal(dx != 0, kept)  # the same mask in backward


def test_dropout_rejects_bad_probability():
    with pytest.raises(ValueError, match="dropout probability"):
        dropout_forward(np.ones(3), 1.5, np.random.default_rng(0), xp=np, train=True)


def test_attention_ignores_padded_keys(rng):
    inputs, forward, _, _ = make_cases(rng)["attention"]
    out, cache = forward(np, **inputs)
    probs = cache[7]  # the softmax cache: attention weights (B, NH, T, T)
    assert np.all(probs[1, :, :, 3:] == 0.0)
    changed = dict(inputs)
    changed["x"] = inputs["x"].copy()
    changed["x"][1, 3:] = rng.normal(size=(2, H)) * 100  # garbage in the padded positions
    out2, _ = forward(np, **changed)
    np.testing.assert_allclose(out2[1, :3], out[1, :3], rtol=1e-12)
    np.testing.assert_allclose(out2[0], out[0], rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(make_cases(np.random.default_rng(0))))
def test_op_backend_parity(name, dtype, backend):
    """The same host inputs through NumPy and the backend give the same outputs and gradients."""
    xp = get_backend(backend)
    tol = TOLERANCES[f"parity_{dtype}"]
    rng = np.random.default_rng(7)
    inputs, forward, backward, _ = make_cases(rng)[name]
    results = []
    for module in (np, xp):
        arrays = _to(module, inputs, dtype)
        out, cache = forward(module, **arrays)
        dout = module.asarray(np.random.default_rng(3).normal(size=np.shape(out)).astype(dtype)) if np.ndim(out) else 1.0
        results.append([to_numpy(out)] + [to_numpy(g) for g in backward(module, dout, cache)])
    for ref, got in zip(*results):
        np.testing.assert_allclose(got, ref, **tol)
