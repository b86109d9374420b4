"""Sentence- and token-classification heads: float64 gradient checks of each head (against its input
and every head parameter) and of each whole fine-tuning loss (every parameter, the one-label
regressor's mean squared error included), with dropout off and on (masks fixed by re-seeding the
generator), the losses against a hand computation, and loading a pretrained encoder (pooler
optional, pretraining heads dropped)."""
import math

import numpy as np
import pytest

from minispanbert.engine.check_gradients import CHECK_CONFIG as TINY
from minispanbert.engine.check_gradients import KEY_BIASES, MODEL_TOLERANCE, OP_TOLERANCE, encoder_inputs
from minispanbert.finetune.pretrained_weights import load_encoder_weights
from minispanbert.finetune.qa_head import init_qa_params, qa_forward
from minispanbert.finetune.sequence_classification import (
    CLASSIFIER_BIAS,
    CLASSIFIER_WEIGHT,
    POOLER_BIAS,
    POOLER_WEIGHT,
    init_sequence_classification_params,
    sequence_classification_backward,
    sequence_classification_forward,
    sequence_classification_head_backward,
    sequence_classification_head_forward,
)
from minispanbert.finetune.token_classification import (
    init_token_classification_params,
    token_classification_backward,
    token_classification_forward,
    token_classification_head_backward,
    token_classification_head_forward,
)
from minispanbert.gradcheck import (
    assert_errors_below,
    check_exact_zero,
    check_param_gradients,
    numerical_gradient,
    rel_error,
)
from minispanbert.keyed_random import KeyedRandom
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.layers.mean_squared_error import mean_squared_error_backward, mean_squared_error_forward
from minispanbert.model.encoder import encoder_forward
from minispanbert.model.spanbert_loss import init_pretraining_params

C_SENT, C_TOK = 3, 5
DROPOUT = TINY.replace(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)


def scaled(params, seed):
    """Weights x10 and non-zero biases, so that every path carries gradient."""
    rng = np.random.default_rng(seed)
    return {k: v * 10 if v.ndim == 2 and "embeddings" not in k else v + 0.2 * rng.normal(size=v.shape)
            for k, v in params.items()}


def sentence_arrays(rng):
    ids, types, mask = encoder_inputs(rng, B=3, T=6)
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=np.array([2, 0, 1]))


def regression_arrays(rng):
    """A one-label sentence head is a regressor (Hugging Face's problem_type "regression"): real targets."""
    ids, types, mask = encoder_inputs(rng, B=3, T=6)
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=np.array([0.5, -1.25, 2.0]))


