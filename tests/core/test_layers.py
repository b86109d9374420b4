"""Every op: forward against a closed form, backward against centred differences (float64, the
cases of ``minispanbert.check_gradients``, dropout-on rows included), and NumPy <-> CuPy parity on
identical host-made inputs (float32 and float64; skipped, with the reason, without CuPy)."""
import math

import numpy as np
import pytest
from scipy.special import erf as scipy_erf

from minispanbert.backend import get_backend, to_numpy
from minispanbert.engine import check_gradients
from minispanbert.engine.check_gradients import OP_TOLERANCE, RANDOM_OPS, H, check_op, op_cases
from minispanbert.gradcheck import assert_errors_below
from minispanbert.layers.cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.embedding import embedding_backward, embedding_forward
from minispanbert.layers.gelu import gelu_forward
from minispanbert.layers.layernorm import layernorm_forward
from minispanbert.layers.linear import linear_forward
from minispanbert.layers.softmax import softmax_forward

from conftest import BACKENDS, TOLERANCES, assert_allclose_finite

OP_NAMES = list(op_cases(np.random.default_rng(0)))


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_gradients_float64(name):
    """Every differentiable input of every op (the key bias is checked to be exactly zero); a NaN
    anywhere fails (rel_error is inf then)."""
    errors = check_op(name)
    assert_errors_below(errors, OP_TOLERANCE, name)


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_dropout_rows_really_drop_and_fix_their_masks(name, monkeypatch):
    """A dropout-on gradient check proves something only if dropout is on (another seed gives
    another output) and the masks are the same at every evaluation (the same seed, the same output)."""
    def output(seed):
        monkeypatch.setattr(check_gradients, "DROPOUT_SEED", seed)
        inputs, forward, _, _ = op_cases(np.random.default_rng(0))[name]
        return forward(np, **inputs)[0]

    first = output(1)
    np.testing.assert_array_equal(output(1), first)
    assert np.max(np.abs(output(2) - first)) > 1e-3


def _to(xp, inputs, dtype):
    return {k: xp.asarray(v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in inputs.items()}


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
    inputs, forward, _, _ = op_cases(rng)["attention"]
    out, cache = forward(np, **inputs)
    probs = cache[7]  # the softmax cache: attention weights (B, NH, T, T)
    assert np.all(probs[1, :, :, 3:] == 0.0)
    changed = dict(inputs)
    changed["x"] = inputs["x"].copy()
    changed["x"][1, 3:] = rng.normal(size=(2, H)) * 100  # garbage in the padded positions
    out2, _ = forward(np, **changed)
    np.testing.assert_allclose(out2[1, :3], out[1, :3], rtol=1e-12)
    np.testing.assert_allclose(out2[0], out[0], rtol=1e-12)


def test_parity_backends_are_second_backends_that_skip_with_their_reason():
    """NumPy is the reference side of every parity test, never a parametrisation: NumPy against
    NumPy would pass while checking nothing. Without CuPy the CuPy cases skip and say why."""
    values = [param.values[0] if hasattr(param, "values") else param for param in BACKENDS]
    assert "numpy" not in values and values
    for param in BACKENDS:
        for mark in getattr(param, "marks", ()):
            if mark.name == "skipif" and mark.args[0]:
                assert "cupy" in mark.kwargs["reason"].lower()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", OP_NAMES)
def test_op_backend_parity(name, dtype, backend):
    """The same host inputs through NumPy and the backend give the same outputs and gradients (the
    dropout rows too: masks are drawn on the host, keyed, so both backends draw the same ones)."""
    xp = get_backend(backend)
    assert xp is not np, "parity of NumPy with NumPy proves nothing"
    tol = TOLERANCES[f"parity_{dtype}"]
    rng = np.random.default_rng(7)
    inputs, forward, backward, _ = op_cases(rng)[name]
    results = []
    for module in (np, xp):
        arrays = _to(module, inputs, dtype)
        out, cache = forward(module, **arrays)
        dout = module.asarray(np.random.default_rng(3).normal(size=np.shape(out)).astype(dtype)) if np.ndim(out) else 1.0
        results.append([to_numpy(out)] + [to_numpy(g) for g in backward(module, dout, cache)])
    for ref, got in zip(*results):
        assert_allclose_finite(got, ref, err_msg=name, **tol)


def test_pooler_is_tanh_of_dense_on_the_first_token_only():
    """Closed form on a hand-sized case: p = tanh(W h0 + b); later tokens neither change p nor get gradient."""
    from minispanbert.model.pooler import pooler_backward, pooler_forward
    h = np.zeros((1, 3, 2))
    h[0, 0] = [1.0, -2.0]
    h[0, 1:] = 7.0  # must not matter
    weight, bias = np.array([[0.5, 0.0], [1.0, 1.0]]), np.array([0.0, 0.25])
    pooled, cache = pooler_forward(h, weight, bias, xp=np)
    np.testing.assert_allclose(pooled, [[np.tanh(0.5), np.tanh(-0.75)]], rtol=1e-15)
    dh, _, _ = pooler_backward(np.ones((1, 2)), cache, xp=np)
    assert np.all(dh[0, 1:] == 0.0)
    np.testing.assert_allclose(dh[0, 0], (1 - pooled[0] ** 2) @ weight, rtol=1e-15)
