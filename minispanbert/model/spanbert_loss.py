"""SpanBERT for pretraining: the BERT encoder + the MLM head + the SBO head, and its loss
(SpanBERT §3.3 and spec §3).

    L = mean over masked tokens of CE_MLM  +  w * mean over SBO targets of CE_SBO        (w = 1)

This is the authors' code (``spanbert_loss.py``: each term normalised by its own count). The paper
writes L(x_i) = L_MLM(x_i) + L_SBO(x_i) summed over masked tokens; both push in the same direction,
and SBO is never the only objective. ``sbo_weight = 0`` switches the SBO head off (the paper's
"span masking without SBO" row of the auxiliary-objective ablation, Table 7).

The tied word embedding E collects gradient from three places, added here: the input lookup
(encoder), the MLM decoder and the SBO decoder.

A batch is a :class:`minispanbert.masking.PretrainingBatch` of host (NumPy) arrays: it is
validated on the host and copied to the device once per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minispanbert.backend import check_dtype
from minispanbert.layers import cross_entropy
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.model.encoder import encoder_backward, encoder_forward, init_encoder_params
from minispanbert.model.mlm_head import init_mlm_head_params, mlm_head_backward, mlm_head_forward
from minispanbert.model.sbo_head import init_sbo_head_params, sbo_head_backward, sbo_head_forward


def init_pretraining_params(config, seed, *, xp, dtype="float32") -> dict:
    """Every parameter of encoder + MLM head + SBO head, drawn on the host from ``seed`` in a fixed
    order (so NumPy and CuPy start from the same model) and cast to ``dtype`` on the device."""
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    host = {**init_encoder_params(config, rng), **init_mlm_head_params(config, rng), **init_sbo_head_params(config, rng)}
    return {name: xp.asarray(value.astype(dtype)) for name, value in host.items()}


@dataclass
class PretrainingOutput:
    """Loss parts and metrics as backend 0-d arrays: convert with float() only when logging (each
    conversion of a CuPy value waits for the GPU)."""
    loss: object
    mlm_loss: object
    sbo_loss: object
    mlm_correct: object
    mlm_count: int
    sbo_correct: object
    sbo_count: int


def _correct(logits, labels, *, xp):
    return (logits.argmax(axis=1) == labels).sum()


def _check_sbo_indices(batch, config):
    rel = batch.sbo_rel_pos
    if rel.size and (rel.min() < 0 or rel.max() >= config.sbo_max_targets):
        raise ValueError(
            f"SBO relative positions must lie in [0, {config.sbo_max_targets}): mask with "
            f"max_pair_targets <= config.sbo_max_targets"
        )


def pretraining_forward(params, batch, config, *, xp, sbo_weight=1.0, train=False, rng=None):
    """One batch -> (PretrainingOutput, cache). ``rng`` supplies dropout masks when training."""
    T = batch.input_ids.shape[1]
    h, encoder_cache = encoder_forward(params, batch.input_ids, batch.token_type_ids, batch.attention_mask,
                                       config, xp=xp, train=train, rng=rng)
    eps = config.layer_norm_eps

    # MLM at the masked positions only (gather first: same loss, ~1/7 of the decoder cost)
    flat_labels = batch.mlm_labels.reshape(-1)
    mlm_positions = np.flatnonzero(flat_labels != IGNORE_INDEX)
    mlm_targets = xp.asarray(flat_labels[mlm_positions])
    mlm_logits, mlm_cache = mlm_head_forward(params, h, xp.asarray(mlm_positions), xp=xp, eps=eps)
    mlm_loss, mlm_ce_cache = cross_entropy.cross_entropy_forward(mlm_logits, mlm_targets, xp=xp)
    mlm_correct = _correct(mlm_logits, mlm_targets, xp=xp)

    sbo_count = int(batch.sbo_target.size) if sbo_weight else 0
    if sbo_count:
        _check_sbo_indices(batch, config)
        left = xp.asarray(batch.sbo_batch * T + batch.sbo_left)
        right = xp.asarray(batch.sbo_batch * T + batch.sbo_right)
        sbo_targets = xp.asarray(batch.sbo_target)
        sbo_logits, sbo_cache = sbo_head_forward(params, h, left, right, xp.asarray(batch.sbo_rel_pos), xp=xp, eps=eps)
        sbo_loss, sbo_ce_cache = cross_entropy.cross_entropy_forward(sbo_logits, sbo_targets, xp=xp)
        sbo_correct = _correct(sbo_logits, sbo_targets, xp=xp)
        loss = mlm_loss + sbo_weight * sbo_loss
    else:
        sbo_cache = sbo_ce_cache = None
        sbo_loss = sbo_correct = xp.zeros((), dtype=mlm_loss.dtype)
        loss = mlm_loss
    out = PretrainingOutput(loss=loss, mlm_loss=mlm_loss, sbo_loss=sbo_loss, mlm_correct=mlm_correct,
                            mlm_count=int(mlm_positions.size), sbo_correct=sbo_correct, sbo_count=sbo_count)
    cache = (encoder_cache, mlm_cache, mlm_ce_cache, sbo_cache, sbo_ce_cache, sbo_weight, params)
    return out, cache


def pretraining_backward(cache, *, xp, term_scales=None) -> dict:
    """Gradients of the loss for every parameter, keyed like the parameters. Parameters the batch
    did not reach (the SBO head when w = 0 or no span has two boundaries) get zero gradients.

    ``term_scales`` ({"mlm": a, "sbo": b}, default 1 each) multiplies each term's upstream
    gradient: the gradient is then that of a * L_MLM + b * w * L_SBO. Data-parallel training
    passes a = n_local / N_global per term, which turns a shard's own means into its share of the
    global-batch means (:mod:`minispanbert.distributed`)."""
    encoder_cache, mlm_cache, mlm_ce_cache, sbo_cache, sbo_ce_cache, sbo_weight, params = cache
    scales = {"mlm": 1.0, "sbo": 1.0, **(term_scales or {})}
    dmlm_logits = cross_entropy.cross_entropy_backward(scales["mlm"], mlm_ce_cache, xp=xp)
    dh, head_grads = mlm_head_backward(dmlm_logits, mlm_cache, xp=xp)
    decoder_grad = head_grads.pop("bert.embeddings.word_embeddings.weight")
    grads = dict(head_grads)
    if sbo_cache is not None:
        dsbo_logits = cross_entropy.cross_entropy_backward(scales["sbo"] * sbo_weight, sbo_ce_cache, xp=xp)
        dh_sbo, sbo_grads = sbo_head_backward(dsbo_logits, sbo_cache, xp=xp)
        dh += dh_sbo
        decoder_grad += sbo_grads.pop("bert.embeddings.word_embeddings.weight")
        grads.update(sbo_grads)
    grads.update(encoder_backward(dh, encoder_cache, xp=xp))
    grads["bert.embeddings.word_embeddings.weight"] += decoder_grad  # lookup + MLM + SBO decoders
    for name, value in params.items():
        if name not in grads:
            grads[name] = xp.zeros_like(value)
    return grads


class SpanBertForPretraining:
    """Encoder + MLM head + SBO head on one flat parameter dict (Hugging Face names for the encoder
    and the MLM head, ``cls.sbo.`` for the SBO head), CS231n-style: ``forward`` returns the output
    and a cache, ``backward(cache)`` returns the gradients; the optimizer lives elsewhere."""

    def __init__(self, config, params, *, xp, sbo_weight=1.0):
        self.config, self.params, self.xp, self.sbo_weight = config, params, xp, sbo_weight

    @classmethod
    def initialise(cls, config, *, seed, xp, dtype="float32", sbo_weight=1.0):
        return cls(config, init_pretraining_params(config, seed, xp=xp, dtype=dtype), xp=xp, sbo_weight=sbo_weight)

    def forward(self, batch, *, train=False, rng=None):
        return pretraining_forward(self.params, batch, self.config, xp=self.xp, sbo_weight=self.sbo_weight,
                                   train=train, rng=rng)

    def backward(self, cache, term_scales=None) -> dict:
        return pretraining_backward(cache, xp=self.xp, term_scales=term_scales)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.params.values()))
