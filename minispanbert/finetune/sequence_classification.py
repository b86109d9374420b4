"""Sentence classification (e.g. SST-2 sentiment): the BERT encoder, BERT's pooler, dropout and a
linear classifier, as Hugging Face ``BertForSequenceClassification`` (BERT §4.1, Figure 4 (a)).

Head, for the final encoder states h (B, T, H) and C classes:
    p = tanh(h[:, 0] W_p^T + b_p)        (B, H)   bert.pooler.dense (model/pooler.py)
    d = dropout(p)                       (B, H)   rate classifier_dropout_prob, else hidden_dropout_prob (HF)
    z = d W_c^T + b_c                    (B, C)   classifier: W_c (C, H), b_c (C,)
Loss, for gold labels y (B,) (IGNORE_INDEX rows skipped, K = the counted rows):
    L = -(1/|K|) sum_{n in K} log softmax(z_n)[y_n]
With ONE label (C = 1) the head is a regressor, as Hugging Face's (``problem_type`` "regression";
a one-class cross-entropy would be 0 whatever the model does): real targets y (B,),
    L = (1/B) sum_n (z_n - y_n)^2                  (layers/mean_squared_error.py)
Backward:
    dz_n = (softmax(z_n) - onehot(y_n)) / |K|      (regression: dz_n = 2 (z_n - y_n) / B)
    dW_c = dz^T d,  db_c = sum_n dz_n,  dd = dz W_c,  dp = dd * keep / (1 - rate)
    then the pooler's backward (only h[:, 0] gets gradient) and encoder_backward.

Parameters: the encoder's ``bert.*``, ``bert.pooler.dense.{weight (H, H), bias (H,)}`` and
``classifier.{weight (C, H), bias (C,)}``, drawn N(0, 0.02) / 0 like every BERT linear layer. A
SpanBERT checkpoint has no pooler (SpanBERT drops NSP), so it starts fresh there; a checkpoint that
has one (a Hugging Face BERT) supplies it (`model.pretrained_weights.load_encoder_weights`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minispanbert.backend import check_dtype
from minispanbert.layers import cross_entropy
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.layers.mean_squared_error import mean_squared_error_backward, mean_squared_error_forward
from minispanbert.model.encoder import encoder_backward, encoder_forward, init_encoder_params, linear_init
from minispanbert.model.pooler import pooler_backward, pooler_forward

POOLER = "bert.pooler.dense."
POOLER_WEIGHT, POOLER_BIAS = POOLER + "weight", POOLER + "bias"
CLASSIFIER = "classifier."
CLASSIFIER_WEIGHT, CLASSIFIER_BIAS = CLASSIFIER + "weight", CLASSIFIER + "bias"


def init_sequence_classification_head_params(config, num_labels: int, rng) -> dict:
    """Host float64 pooler (H, H) and classifier (C, H) weights N(0, 0.02), biases 0."""
    params = {}
    linear_init(params, POOLER, config.hidden_size, config.hidden_size, rng, config.initializer_range)
    linear_init(params, CLASSIFIER, num_labels, config.hidden_size, rng, config.initializer_range)
    return params


def init_sequence_classification_params(config, num_labels: int, seed, *, xp, dtype="float32") -> dict:
    """Encoder, pooler and classifier drawn on the host from ``seed`` (encoder first, so a given seed
    gives the same head whether the encoder stays random or is replaced by pretrained weights)."""
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    host = {**init_encoder_params(config, rng), **init_sequence_classification_head_params(config, num_labels, rng)}
    return {name: xp.asarray(value.astype(dtype)) for name, value in host.items()}


def sequence_classification_head_forward(params, h, *, xp, dropout_p, rng=None, train=False):
    """h (B, T, H) -> (logits (B, C), cache)."""
    pooled, pooler_cache = pooler_forward(h, params[POOLER_WEIGHT], params[POOLER_BIAS], xp=xp)
    dropped, dropout_cache = dropout_forward(pooled, dropout_p, rng, xp=xp, train=train)
    logits, classifier_cache = linear_forward(dropped, params[CLASSIFIER_WEIGHT], params[CLASSIFIER_BIAS], xp=xp)
    return logits, (pooler_cache, dropout_cache, classifier_cache)


def sequence_classification_head_backward(dlogits, cache, *, xp):
    """dlogits (B, C) -> (dh (B, T, H), grads of the pooler and classifier)."""
    pooler_cache, dropout_cache, classifier_cache = cache
    # z = d W_c^T + b_c
    ddropped, dweight, dbias = linear_backward(dlogits, classifier_cache, xp=xp)
    # d = dropout(p)
    dpooled = dropout_backward(ddropped, dropout_cache, xp=xp)
    # p = tanh(h[:, 0] W_p^T + b_p)
    dh, dpool_weight, dpool_bias = pooler_backward(dpooled, pooler_cache, xp=xp)
    return dh, {CLASSIFIER_WEIGHT: dweight, CLASSIFIER_BIAS: dbias, POOLER_WEIGHT: dpool_weight, POOLER_BIAS: dpool_bias}


def check_labels(labels, num_labels: int, shape, name="labels") -> np.ndarray:
    """Host integer labels of ``shape`` in [0, C) or IGNORE_INDEX -> int64; else a one-line ValueError."""
    if num_labels < 2:
        raise ValueError(f"a classifier with {num_labels} label has cross-entropy 0 whatever it predicts (nothing "
                         "to learn): give it one row per class, at least 2 (a sentence classifier with one label is "
                         "a regressor, as in Hugging Face)")
    labels = np.asarray(labels)
    if labels.shape != tuple(shape) or labels.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers of shape {tuple(shape)}, got {labels.dtype}{labels.shape}")
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_labels))
    if np.any(bad):
        raise ValueError(f"{name} holds {labels[bad][0]}, outside [0, {num_labels}) and not IGNORE_INDEX={IGNORE_INDEX}")
    return labels.astype(np.int64)


def check_targets(targets, shape, name="labels") -> np.ndarray:
    """Host real regression targets of ``shape`` -> float64; else a one-line ValueError."""
    targets = np.asarray(targets)
    if targets.shape != tuple(shape) or targets.dtype.kind not in "iuf":
        raise ValueError(f"{name} of a one-label (regression) classifier must be numbers of shape {tuple(shape)}, "
                         f"got {targets.dtype}{targets.shape}")
    if not np.all(np.isfinite(targets)):
        raise ValueError(f"{name} holds {targets[~np.isfinite(targets)][0]}: regression targets must be finite")
    return targets.astype(np.float64)


@dataclass
class ClassifierOutput:
    """``loss``: a backend 0-d array, or None when the batch has no labels; ``logits`` on the backend:
    (B, C) for sentences, (B, T, C) for tokens."""
    loss: object
    logits: object


def sequence_classification_forward(params, arrays, config, *, xp, train=False, rng=None):
    """One batch -> (ClassifierOutput, cache).

    ``arrays``: host input_ids, attention_mask (B, T), optionally token_type_ids (B, T) (absent:
    zeros, as Hugging Face) and labels (B,): class ids, or real targets for a one-label regressor.
    ``rng`` (a :class:`minispanbert.keyed_random.KeyedRandom`) supplies the dropout masks when
    ``train`` is true: the encoder's first, then the one before the classifier.
    """
    h, encoder_cache = encoder_forward(params, arrays["input_ids"], arrays.get("token_type_ids"),
                                       arrays["attention_mask"], config, xp=xp, train=train, rng=rng)
    logits, head_cache = sequence_classification_head_forward(params, h, xp=xp,
                                                              dropout_p=config.classifier_dropout_rate, rng=rng,
                                                              train=train)
    if "labels" not in arrays:
        return ClassifierOutput(None, logits), (encoder_cache, head_cache, None, None)
    if logits.shape[1] == 1:  # Hugging Face's problem_type "regression"
        targets = xp.asarray(check_targets(arrays["labels"], logits.shape[:1]).astype(logits.dtype))
        loss, mse_cache = mean_squared_error_forward(logits[:, 0], targets, xp=xp)
        return ClassifierOutput(loss, logits), (encoder_cache, head_cache, "regression", mse_cache)
    labels = check_labels(arrays["labels"], logits.shape[1], logits.shape[:1])
    loss, ce_cache = cross_entropy.cross_entropy_forward(logits, xp.asarray(labels), xp=xp)
    return ClassifierOutput(loss, logits), (encoder_cache, head_cache, "classification", ce_cache)


def sequence_classification_backward(cache, *, xp, term_scales=None) -> dict:
    """Gradients of the loss (cross-entropy, or the regressor's mean squared error) for every
    parameter. Once per forward (the CE cache is reused). ``term_scales`` ({"labels": a}, default
    a = 1) gives the gradient of a * L: a batch split over threads passes a = |K_shard| / |K_batch|
    (:mod:`minispanbert.thread_parallel`)."""
    encoder_cache, head_cache, problem, loss_cache = cache
    if loss_cache is None:
        raise ValueError("the backward pass needs a forward pass with labels (a training batch)")
    dloss = (term_scales or {}).get("labels", 1.0)
    if problem == "regression":
        # L = mean_n (z[n, 0] - y_n)^2
        dlogits = mean_squared_error_backward(dloss, loss_cache, xp=xp)[:, None]
    else:
        # L = CE(z, y)
        dlogits = cross_entropy.cross_entropy_backward(dloss, loss_cache, xp=xp)
    dh, grads = sequence_classification_head_backward(dlogits, head_cache, xp=xp)
    grads.update(encoder_backward(dh, encoder_cache, xp=xp))
    return grads
