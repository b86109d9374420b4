"""BERT for pretraining: masked LM + next-sentence prediction (BERT §3.1, App. A.2;
bert-family-spec.md §2), and the same loss with another sentence head (ALBERT's SOP, model/albert.py)
or none (RoBERTa, model/roberta.py).

    h        = encoder(x)                                          (B, T, H)   model/encoder.py
    logits_M = mlm_head(h at the masked positions)                 (N, V)      model/mlm_head.py
    p        = tanh(W_p h[:, 0] + b_p)                             (B, H)      model/pooler.py
    s        = W_c dropout(p) + b_c                                (B, 2)      NSP / SOP classifier
    L        = mean_N CE(logits_M, x_M)  +  mean_B CE(s, label)                (weights 1 and 1, App. A.2)

Backward: each CE gives (softmax - onehot) / count; the classifier and the pooler send their
gradient into h[:, 0] only (pooler.py), the MLM head into the masked rows; both meet in dh, then the
encoder. The tied word table's gradient is the lookup's plus the MLM decoder's. HF's plain means
are used (the TF code adds 1e-5 to the MLM denominator).

Hugging Face ``BertForPreTraining`` names: ``bert.*`` (encoder), ``bert.pooler.dense.{weight (H, H),
bias}``, ``cls.predictions.*`` (MLM head), ``cls.seq_relationship.{weight (2, H), bias (2,)}``.
The NSP classifier has no dropout in BERT; ALBERT's SOP head applies ``classifier_dropout_prob``.

``term_scales`` multiplies each term's upstream gradient (data parallelism renormalises shard means
with global counts through it): ``backward(cache, term_scales={"mlm": a, "nsp": b})``.

As the trainer's objective, ``--objective bert``: MLM + next-sentence prediction on ``[CLS] A [SEP] B [SEP]`` pairs
(model/bert_nsp.py, data/pairs.py). --masking token (default: BERT's per-token 80/10/10) or word
(whole-word masking, also per token).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from minispanbert.backend import check_dtype
from minispanbert.data import encode_documents, load_tokenizer, train_tokenizer  # noqa: F401
from minispanbert.family.objectives import check_no_sbo, check_scheme, token_masker
from minispanbert.family.pairs import build_pair_examples, make_pair_batch
from minispanbert.layers import cross_entropy
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.model.encoder import encoder_backward, encoder_forward, init_encoder_params, linear_init
from minispanbert.model.mlm_head import init_mlm_head_params, mlm_head_backward, mlm_head_forward, mlm_head_names
from minispanbert.model.pooler import pooler_backward, pooler_forward

NUM_SENTENCE_LABELS = 2


@dataclass(frozen=True)
class SentenceHeadNames:
    """A pooled two-way sentence classifier: pooler and classifier prefixes (ending in '.'), the
    term's name in outputs and term_scales, and whether the pooled vector goes through dropout."""
    pooler: str
    classifier: str
    term: str
    dropout: bool


BERT_NSP = SentenceHeadNames("bert.pooler.dense.", "cls.seq_relationship.", "nsp", dropout=False)


def init_params(config, seed, *, xp, dtype="float32", sentence: SentenceHeadNames | None = BERT_NSP) -> dict:
    """Encoder, MLM head and (unless ``sentence`` is None) pooler + classifier, drawn on the host
    from ``seed`` in that order and cast to ``dtype`` on the device."""
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    host = {**init_encoder_params(config, rng), **init_mlm_head_params(config, rng)}
    if sentence is not None:
        H, std = config.hidden_size, config.initializer_range
        linear_init(host, sentence.pooler, H, H, rng, std)
        linear_init(host, sentence.classifier, NUM_SENTENCE_LABELS, H, rng, std)
    return {name: xp.asarray(value.astype(dtype)) for name, value in host.items()}


def pretraining_forward(params, batch, config, *, xp, sentence: SentenceHeadNames | None = BERT_NSP,
                        train=False, rng=None):
    """One batch (``mlm_labels``, and ``sentence_labels`` with a sentence head) -> (output, cache).
    The output has ``loss``, ``mlm_loss``, ``mlm_correct``, ``mlm_count`` and, with a sentence head,
    the same for its term (``nsp_*`` / ``sop_*``); losses and correct counts stay on the device."""
    h, encoder_cache = encoder_forward(params, batch.input_ids, batch.token_type_ids, batch.attention_mask,
                                       config, xp=xp, train=train, rng=rng)
    flat_labels = batch.mlm_labels.reshape(-1)
    positions = np.flatnonzero(flat_labels != IGNORE_INDEX)
    targets = xp.asarray(flat_labels[positions])
    mlm_logits, mlm_cache = mlm_head_forward(params, h, xp.asarray(positions), xp=xp, eps=config.layer_norm_eps,
                                             names=mlm_head_names(config))
    mlm_loss, mlm_ce_cache = cross_entropy.cross_entropy_forward(mlm_logits, targets, xp=xp)
    out = SimpleNamespace(mlm_loss=mlm_loss, mlm_correct=(mlm_logits.argmax(axis=1) == targets).sum(),
                          mlm_count=int(positions.size), loss=mlm_loss)
    sentence_cache = None
    if sentence is not None:
        labels = np.asarray(batch.sentence_labels)
        if labels.shape != (h.shape[0],) or labels.min() < 0 or labels.max() >= NUM_SENTENCE_LABELS:
            raise ValueError(f"sentence_labels must be ({h.shape[0]},) ids in [0, {NUM_SENTENCE_LABELS}), "
                             f"got shape {labels.shape}")
        labels = xp.asarray(labels)
        pooled, pooler_cache = pooler_forward(h, params[sentence.pooler + "weight"], params[sentence.pooler + "bias"], xp=xp)
        p_drop = config.classifier_dropout_rate
        dropped, drop_cache = dropout_forward(pooled, p_drop if sentence.dropout else 0.0, rng, xp=xp, train=train)
        logits, classifier_cache = linear_forward(dropped, params[sentence.classifier + "weight"],
                                                  params[sentence.classifier + "bias"], xp=xp)
        s_loss, s_ce_cache = cross_entropy.cross_entropy_forward(logits, labels, xp=xp)
        setattr(out, f"{sentence.term}_loss", s_loss)
        setattr(out, f"{sentence.term}_correct", (logits.argmax(axis=1) == labels).sum())
        setattr(out, f"{sentence.term}_count", int(labels.size))
        out.sentence_logits = logits
        out.loss = mlm_loss + s_loss
        sentence_cache = (pooler_cache, drop_cache, classifier_cache, s_ce_cache)
    return out, (encoder_cache, mlm_cache, mlm_ce_cache, sentence, sentence_cache, params)


