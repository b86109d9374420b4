"""Token classification (e.g. WNUT-17 named entities): the BERT encoder, dropout and a linear
classifier on every token, as Hugging Face ``BertForTokenClassification`` (BERT §4.3, Figure 4 (d)).

Head, for the final encoder states h (B, T, H) and C tags:
    d = dropout(h)                       (B, T, H)   rate classifier_dropout_prob, else hidden_dropout_prob (HF)
    z = d W^T + b                        (B, T, C)   classifier: W (C, H), b (C,)
Loss, for tag labels y (B, T), K = the positions whose label is not IGNORE_INDEX (-100):
    L = -(1/|K|) sum_{(b,t) in K} log softmax(z_bt)[y_bt]
The label of a word sits on its FIRST word piece; the other pieces, [CLS], [SEP] and padding carry
IGNORE_INDEX (BERT §5.3 "we use the representation of the first sub-token as the input to the
token-level classifier"; `tasks.wnut17.align_labels`), so the loss averages over words, not pieces.
One tag (C = 1) is refused: its cross-entropy is 0 whatever the model does (Hugging Face computes
that zero silently).
Backward:
    dz_bt = (softmax(z_bt) - onehot(y_bt)) / |K| on K, 0 elsewhere
    dW = sum_bt dz_bt^T d_bt,  db = sum_bt dz_bt,  dd = dz W,  dh = dd * keep / (1 - rate)
    then encoder_backward.

Parameters: the encoder's ``bert.*`` and ``classifier.{weight (C, H), bias (C,)}`` (N(0, 0.02) / 0).
"""
from __future__ import annotations

import numpy as np

from minispanbert.backend import check_dtype
from minispanbert.finetune.sequence_classification import (
    CLASSIFIER,
    CLASSIFIER_BIAS,
    CLASSIFIER_WEIGHT,
    ClassifierOutput,
    check_labels,
)
from minispanbert.layers import cross_entropy
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.model.encoder import encoder_backward, encoder_forward, init_encoder_params, linear_init


def init_token_classification_head_params(config, num_labels: int, rng) -> dict:
    """Host float64 classifier weight (C, H) N(0, 0.02) and bias (C,) 0."""
    params = {}
    linear_init(params, CLASSIFIER, num_labels, config.hidden_size, rng, config.initializer_range)
    return params


def init_token_classification_params(config, num_labels: int, seed, *, xp, dtype="float32") -> dict:
    """Encoder then classifier drawn on the host from ``seed``, cast to ``dtype`` on ``xp``."""
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    host = {**init_encoder_params(config, rng), **init_token_classification_head_params(config, num_labels, rng)}
    return {name: xp.asarray(value.astype(dtype)) for name, value in host.items()}


def token_classification_head_forward(params, h, *, xp, dropout_p, rng=None, train=False):
    """h (B, T, H) -> (logits (B, T, C), cache)."""
    dropped, dropout_cache = dropout_forward(h, dropout_p, rng, xp=xp, train=train)
    logits, classifier_cache = linear_forward(dropped, params[CLASSIFIER_WEIGHT], params[CLASSIFIER_BIAS], xp=xp)
    return logits, (dropout_cache, classifier_cache)


def token_classification_head_backward(dlogits, cache, *, xp):
    """dlogits (B, T, C) -> (dh (B, T, H), classifier grads)."""
    dropout_cache, classifier_cache = cache
    # z = d W^T + b
    ddropped, dweight, dbias = linear_backward(dlogits, classifier_cache, xp=xp)
    # d = dropout(h)
    dh = dropout_backward(ddropped, dropout_cache, xp=xp)
    return dh, {CLASSIFIER_WEIGHT: dweight, CLASSIFIER_BIAS: dbias}


def token_classification_forward(params, arrays, config, *, xp, train=False, rng=None):
    """One batch -> (ClassifierOutput with logits (B, T, C), cache).

    ``arrays``: host input_ids, attention_mask (B, T), optionally token_type_ids (B, T) (absent:
    zeros, as Hugging Face) and labels (B, T) with IGNORE_INDEX on every position that is not the
    first piece of a word.
    """
    h, encoder_cache = encoder_forward(params, arrays["input_ids"], arrays.get("token_type_ids"),
                                       arrays["attention_mask"], config, xp=xp, train=train, rng=rng)
    logits, head_cache = token_classification_head_forward(params, h, xp=xp,
                                                           dropout_p=config.classifier_dropout_rate, rng=rng,
                                                           train=train)
    if "labels" not in arrays:
        return ClassifierOutput(None, logits), (encoder_cache, head_cache, None, logits.shape)
    B, T, C = logits.shape
    labels = check_labels(arrays["labels"], C, (B, T))
    loss, ce_cache = cross_entropy.cross_entropy_forward(logits.reshape(B * T, C), xp.asarray(labels.reshape(-1)), xp=xp)
    return ClassifierOutput(loss, logits), (encoder_cache, head_cache, ce_cache, logits.shape)


def token_classification_backward(cache, *, xp, term_scales=None) -> dict:
    """Gradients of the token cross-entropy for every parameter. Once per forward. ``term_scales``
    ({"labels": a}, default a = 1) gives the gradient of a * L: a batch split over threads passes
    a = |K_shard| / |K_batch| (:mod:`minispanbert.thread_parallel`)."""
    encoder_cache, head_cache, ce_cache, logits_shape = cache
    if ce_cache is None:
        raise ValueError("the backward pass needs a forward pass with labels (a training batch)")
    # L = CE(z.reshape(B T, C), y.reshape(B T))
    dlogits = cross_entropy.cross_entropy_backward((term_scales or {}).get("labels", 1.0), ce_cache, xp=xp)
    dh, grads = token_classification_head_backward(dlogits.reshape(logits_shape), head_cache, xp=xp)
    grads.update(encoder_backward(dh, encoder_cache, xp=xp))
    return grads
