"""Forward values against oracles that are not the code under test, and that need no torch.

A gradient check only proves that backward differentiates forward; a forward that computes the
wrong function (an attention scale of 1/sqrt(H) instead of 1/sqrt(d_head), an unbiased variance in
LayerNorm, the tanh GeLU) passes it. So:

* closed forms on hand-sized inputs: attention on 2 tokens and 2 heads whose softmax weights are
  3/4, 1/4 and 2/3, 1/3 by construction; a LayerNorm row of mean 5 and variance 4; GeLU at
  points where Phi is tabulated; softmax and cross-entropy on logarithms of small integers; a model
  whose decoders see all-zero logits has losses of exactly ln V;
* the whole model (hidden states, MLM and SBO logits, the three losses) against reference values
  computed once by the PyTorch twin (minispanbert/torch_reference.py) from weights stored beside
  them in ``tests/fixtures/torch_reference.npz`` (71 KB). Regenerate that file only when the model
  changes on purpose, with torch installed:

      python tests/fixtures/make_torch_reference.py

  and, where torch is installed, ``test_fixture_is_what_the_torch_twin_computes_now`` checks that
  the stored values are still what the twin computes.
"""
import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from minispanbert.config import ModelConfig
from minispanbert.layers.attention import padding_mask_bias, self_attention_forward
from minispanbert.layers.cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from minispanbert.layers.gelu import gelu_forward
from minispanbert.layers.layernorm import layernorm_forward
from minispanbert.layers.softmax import softmax_forward
from minispanbert.model.encoder import encoder_forward
from minispanbert.model.mlm_head import mlm_head_forward
from minispanbert.model.names import WORD_EMBEDDINGS
from minispanbert.model.sbo_head import sbo_head_forward
from minispanbert.model.spanbert_loss import init_pretraining_params, pretraining_forward

from conftest import assert_allclose_finite

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURE_DIR / "torch_reference.npz"
FIXTURE_TOL = dict(rtol=1e-10, atol=1e-12)  # float64, two implementations, different summation orders


# --------------------------------------------------------------------------- closed forms


def _two_token_attention(attention_mask):
    """H = 4, two heads of D = 2, identity projections, zero biases except bo: scores are the dot
    products of the tokens' halves divided by sqrt(D) = sqrt(2).
    Head 0: x0 = (a, 0), x1 = (0, a), a^2 = sqrt(2) ln 3 -> scores (ln 3, 0): weights 3/4, 1/4.
    Head 1: x0 = (c, 0), x1 = (-c, 0), c^2 = ln 2 / sqrt(2) -> scores +-(ln 2)/2: weights 2/3, 1/3."""
    a, c = math.sqrt(math.sqrt(2) * math.log(3)), math.sqrt(math.log(2) / math.sqrt(2))
    x = np.array([[[a, 0.0, c, 0.0], [0.0, a, -c, 0.0]]])
    eye, zero = np.eye(4), np.zeros(4)
    bo = np.array([0.5, -1.0, 2.0, 0.25])
    out, _ = self_attention_forward(x, eye, zero, eye, zero, eye, zero, eye, bo,
                                    padding_mask_bias(np.array([attention_mask]), x.dtype, xp=np), num_heads=2, xp=np)
    return out[0], a, c, bo


def test_attention_two_tokens_two_heads_closed_form():
    out, a, c, bo = _two_token_attention([1, 1])
    # context = weights @ V per head, V = x; then + bo (Wo = I)
    expected = np.array([[3 / 4 * a, 1 / 4 * a, 2 / 3 * c - 1 / 3 * c, 0.0],
                         [1 / 4 * a, 3 / 4 * a, 1 / 3 * c - 2 / 3 * c, 0.0]]) + bo
    assert_allclose_finite(out, expected, rtol=1e-13, atol=1e-15)


def test_attention_two_tokens_with_the_second_padded():
    """Every query sees only token 0: weight 1 on it, exactly 0 on the padded key."""
    out, a, c, bo = _two_token_attention([1, 0])
    expected = np.array([[a, 0.0, c, 0.0], [a, 0.0, c, 0.0]]) + bo
    assert_allclose_finite(out, expected, rtol=1e-13, atol=1e-15)


def test_layernorm_row_of_known_mean_and_variance():
    """Row 0: mean 5, biased variance 4 (the unbiased one is 32/7); row 1 constant: variance 0, so
    x - mean = 0 and y = beta (eps keeps it finite)."""
    x = np.array([[2.0, 4, 4, 4, 5, 5, 7, 9], [3.0] * 8])
    gamma, beta = np.full(8, 2.0), np.arange(8) * 0.5
    y, _ = layernorm_forward(x, gamma, beta, xp=np)
    xhat = np.array([-1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 1.0, 2.0])  # (x - 5) / 2
    assert_allclose_finite(y, np.stack([2 * xhat + beta, beta]), rtol=1e-12, atol=1e-12)  # eps = 1e-12 shifts 1e-13


def test_gelu_at_tabulated_points():
    """GeLU(x) = x Phi(x): Phi(1) = 0.8413447460685429, Phi(2) = 0.9772498680518208 (normal table)."""
    x = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    phi1, phi2 = 0.8413447460685429, 0.9772498680518208
    expected = np.array([-2 * (1 - phi2), -(1 - phi1), 0.0, phi1, 2 * phi2])
    assert_allclose_finite(gelu_forward(x, xp=np)[0], expected, rtol=1e-14, atol=1e-16)