def token_arrays(rng):
    ids, types, mask = encoder_inputs(rng, B=2, T=6)
    # row 0: words start at 1, 2, 4 (position 3 is a second word piece); row 1 padded from 4
    labels = np.array([[IGNORE_INDEX, 4, 0, IGNORE_INDEX, 2, IGNORE_INDEX],
                       [IGNORE_INDEX, 1, 3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    return dict(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels)


HEADS = {
    "sentence": (sequence_classification_head_forward, sequence_classification_head_backward, (C_SENT,),
                 lambda rng, H: {POOLER_WEIGHT: rng.normal(size=(H, H)) * 0.5, POOLER_BIAS: rng.normal(size=H) * 0.5,
                                 CLASSIFIER_WEIGHT: rng.normal(size=(C_SENT, H)), CLASSIFIER_BIAS: rng.normal(size=C_SENT)}),
    "token": (token_classification_head_forward, token_classification_head_backward, (5, C_TOK),
              lambda rng, H: {CLASSIFIER_WEIGHT: rng.normal(size=(C_TOK, H)), CLASSIFIER_BIAS: rng.normal(size=C_TOK)}),
}


@pytest.mark.parametrize("dropout_p", [0.0, 0.4])
@pytest.mark.parametrize("head", list(HEADS))
def test_head_gradients_float64_input_and_every_parameter(head, dropout_p):
    forward, backward, out_tail, make_params = HEADS[head]
    rng = np.random.default_rng(0)
    H = 6
    params = make_params(rng, H)
    h = rng.normal(size=(4, 5, H))
    dlogits = rng.normal(size=(4, *out_tail))

    def f():  # a fresh generator with the same seed: the same dropout mask on every call
        return forward(params, h, xp=np, dropout_p=dropout_p, rng=KeyedRandom(7, xp=np), train=True)[0]

    logits, cache = forward(params, h, xp=np, dropout_p=dropout_p, rng=KeyedRandom(7, xp=np), train=True)
    dh, grads = backward(dlogits, cache, xp=np)
    assert set(grads) == set(params)
    for name, value in params.items():
        assert rel_error(grads[name], numerical_gradient(lambda: np.sum(f() * dlogits), value)) < OP_TOLERANCE, name
    assert rel_error(dh, numerical_gradient(f, h, dlogits)) < OP_TOLERANCE
    if head == "sentence":
        assert np.all(dh[:, 1:] == 0)  # only [CLS] reaches the pooler
    if dropout_p:
        eval_logits, _ = forward(params, h, xp=np, dropout_p=dropout_p, train=False)
        assert not np.allclose(logits, eval_logits)  # the mask bit


MODELS = {
    "sentence": (init_sequence_classification_params, sequence_classification_forward,
                 sequence_classification_backward, C_SENT, sentence_arrays),
    "token": (init_token_classification_params, token_classification_forward,
              token_classification_backward, C_TOK, token_arrays),
    "regression": (init_sequence_classification_params, sequence_classification_forward,
                   sequence_classification_backward, 1, regression_arrays),
}


@pytest.mark.parametrize("config", [TINY, DROPOUT], ids=["dropout-off", "dropout-on"])
@pytest.mark.parametrize("model", list(MODELS))
def test_whole_fine_tuning_loss_gradients_float64_every_parameter(model, config):
    init, forward, backward, C, make_arrays = MODELS[model]
    params = scaled(init(config, C, 3, xp=np, dtype="float64"), 3)
    arrays = make_arrays(np.random.default_rng(4))

    def loss():
        return float(forward(params, arrays, config, xp=np, train=True, rng=KeyedRandom(11, xp=np))[0].loss)

    _, cache = forward(params, arrays, config, xp=np, train=True, rng=KeyedRandom(11, xp=np))
    grads = backward(cache, xp=np)
    assert set(grads) == set(params)
    # dropout off: a sample of each tensor's elements (every tensor still checked), to stay fast
    errors = check_param_gradients(loss, params, grads, max_elements=None if config is DROPOUT else 24)
    for name in KEY_BIASES:  # softmax ignores a constant shift of a score row: exactly zero
        errors[name] = check_exact_zero(grads[name], numerical_gradient(loss, params[name]))
    assert_errors_below(errors, MODEL_TOLERANCE, f"{model} loss")
    if config is DROPOUT:
        no_dropout = float(forward(params, arrays, config, xp=np, train=False)[0].loss)
        assert not math.isclose(loss(), no_dropout, rel_tol=1e-6)


def _log_softmax(row):
    m = max(row)
    log_sum = m + math.log(math.fsum(math.exp(z - m) for z in row))
    return [z - log_sum for z in row]


def test_sentence_loss_by_hand():
    """z = tanh(h[:, 0] W_p^T + b_p) W_c^T + b_c, loss = mean CE; an IGNORE_INDEX row is skipped."""
    params = scaled(init_sequence_classification_params(TINY, C_SENT, 5, xp=np, dtype="float64"), 5)
    arrays = sentence_arrays(np.random.default_rng(6))
    arrays["labels"] = np.array([2, IGNORE_INDEX, 1])
    out, _ = sequence_classification_forward(params, arrays, TINY, xp=np)
    h, _ = encoder_forward(params, arrays["input_ids"], arrays["token_type_ids"], arrays["attention_mask"], TINY, xp=np)
    first = h[:, 0].tolist()
    for b, label in ((0, 2), (2, 1)):
        pooled = [math.tanh(sum(w * x for w, x in zip(row, first[b])) + bias)
                  for row, bias in zip(params[POOLER_WEIGHT].tolist(), params[POOLER_BIAS].tolist())]
        logits = [sum(w * x for w, x in zip(row, pooled)) + bias
                  for row, bias in zip(params[CLASSIFIER_WEIGHT].tolist(), params[CLASSIFIER_BIAS].tolist())]
        np.testing.assert_allclose(out.logits[b], logits, rtol=1e-12)
    expected = -(_log_softmax(out.logits[0].tolist())[2] + _log_softmax(out.logits[2].tolist())[1]) / 2
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)


def test_mean_squared_error_op_gradient_float64():
    """L = mean((z - y)^2), dL/dz = 2 (z - y) / N, against centred differences."""
    rng = np.random.default_rng(1)
    z, y = rng.normal(size=7), rng.normal(size=7)
    loss, cache = mean_squared_error_forward(z, y, xp=np)
    assert float(loss) == pytest.approx(math.fsum((a - b) ** 2 for a, b in zip(z.tolist(), y.tolist())) / 7, rel=1e-14)
    analytic = mean_squared_error_backward(1.7, cache, xp=np)
    assert rel_error(analytic, numerical_gradient(lambda: mean_squared_error_forward(z, y, xp=np)[0], z, 1.7)) \
        < OP_TOLERANCE
    with pytest.raises(ValueError, match=r"predictions \(N,\) and targets \(N,\)"):
        mean_squared_error_forward(z, y[:3], xp=np)


def test_a_one_label_sentence_classifier_is_a_regressor_never_a_silent_zero_loss():
    """C = 1: z = tanh(h[:, 0] W_p^T + b_p) W_c^T + b_c (B, 1), L = mean_n (z_n - y_n)^2 (Hugging
    Face's BertForSequenceClassification with num_labels 1); a one-class cross-entropy would be 0."""
    params = scaled(init_sequence_classification_params(TINY, 1, 5, xp=np, dtype="float64"), 5)
    arrays = regression_arrays(np.random.default_rng(6))
    out, _ = sequence_classification_forward(params, arrays, TINY, xp=np)
    h, _ = encoder_forward(params, arrays["input_ids"], arrays["token_type_ids"], arrays["attention_mask"], TINY, xp=np)
    predictions = []
    for first in h[:, 0].tolist():
        pooled = [math.tanh(sum(w * x for w, x in zip(row, first)) + bias)
                  for row, bias in zip(params[POOLER_WEIGHT].tolist(), params[POOLER_BIAS].tolist())]
        predictions.append(sum(w * x for w, x in zip(params[CLASSIFIER_WEIGHT][0].tolist(), pooled))
                           + float(params[CLASSIFIER_BIAS][0]))
    np.testing.assert_allclose(out.logits[:, 0], predictions, rtol=1e-12)
    expected = math.fsum((z - y) ** 2 for z, y in zip(predictions, arrays["labels"].tolist())) / 3
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)
    arrays["labels"] = np.zeros(3, dtype=np.int64)  # integer targets are numbers too: not a class id 0
    out, _ = sequence_classification_forward(params, arrays, TINY, xp=np)
    assert float(out.loss) == pytest.approx(math.fsum(z * z for z in predictions) / 3, rel=1e-12) and out.loss > 0
    for labels, message in ((np.array([0.5, np.nan, 1.0]), "must be finite"),
                            (np.ones((3, 1)), r"numbers of shape \(3,\)"), (np.array(["a", "b", "c"]), "numbers")):
        arrays["labels"] = labels
        with pytest.raises(ValueError, match=message):
            sequence_classification_forward(params, arrays, TINY, xp=np)


def test_a_one_label_token_classifier_is_refused_in_one_line():
    """One tag per token has cross-entropy 0 whatever the model does: refused, with the fix."""
    params = init_token_classification_params(TINY, 1, 0, xp=np, dtype="float64")
    arrays = token_arrays(np.random.default_rng(0))
    arrays["labels"] = np.where(arrays["labels"] == IGNORE_INDEX, IGNORE_INDEX, 0)
    with pytest.raises(ValueError, match=r"^a classifier with 1 label has cross-entropy 0 .* at least 2"):
        token_classification_forward(params, arrays, TINY, xp=np)


@pytest.mark.parametrize("task", ["sentence", "token", "qa"])
def test_token_type_ids_may_be_left_out_and_mean_zeros_as_in_hugging_face(task):
    """Hugging Face's BertModel reads a missing token_type_ids as all zeros; so do the task models."""
    if task == "qa":
        init, forward, C = (lambda config, C, seed, **kw: init_qa_params(config, seed, **kw)), qa_forward, 2
        arrays = dict(zip(("input_ids", "token_type_ids", "attention_mask"), encoder_inputs(np.random.default_rng(2))))
        arrays.update(start_positions=np.array([1, 2]), end_positions=np.array([3, 2]))
    else:
        init, forward, _, C, make_arrays = MODELS[task]
        arrays = make_arrays(np.random.default_rng(2))
    params = scaled(init(TINY, C, 0, xp=np, dtype="float64"), 0)
    zeros = {**arrays, "token_type_ids": np.zeros_like(arrays["input_ids"])}
    omitted = {k: v for k, v in arrays.items() if k != "token_type_ids"}
    expected, _ = forward(params, zeros, TINY, xp=np)
    got, _ = forward(params, omitted, TINY, xp=np)
    given, _ = forward(params, arrays, TINY, xp=np)
    for field in ("loss", "logits", "start_logits", "end_logits"):
        if hasattr(expected, field):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    assert not np.array_equal(given.loss, expected.loss)  # the fixture's type ids do matter


@pytest.mark.parametrize("model", ["sentence", "token"])
def test_the_heads_drop_out_with_classifier_dropout_when_it_is_set(monkeypatch, model):
    """Hugging Face's BertForSequenceClassification and BertForTokenClassification: dropout before
    the classifier with ``classifier_dropout`` when the config sets it, else ``hidden_dropout_prob``."""
    import minispanbert.finetune.sequence_classification as sentence_module
    import minispanbert.finetune.token_classification as token_module
    head_module = sentence_module if model == "sentence" else token_module
    init, forward, _, C, make_arrays = MODELS[model]
    used = []
    real = head_module.dropout_forward

    def recording(x, p, rng, **kw):
        used.append(p)
        return real(x, p, rng, **kw)

    monkeypatch.setattr(head_module, "dropout_forward", recording)
    params = init(TINY, C, 5, xp=np, dtype="float64")
    for classifier_p, expected in ((None, 0.1), (0.5, 0.5), (0.0, 0.0)):
        config = TINY.replace(hidden_dropout_prob=0.1, classifier_dropout_prob=classifier_p)
        used.clear()
        forward(params, make_arrays(np.random.default_rng(6)), config, xp=np, train=True, rng=KeyedRandom([0], xp=np))
        assert used == [expected], classifier_p


def test_token_loss_averages_over_first_word_pieces_only():
    params = scaled(init_token_classification_params(TINY, C_TOK, 8, xp=np, dtype="float64"), 8)
    arrays = token_arrays(np.random.default_rng(9))
    out, _ = token_classification_forward(params, arrays, TINY, xp=np)
    counted = [(b, t, int(y)) for (b, t), y in np.ndenumerate(arrays["labels"]) if y != IGNORE_INDEX]
    assert len(counted) == 5
    expected = -math.fsum(_log_softmax(out.logits[b, t].tolist())[y] for b, t, y in counted) / len(counted)
    assert float(out.loss) == pytest.approx(expected, rel=1e-12)


def test_labels_are_checked():
    params = init_token_classification_params(TINY, C_TOK, 0, xp=np, dtype="float64")
    arrays = token_arrays(np.random.default_rng(0))
    arrays["labels"][0, 1] = C_TOK
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        token_classification_forward(params, arrays, TINY, xp=np)
    arrays["labels"] = arrays["labels"][:, :3]
    with pytest.raises(ValueError, match=r"shape \(2, 6\)"):
        token_classification_forward(params, arrays, TINY, xp=np)
    del arrays["labels"]
    out, cache = token_classification_forward(params, arrays, TINY, xp=np)
    assert out.loss is None and out.logits.shape == (2, 6, C_TOK)
    with pytest.raises(ValueError, match="forward pass with labels"):
        token_classification_backward(cache, xp=np)


def test_pretrained_encoder_loaded_pooler_optional_heads_dropped():
    pretrained = init_pretraining_params(TINY, 7, xp=np, dtype="float32")
    fresh = init_sequence_classification_params(TINY, 2, 0, xp=np, dtype="float64")
    params, unused = load_encoder_weights(fresh, pretrained, xp=np)
    assert unused == sorted(name for name in pretrained if name.startswith("cls."))
    for name in params:
        if name.startswith("bert.") and not name.startswith("bert.pooler."):
            assert params[name].dtype == np.float64
            np.testing.assert_array_equal(params[name], pretrained[name].astype(np.float64))
        else:  # the pooler (SpanBERT pretrains without one) and the classifier stay fresh
            np.testing.assert_array_equal(params[name], fresh[name])
    with_pooler = {**pretrained, POOLER_WEIGHT: np.full((8, 8), 0.5, np.float32), POOLER_BIAS: np.ones(8, np.float32)}
    params, unused = load_encoder_weights(fresh, with_pooler, xp=np)
    np.testing.assert_array_equal(params[POOLER_WEIGHT], 0.5)
    assert POOLER_WEIGHT not in unused
    del pretrained["bert.encoder.layer.0.attention.self.query.bias"]
    with pytest.raises(ValueError, match="lack 1 encoder tensors"):
        load_encoder_weights(fresh, pretrained, xp=np)
