"""The gradient checker checked: a NaN or an infinity on either side fails every verdict (the
relative error, the worst-of table, the exact-zero check, the assertion helper) and makes
``python -m minispanbert.check_gradients`` exit non-zero, wherever in a tensor or a table it sits.

Python's ``max`` skips a NaN that is not first (every comparison with NaN is False), and
``err >= tol`` is False for NaN, so both idioms let a NaN gradient pass; these tests plant one.
"""
import math

import numpy as np
import pytest

from minispanbert.engine import check_gradients
from minispanbert.gradcheck import (
    assert_errors_below,
    check_exact_zero,
    check_param_gradients,
    failing,
    format_errors,
    numerical_gradient,
    rel_error,
    worst_error,
)

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("where", [0, -1], ids=["first", "last"])
@pytest.mark.parametrize("side", ["analytic", "numeric"])
def test_rel_error_of_a_non_finite_tensor_is_inf(bad, where, side):
    good = np.linspace(1.0, 2.0, 5)
    broken = good.copy()
    broken[where] = bad
    a, n = (broken, good) if side == "analytic" else (good, broken)
    assert rel_error(a, n) == math.inf
    assert not rel_error(a, n) < 1.0


def test_rel_error_scores():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, -a) == 1.0
    assert rel_error(a, a * (1 + 1e-9)) == pytest.approx(0.5e-9, rel=1e-3)


@pytest.mark.parametrize("order", [["nan", "a", "b"], ["a", "nan", "b"], ["a", "b", "nan"]])
def test_a_nan_entry_is_the_worst_wherever_it_is(order):
    values = {"a": 1e-12, "b": 3e-11, "nan": NAN}
    errors = {name: values[name] for name in order}
    assert worst_error(errors)[0] == "nan"
    assert set(failing(errors, 1e-7)) == {"nan"}
    assert format_errors(errors).splitlines()[0].endswith("nan")
    with pytest.raises(AssertionError, match="1 of 3 tensors"):
        assert_errors_below(errors, 1e-7)


def test_assert_errors_below_passes_small_errors_and_refuses_an_empty_table():
    assert_errors_below({"a": 1e-12, "b": 3e-11}, 1e-7)
    with pytest.raises(AssertionError):
        assert_errors_below({"a": 1e-12, "b": 1e-7}, 1e-7)  # at the tolerance is not below it
    with pytest.raises(ValueError, match="compared nothing"):
        assert_errors_below({}, 1e-7)


@pytest.mark.parametrize("analytic, numeric", [
    (np.array([0.0, NAN]), np.zeros(2)),
    (np.zeros(2), np.array([NAN, 0.0])),
    (np.array([1e-3, 0.0]), np.zeros(2)),
    (np.zeros(2), np.array([0.0, 1e-5])),
])
def test_exact_zero_check_fails_on_nan_and_on_non_zero(analytic, numeric):
    with pytest.raises(AssertionError, match="exactly-zero"):
        check_exact_zero(analytic, numeric)


def test_exact_zero_check_accepts_rounding_noise():
    assert check_exact_zero(np.full(3, 1e-17), np.full(3, 1e-10)) == 0.0


def _quadratic():
    """loss = sum(w^2) / 2 + sum(v^3) with its exact gradient."""
    params = {"w": np.linspace(-1, 1, 30).reshape(5, 6), "v": np.array([0.5, -1.0, 2.0])}
    grads = {"w": params["w"].copy(), "v": 3 * params["v"] ** 2}
    return params, grads, lambda: 0.5 * np.sum(params["w"] ** 2) + np.sum(params["v"] ** 3)


def test_check_param_gradients_right_and_wrong():
    params, grads, loss = _quadratic()
    assert_errors_below(check_param_gradients(loss, params, grads), 1e-8)
    grads["v"] = grads["v"] * 1.01
    assert check_param_gradients(loss, params, grads)["v"] > 1e-3


@pytest.mark.parametrize("max_elements", [None, 4], ids=["every-element", "sampled"])
def test_a_nan_analytic_element_fails_even_when_it_is_not_sampled(max_elements):
    params, grads, loss = _quadratic()
    grads["w"][4, 5] = NAN
    errors = check_param_gradients(loss, params, grads, max_elements=max_elements)
    assert errors["w"] == math.inf and errors["v"] < 1e-8


def test_a_nan_loss_gives_an_infinite_error():
    params, grads, _ = _quadratic()
    errors = check_param_gradients(lambda: NAN, params, grads)
    assert errors == {"w": math.inf, "v": math.inf}
    assert np.isnan(numerical_gradient(lambda: NAN, params["v"])).all()


@pytest.fixture
def one_cheap_op(monkeypatch):
    """The command's op table cut to its linear row, so the CLI runs in a fraction of a second."""
    real = check_gradients.op_cases
    monkeypatch.setattr(check_gradients, "op_cases", lambda rng: {"linear": real(rng)["linear"]})


def _nan_in_position_gradient(real_backward):
    def backward(dh, cache, *, xp):
        grads = real_backward(dh, cache, xp=xp)
        grads["bert.embeddings.position_embeddings.weight"][1, 2] = np.nan
        return grads
    return backward


def test_cli_exits_non_zero_on_a_nan_gradient(one_cheap_op, monkeypatch, capsys):
    """The issue's probe: a NaN planted in the position-embedding gradient of the encoder."""
    monkeypatch.setattr(check_gradients, "encoder_backward", _nan_in_position_gradient(check_gradients.encoder_backward))
    monkeypatch.setattr(check_gradients, "MODEL_CHECKS", {"encoder_dropout": lambda: check_gradients.check_encoder(dropout=True)})
    with pytest.raises(SystemExit) as exit_info:
        check_gradients.main([])
    assert exit_info.value.code not in (None, 0)
    assert "not finite" in str(exit_info.value.code)
    table = capsys.readouterr().out
    assert "position_embeddings" in table and "FAIL" in table


def test_cli_exits_non_zero_when_an_exact_zero_gradient_is_nan(one_cheap_op, monkeypatch):
    monkeypatch.setattr(check_gradients, "MODEL_CHECKS",
                        {"planted": lambda: check_gradients._pop_key_biases(
                            {name: 0.0 for name in check_gradients.KEY_BIASES},
                            {name: np.full(3, NAN) for name in check_gradients.KEY_BIASES})})
    with pytest.raises(SystemExit) as exit_info:
        check_gradients.main([])
    assert str(exit_info.value.code).startswith("error: ")


def test_cli_passes_and_prints_ok(one_cheap_op, monkeypatch, capsys):
    monkeypatch.setattr(check_gradients, "MODEL_CHECKS", {"mlm_head": check_gradients.check_mlm_head})
    check_gradients.main([])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.endswith("ok") for line in lines[1:3])
    assert lines[3].startswith("2 checks passed in ")