def test_softmax_of_logarithms_of_small_integers():
    y, _ = softmax_forward(np.log(np.array([[1.0, 2.0, 5.0], [4.0, 4.0, 4.0]])), xp=np)
    assert_allclose_finite(y, [[1 / 8, 2 / 8, 5 / 8], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-14)


def test_cross_entropy_closed_form():
    """Row 0: p = (1/4, 3/4), target 1: loss ln(4/3), gradient p - onehot = (1/4, -1/4). Row 1 ignored."""
    logits = np.array([[0.0, math.log(3)], [math.log(2), 0.0]])
    loss, cache = cross_entropy_forward(logits, np.array([1, IGNORE_INDEX]), xp=np)
    assert float(loss) == pytest.approx(math.log(4 / 3), rel=1e-14)
    assert_allclose_finite(cross_entropy_backward(1.0, cache, xp=np), [[0.25, -0.25], [0.0, 0.0]], rtol=1e-14, atol=1e-16)


def test_losses_are_exactly_ln_v_when_every_logit_is_equal():
    """With the word embedding (the tied decoder) and both decoder biases zero, every logit is 0,
    every prediction uniform over V: MLM and SBO losses are ln V exactly, whatever the encoder does."""
    fixture = load_fixture()
    config, params, batch = fixture.config, dict(fixture.params), fixture.batch
    params[WORD_EMBEDDINGS] = np.zeros_like(params[WORD_EMBEDDINGS])
    params["cls.predictions.bias"] = np.zeros(config.vocab_size)
    params["cls.sbo.bias"] = np.zeros(config.vocab_size)
    out, _ = pretraining_forward(params, batch, config, xp=np)
    assert float(out.mlm_loss) == pytest.approx(math.log(config.vocab_size), rel=1e-14)
    assert float(out.sbo_loss) == pytest.approx(math.log(config.vocab_size), rel=1e-14)


# --------------------------------------------------------------------------- the PyTorch twin's values


def load_fixture():
    with np.load(FIXTURE, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    config = ModelConfig(**json.loads(str(arrays["config"])))
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    batch = SimpleNamespace(**{k[len("batch/"):]: v for k, v in arrays.items() if k.startswith("batch/")})
    out = {k[len("out/"):]: v for k, v in arrays.items() if k.startswith("out/")}
    return SimpleNamespace(config=config, params=params, batch=batch, out=out, arrays=arrays)


def test_fixture_is_small_and_complete():
    assert FIXTURE.stat().st_size < 200_000
    fixture = load_fixture()
    assert set(fixture.params) == set(init_pretraining_params(fixture.config, 0, xp=np))
    assert {"h", "mlm_logits", "sbo_logits", "loss", "mlm_loss", "sbo_loss"} <= set(fixture.out)
    assert fixture.config.hidden_size // fixture.config.num_attention_heads != fixture.config.hidden_size


def test_whole_model_forward_matches_the_stored_torch_values():
    f = load_fixture()
    b = f.batch
    h, _ = encoder_forward(f.params, b.input_ids, b.token_type_ids, b.attention_mask, f.config, xp=np)
    assert_allclose_finite(h, f.out["h"], err_msg="hidden states", **FIXTURE_TOL)
    T = b.input_ids.shape[1]
    positions = np.flatnonzero(b.mlm_labels.reshape(-1) != IGNORE_INDEX)
    mlm_logits, _ = mlm_head_forward(f.params, h, positions, xp=np)
    assert_allclose_finite(mlm_logits, f.out["mlm_logits"], err_msg="MLM logits", **FIXTURE_TOL)
    sbo_logits, _ = sbo_head_forward(f.params, h, b.sbo_batch * T + b.sbo_left, b.sbo_batch * T + b.sbo_right,
                                     b.sbo_rel_pos, xp=np)
    assert_allclose_finite(sbo_logits, f.out["sbo_logits"], err_msg="SBO logits", **FIXTURE_TOL)
    out, _ = pretraining_forward(f.params, b, f.config, xp=np)
    for name in ("loss", "mlm_loss", "sbo_loss"):
        assert_allclose_finite(float(getattr(out, name)), f.out[name], err_msg=name, **FIXTURE_TOL)
    assert float(out.mlm_loss) > 1.0 and float(out.sbo_loss) > 1.0  # far from a trivially perfect model


def test_fixture_is_what_the_torch_twin_computes_now():
    torch = pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("make_torch_reference", FIXTURE_DIR / "make_torch_reference.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fresh = maker.reference_arrays(torch)
    finally:
        torch.set_num_threads(threads)
    stored = load_fixture().arrays
    assert fresh.keys() == stored.keys(), "re-run python tests/fixtures/make_torch_reference.py"
    for name, value in fresh.items():
        if value.dtype.kind == "f":
            assert_allclose_finite(stored[name], value, err_msg=name, rtol=1e-12, atol=1e-14)
        else:
            np.testing.assert_array_equal(stored[name], value, err_msg=name)
