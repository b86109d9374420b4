"""Extractive question answering (SQuAD): the BERT encoder + a span head, spec §6, as the authors'
``BertForQuestionAnswering`` (``code/pytorch_pretrained_bert/modeling.py``, used by ``run_squad.py``).

Head, for the final encoder states h (B, T, H):
    [s | e] = h W^T + b              (B, T, 2)   qa_outputs: W (2, H), b (2,); no dropout before it
    start_logits = s (B, T),  end_logits = e (B, T)
Backward:
    dW = sum_{b,t} [ds | de]^T h     (2, H)      db = sum_{b,t} [ds | de]   (2,)
    dh = [ds | de] W                 (B, T, H)   then on through encoder_backward

Loss, for gold start / end positions y_s, y_e (B,):
    L = (CE(start_logits, y_s) + CE(end_logits, y_e)) / 2
    CE(z, y) = -(1/|K|) sum_{n in K} log softmax(z_n)[y_n],   K = rows whose label counts
    dL/dz_n = (softmax(z_n) - onehot(y_n)) / (2 |K|)  for n in K, 0 otherwise

Following the authors' code, not a cleaner variant:
- The softmax runs over ALL T positions: [CLS], question, passage and padding alike. The code adds
  no large-negative mask for padding or question tokens, so training pushes those logits down
  itself (and decoding only ever looks at passage tokens, see `squad.decode_predictions`).
- A label at or beyond the sequence (>= T) is ignored: the code clamps positions to T and passes
  ``ignore_index=T`` to CrossEntropyLoss. `squad.make_features` never produces one (an answer
  outside a window is labelled 0 = [CLS]); IGNORE_INDEX (-100) is ignored too, as everywhere in
  minispanbert. Other negative labels are an error (the code would silently clamp them to [CLS]).
- Each CE is averaged over its own counted rows, then the two are averaged.

A consequence worth knowing: ``qa_outputs.bias`` adds one constant to the start (or end) logit of
EVERY position, and a softmax ignores such a shift, so its gradient is exactly zero and it stays
at 0 (as in BERT). The same holds for the last layer's ``output.LayerNorm.bias``, which only adds
W beta to every position. The gradient checks treat both as exact zeros, like the attention key bias.

Parameters: the encoder's ``bert.*`` (Hugging Face names, see ``encoder.py``) plus
``qa_outputs.weight`` (2, H), ``qa_outputs.bias`` (2,), initialised N(0, 0.02) / 0 like every BERT
linear layer. A pretraining checkpoint's ``cls.*`` heads (MLM, SBO) are dropped when it is loaded
into the QA model (:func:`qa_params_from_pretrained`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minispanbert.backend import check_dtype
from minispanbert.finetune.pretrained_weights import load_encoder_weights
from minispanbert.layers import cross_entropy
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.model.encoder import encoder_backward, encoder_forward, init_encoder_params, linear_init

QA = "qa_outputs."
QA_WEIGHT, QA_BIAS = QA + "weight", QA + "bias"


def init_qa_head_params(config, rng) -> dict:
    """Host float64 ``qa_outputs.{weight (2, H), bias (2,)}`` drawn from ``rng`` (N(0, 0.02), zeros)."""
    params = {}
    linear_init(params, QA, 2, config.hidden_size, rng, config.initializer_range)
    return params


def init_qa_params(config, seed, *, xp, dtype="float32") -> dict:
    """Encoder + QA head, drawn on the host from ``seed`` (encoder first, then the head) and cast to
    ``dtype`` on ``xp``. Because the head is drawn after the encoder, a given seed gives the same
    head whether the encoder then stays random or is replaced by pretrained weights."""
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    host = {**init_encoder_params(config, rng), **init_qa_head_params(config, rng)}
    return {name: xp.asarray(value.astype(dtype)) for name, value in host.items()}


def qa_params_from_pretrained(pretrained: dict, config, seed, *, xp, dtype="float32") -> tuple[dict, list[str]]:
    """QA parameters whose encoder is ``pretrained``'s ``bert.*`` tensors and whose head is fresh.

    Returns ``(params, dropped)``: ``dropped`` lists the pretrained tensors not used (the MLM and
    SBO heads ``cls.*``, or an earlier ``qa_outputs.*``). Raises a one-line ValueError when an
    encoder tensor is missing or has the wrong shape for ``config``.
    """
    return load_encoder_weights(init_qa_params(config, seed, xp=xp, dtype=dtype), pretrained, xp=xp)


def qa_head_forward(params, h, *, xp):
    """h (B, T, H) -> (start_logits (B, T), end_logits (B, T), cache)."""
    logits, linear_cache = linear_forward(h, params[QA_WEIGHT], params[QA_BIAS], xp=xp)
    return logits[..., 0], logits[..., 1], linear_cache


def qa_head_backward(dstart, dend, cache, *, xp):
    """dstart, dend (B, T) -> (dh (B, T, H), {qa_outputs.weight, qa_outputs.bias} grads)."""
    # [s | e] = h W^T + b
    dlogits = xp.stack([dstart, dend], axis=-1)
    dh, dweight, dbias = linear_backward(dlogits, cache, xp=xp)
    return dh, {QA_WEIGHT: dweight, QA_BIAS: dbias}


def position_labels(positions, seq_len: int, name: str) -> np.ndarray:
    """Host gold positions (B,) -> cross-entropy labels: >= T becomes IGNORE_INDEX (the authors'
    clamp-to-T-and-ignore), IGNORE_INDEX stays, other negatives raise."""
    positions = np.asarray(positions)
    if positions.ndim != 1 or positions.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-D integer array (one position per window), "
                         f"got {positions.dtype}{positions.shape}")
    if np.any((positions < 0) & (positions != IGNORE_INDEX)):
        raise ValueError(f"{name} holds negative positions other than IGNORE_INDEX={IGNORE_INDEX}; label an "
                         "answer outside the window with 0 ([CLS]) as squad.make_features does")
    return np.where(positions >= seq_len, IGNORE_INDEX, positions).astype(np.int64)


@dataclass
class QAOutput:
    """``loss``, ``start_loss``, ``end_loss``: backend 0-d arrays, or None when the batch has no labels.
    ``start_logits``, ``end_logits``: (B, T) on the backend."""
    loss: object
    start_loss: object
    end_loss: object
    start_logits: object
    end_logits: object


def qa_forward(params, arrays, config, *, xp, train=False, rng=None):
    """One batch -> (QAOutput, cache).

    ``arrays`` is a dict of host arrays as `squad.features_to_arrays` makes: input_ids,
    token_type_ids (optional: absent means zeros, as Hugging Face), attention_mask (B, T), and
    optionally start_positions, end_positions (B,); without them only the logits are computed.
    ``rng`` (a :class:`minispanbert.keyed_random.KeyedRandom`) supplies dropout masks when ``train``
    is true (dropout inside the encoder, per the config; none on the head, as the code).
    """
    h, encoder_cache = encoder_forward(params, arrays["input_ids"], arrays.get("token_type_ids"),
                                       arrays["attention_mask"], config, xp=xp, train=train, rng=rng)
    start_logits, end_logits, head_cache = qa_head_forward(params, h, xp=xp)
    labelled = "start_positions" in arrays and "end_positions" in arrays
    if not labelled:
        return QAOutput(None, None, None, start_logits, end_logits), (encoder_cache, head_cache, None, None)
    B, T = start_logits.shape
    start_labels = position_labels(arrays["start_positions"], T, "start_positions")
    end_labels = position_labels(arrays["end_positions"], T, "end_positions")
    if start_labels.shape != (B,) or end_labels.shape != (B,):
        raise ValueError(f"start_positions and end_positions need one entry per window ({B}), "
                         f"got {start_labels.shape} and {end_labels.shape}")
    start_loss, start_ce_cache = cross_entropy.cross_entropy_forward(start_logits, xp.asarray(start_labels), xp=xp)
    end_loss, end_ce_cache = cross_entropy.cross_entropy_forward(end_logits, xp.asarray(end_labels), xp=xp)
    loss = (start_loss + end_loss) / 2
    out = QAOutput(loss, start_loss, end_loss, start_logits, end_logits)
    return out, (encoder_cache, head_cache, start_ce_cache, end_ce_cache)


def qa_backward(cache, *, xp, term_scales=None) -> dict:
    """Gradients of L = (CE_start + CE_end) / 2 for every parameter (encoder and head), keyed like
    the parameters. Call it once per forward: the cross-entropy caches are reused as gradient storage.
    ``term_scales`` ({"start": a, "end": b}, default 1 each) gives the gradient of
    (a CE_start + b CE_end) / 2: a batch split over threads passes each term's share of the batch's
    counted positions (:mod:`minispanbert.thread_parallel`)."""
    encoder_cache, head_cache, start_ce_cache, end_ce_cache = cache
    if start_ce_cache is None:
        raise ValueError("qa_backward needs a forward pass with start_positions and end_positions (a training batch)")
    scales = {"start": 1.0, "end": 1.0, **(term_scales or {})}
    # L = (CE_start + CE_end) / 2
    dstart = cross_entropy.cross_entropy_backward(0.5 * scales["start"], start_ce_cache, xp=xp)
    dend = cross_entropy.cross_entropy_backward(0.5 * scales["end"], end_ce_cache, xp=xp)
    dh, grads = qa_head_backward(dstart, dend, head_cache, xp=xp)
    grads.update(encoder_backward(dh, encoder_cache, xp=xp))
    return grads