def pretraining_backward(cache, *, xp, term_scales=None) -> dict:
    """Gradients of the loss for every parameter, keyed like the parameters."""
    encoder_cache, mlm_cache, mlm_ce_cache, sentence, sentence_cache, params = cache
    scales = {"mlm": 1.0, **({sentence.term: 1.0} if sentence else {}), **(term_scales or {})}
    # L_MLM = mean CE(logits_M, x_M)
    dh, grads = mlm_head_backward(cross_entropy.cross_entropy_backward(scales["mlm"], mlm_ce_cache, xp=xp), mlm_cache, xp=xp)
    decoder = mlm_cache[-1].decoder
    decoder_grad = grads.pop(decoder)
    if sentence_cache is not None:
        pooler_cache, drop_cache, classifier_cache, s_ce_cache = sentence_cache
        # L_s = mean CE(s, label),  s = W_c dropout(p) + b_c,  p = tanh(W_p h[:, 0] + b_p)
        dlogits = cross_entropy.cross_entropy_backward(scales[sentence.term], s_ce_cache, xp=xp)
        ddropped, grads[sentence.classifier + "weight"], grads[sentence.classifier + "bias"] = \
            linear_backward(dlogits, classifier_cache, xp=xp)
        dpooled = dropout_backward(ddropped, drop_cache, xp=xp)
        dh_pool, grads[sentence.pooler + "weight"], grads[sentence.pooler + "bias"] = \
            pooler_backward(dpooled, pooler_cache, xp=xp)
        dh += dh_pool
    grads.update(encoder_backward(dh, encoder_cache, xp=xp))
    grads[decoder] = grads[decoder] + decoder_grad  # lookup + tied MLM decoder
    for name, value in params.items():
        if name not in grads:
            grads[name] = xp.zeros_like(value)
    return grads


class MaskedLMForPretraining:
    """Encoder + MLM head (+ an optional pooled sentence head) on one flat parameter dict with
    Hugging Face names, CS231n-style: ``forward`` returns (output, cache), ``backward(cache)`` the
    gradients. ``BertForPretraining`` is this with BERT's NSP head."""

    sentence: SentenceHeadNames | None = None

    def __init__(self, config, params, *, xp):
        self.config, self.params, self.xp = config, params, xp

    @classmethod
    def initialise(cls, config, *, seed, xp, dtype="float32"):
        return cls(config, init_params(config, seed, xp=xp, dtype=dtype, sentence=cls.sentence), xp=xp)

    def forward(self, batch, *, train=False, rng=None):
        return pretraining_forward(self.params, batch, self.config, xp=self.xp, sentence=self.sentence,
                                   train=train, rng=rng)

    def backward(self, cache, term_scales=None) -> dict:
        return pretraining_backward(cache, xp=self.xp, term_scales=term_scales)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.params.values()))


class BertForPretraining(MaskedLMForPretraining):
    """Hugging Face ``BertForPreTraining``: MLM + NSP."""
    sentence = BERT_NSP


# --------------------------------------------------------------------------- --objective bert

NAME = "bert"
HEADS = ("mlm", "nsp")
SCHEMES = ("token", "word")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
MIN_DOCUMENTS = 2  # a random segment comes from another document


def model_config(base, cfg):
    return base


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)
    check_no_sbo(NAME, cfg)


def pack(encoded_documents, *, seq_len, rng):
    return build_pair_examples(encoded_documents, seq_len=seq_len, mode="nsp", rng=rng)


def make_batch(examples, rng, *, cfg, model_config, unigram):
    return make_pair_batch(examples, token_masker(cfg.masking, model_config.vocab_size), rng, seq_len=cfg.seq_len)


def initialise(model_config, *, seed, xp, dtype, cfg):
    return BertForPretraining.initialise(model_config, seed=seed, xp=xp, dtype=dtype)


def from_params(model_config, params, *, xp, cfg):
    return BertForPretraining(model_config, params, xp=xp)
