"""ELECTRA pretraining (Clark, Luong, Le, Manning, ICLR 2020): replaced-token detection with a
small generator and a discriminator that share their embeddings (spec bert-family §5).

    x_masked  = mask(x)                                  host, :mod:`minispanbert.electra_masking`
    L_MLM     = mean_{m in M} CE(G(x_masked)_m, x_m)                       generator = a small MLM
    x^_m      ~ softmax(G(x_masked)_m),  m in M          no gradient: x^ is a discrete token id
    x_corrupt = x with x^_m written at EVERY m in M      (also where G saw x_m unmasked)
    y_t       = [x_corrupt_t != x_t]                     a sample equal to x_t is "original" (0)
    z_t       = w2^T act(W1 D(x_corrupt)_t + b1) + b2    one logit per token; z > 0 = "replaced"
    L_Disc    = sum_t mask_t BCE(z_t, y_t) / sum_t mask_t    all non-pad tokens, [CLS]/[SEP] included
    L         = L_MLM + lambda L_Disc,   lambda = 50

Why the sampling step passes no gradient: L_Disc depends on G only through the integer ids x^,
and a small change of G's weights leaves every argmax/inverse-CDF choice unchanged (almost surely),
so dL_Disc/dtheta_G = 0 wherever it exists. G learns from L_MLM alone (maximum likelihood, not
adversarially, paper §2); the discriminator's loss reaches G only through the SHARED embeddings.

Sharing (paper §3.2, the authors' ``model/modeling.py``): with a smaller generator only the
embeddings module is shared -- word, position and token-type tables AND the embedding LayerNorm.
``embeddings_project`` (E -> H, present when E != H) is NOT shared: each network has its own, of
its own width (E -> H_G and E -> H_D). Our issue text lists the projection among the shared
parameters; the spec (from the code) says otherwise and we follow the spec. The shared tensors'
gradient is the SUM of the two networks' parts:

    dL/dE_word = [G lookup + G decoder (tied)] from L_MLM  +  lambda * [D lookup] from L_Disc

Where the authors' code and the paper differ we follow the code (spec §5): 85% [MASK] / 15% kept
at the masked positions (electra_masking.py); the sample is the code's Gumbel-max argmax(logits + g)
(the noise host-drawn in float64 from a key per position, :func:`sample_tokens`); L_Disc is a plain mean over non-pad tokens as in Hugging Face (TF adds 1e-6
to the denominator). Padding: the word table has no padding_idx rule here (``pad_token_id`` None,
the pad row gets lookup gradient like any row); Hugging Face's ELECTRA applies it by default, so
the parity test builds its models with ``pad_token_id=None`` (spec §7). A pad id inside a real
sequence is the only place the two would differ.

Generator size (``rp.get_generator_config``): H_G = round(f H_D) with f = 0.25, the same depth,
I_G = 4 H_G, A_G = max(1, H_G // 64); the embedding width E is shared.

Parameters: one flat dict. The discriminator's tensors carry exactly their Hugging Face
``ElectraForPreTraining`` names; the generator's own tensors carry ``generator.`` + their
``ElectraForMaskedLM`` names; the shared ``electra.embeddings.*`` appear once:

    electra.embeddings.{word_embeddings (V, E), position_embeddings (P, E),
                        token_type_embeddings (2, E), LayerNorm (E)}              shared
    electra.embeddings_project.{weight (H, E), bias (H,)}                          D, only if E != H
    electra.encoder.layer.{i}.*                                                    D, BERT's names
    discriminator_predictions.dense.{weight (H, H), bias (H,)}                     D head, act = hidden_act
    discriminator_predictions.dense_prediction.{weight (1, H), bias (1,)}
    generator.electra.embeddings_project.{weight (H_G, E), bias (H_G,)}            G, only if E != H_G
    generator.electra.encoder.layer.{i}.*                                          G
    generator.generator_predictions.dense.{weight (E, H_G), bias (E,)}             G head, erf gelu always
    generator.generator_predictions.LayerNorm.{weight, bias} (E,)
    generator.generator_lm_head.bias (V,)              its weight IS electra.embeddings.word_embeddings

As the trainer's objective, ``--objective electra``: replaced-token detection (model/electra.py, electra_masking.py) on
single-document blocks with a WordPiece tokenizer, like SpanBERT's.

The preset is the discriminator; the generator is derived from it with ``--generator-size``
(0.25: H_G = H/4, same depth, I_G = 4 H_G, A_G = max(1, H_G // 64)). The embedding width E is the
preset's hidden size (as ELECTRA-Base and -Large; ELECTRA-Small's E = H/2 is not a preset), so the
discriminator has no ``embeddings_project`` and the generator has one (E -> H_G).
L = L_MLM + --disc-weight * L_Disc (lambda = 50). Masking is ELECTRA's own (15% of the tokens,
85% [MASK] / 15% kept), the only --masking value, "token". Adam eps 1e-6 as in the authors'
AdamWeightDecay (spec §5, ELECTRA-Small).

Logged besides the two losses: the generator's MLM accuracy, the discriminator's accuracy over all
non-pad tokens ("disc_acc"), the share of tokens replaced and the discriminator's accuracy on the
replaced and on the original tokens. At the end of a run the two networks are exported as
Hugging Face folders ``RUN/hf/discriminator`` (ElectraForPreTraining) and ``RUN/hf/generator``
(ElectraForMaskedLM), each with the run's tokenizer as a cased BERT tokenizer, so that
``AutoTokenizer`` gives the ids the run trained on (``[CLS] A [SEP]``; ElectraTokenizer's default
would lower-case).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minispanbert.backend import check_dtype
from minispanbert.config import ModelConfig
from minispanbert.data import encode_documents, load_tokenizer, pack_blocks, train_tokenizer  # noqa: F401
from minispanbert.engine.runs.atomic import staged_folder, write_text_atomic
from minispanbert.engine.runs.checkpoint import load_params, save_params
from minispanbert.family.electra_masking import make_electra_batch
from minispanbert.family.objectives import check_no_sbo, check_scheme
from minispanbert.interop.huggingface import padding_rule_keys
from minispanbert.interop.tokenizer import save_bert_tokenizer
from minispanbert.layers import cross_entropy
from minispanbert.layers.activation import activation_backward, activation_forward
from minispanbert.layers.binary_cross_entropy import binary_cross_entropy_backward, binary_cross_entropy_forward
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.model.encoder import (
    encoder_backward,
    encoder_forward,
    init_encoder_params,
    layernorm_init,
    linear_init,
)
from minispanbert.model.transform import transform_backward, transform_forward

SHARED = "electra.embeddings."
WORD_EMBEDDINGS = SHARED + "word_embeddings.weight"
GENERATOR = "generator."
DISC_HEAD = "discriminator_predictions."
GEN_HEAD = "generator_predictions."
GEN_LM_BIAS = "generator_lm_head.bias"
DISC_WEIGHT = 50.0     # lambda (paper App. A; cfg disc_weight)
GENERATOR_SIZE = 0.25  # f = H_G / H_D (cfg generator_hidden_size)


# --------------------------------------------------------------------------- configuration


def generator_config(config, size: float = GENERATOR_SIZE):
    """The generator's ModelConfig from the discriminator's (``rp.get_generator_config``):
    H_G = round(size * H_D), same depth, I_G = 4 H_G, A_G = max(1, H_G // 64), same E."""
    if not 0.0 < size <= 1.0:
        raise ValueError(f"generator size must be in (0, 1], got {size}: the paper recommends 1/4 to 1/2")
    hidden = max(1, round(size * config.hidden_size))
    heads = max(1, hidden // 64)
    if hidden % heads:
        raise ValueError(f"generator hidden size {hidden} (= {size} x {config.hidden_size}) is not divisible by "
                         f"its {heads} heads: choose another --generator-size")
    return config.replace(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=heads,
                          embedding_size=config.embedding_width)


def generator_view(params) -> dict:
    """The generator's parameters under their ElectraForMaskedLM names (the same arrays, no copy),
    the shared embeddings included; the tied ``generator_lm_head.weight`` is the word table."""
    view = {name[len(GENERATOR):]: value for name, value in params.items() if name.startswith(GENERATOR)}
    view.update({name: value for name, value in params.items() if name.startswith(SHARED)})
    return view


def discriminator_view(params) -> dict:
    """The discriminator's parameters under their ElectraForPreTraining names (same arrays)."""
    return {name: value for name, value in params.items() if not name.startswith(GENERATOR)}


# --------------------------------------------------------------------------- heads


def init_discriminator_head_params(config, rng) -> dict:
    params = {}
    H, std = config.hidden_size, config.initializer_range
    linear_init(params, DISC_HEAD + "dense.", H, H, rng, std)
    linear_init(params, DISC_HEAD + "dense_prediction.", 1, H, rng, std)
    return params


def discriminator_head_forward(params, h, *, xp, hidden_act="gelu"):
    """h (B, T, H) -> (z (B, T), cache):  z = w2^T act(W1 h + b1) + b2  (HF
    ``ElectraDiscriminatorPredictions``: act = ``config.hidden_act``, no LayerNorm, squeezed)."""
    u, dense_cache = linear_forward(h, params[DISC_HEAD + "dense.weight"], params[DISC_HEAD + "dense.bias"], xp=xp)
    a, act_cache = activation_forward(u, hidden_act, xp=xp)
    z, pred_cache = linear_forward(a, params[DISC_HEAD + "dense_prediction.weight"],
                                   params[DISC_HEAD + "dense_prediction.bias"], xp=xp)
    return z[..., 0], (dense_cache, act_cache, pred_cache)


def discriminator_head_backward(dz, cache, *, xp):
    """dz (B, T) -> (dh (B, T, H), grads of discriminator_predictions.*)."""
    dense_cache, act_cache, pred_cache = cache
    grads = {}
    # z = (a w2^T + b2)[..., 0]
    da, grads[DISC_HEAD + "dense_prediction.weight"], grads[DISC_HEAD + "dense_prediction.bias"] = \
        linear_backward(dz[..., None], pred_cache, xp=xp)
    # a = act(u)
    du = activation_backward(da, act_cache, xp=xp)
    # u = h W1^T + b1
    dh, grads[DISC_HEAD + "dense.weight"], grads[DISC_HEAD + "dense.bias"] = linear_backward(du, dense_cache, xp=xp)
    return dh, grads


def init_generator_head_params(gen_config, rng) -> dict:
    """generator_predictions.* and generator_lm_head.bias (ElectraForMaskedLM names, no prefix)."""
    params = {}
    linear_init(params, GEN_HEAD + "dense.", gen_config.embedding_size, gen_config.hidden_size, rng,
                gen_config.initializer_range)
    layernorm_init(params, GEN_HEAD + "LayerNorm.", gen_config.embedding_size)
    params[GEN_LM_BIAS] = np.zeros(gen_config.vocab_size)
    return params


def generator_head_forward(params, h, positions, *, xp, eps=1e-12):
    """h (B, T, H_G), positions (N,) flat indices into B*T -> (logits (N, V), cache).

        t = LayerNorm(gelu(h_M W^T + b))      (N, E)   erf gelu whatever hidden_act is (HF hard-codes it)
        logits = t E_word^T + b_lm            (N, V)   decoder tied to the shared word table
    """
    gathered = h.reshape(-1, h.shape[-1])[positions]
    t, transform_cache = transform_forward(
        gathered, params[GEN_HEAD + "dense.weight"], params[GEN_HEAD + "dense.bias"],
        params[GEN_HEAD + "LayerNorm.weight"], params[GEN_HEAD + "LayerNorm.bias"], xp=xp, eps=eps)
    logits, decoder_cache = linear_forward(t, params[WORD_EMBEDDINGS], params[GEN_LM_BIAS], xp=xp)
    return logits, (transform_cache, decoder_cache, positions, h.shape)


def generator_head_backward(dlogits, cache, *, xp):
    """dlogits (N, V) -> (dh (B, T, H_G), grads of the head incl. the decoder's share of E_word)."""
    transform_cache, decoder_cache, positions, h_shape = cache
    grads = {}
    # logits = t E_word^T + b_lm
    dt, grads[WORD_EMBEDDINGS], grads[GEN_LM_BIAS] = linear_backward(dlogits, decoder_cache, xp=xp)
    (dgathered, grads[GEN_HEAD + "dense.weight"], grads[GEN_HEAD + "dense.bias"],
     grads[GEN_HEAD + "LayerNorm.weight"], grads[GEN_HEAD + "LayerNorm.bias"]) = transform_backward(dt, transform_cache, xp=xp)
    # gathered = h.reshape(B*T, H_G)[positions]   (distinct positions: assignment is exact)
    dh = xp.zeros((h_shape[0] * h_shape[1], h_shape[2]), dtype=dgathered.dtype)
    dh[positions] = dgathered
    return dh.reshape(h_shape), grads


# --------------------------------------------------------------------------- sampling


def gumbel_noise(keys, vocab_size: int) -> np.ndarray:
    """(N,) uint64 keys -> (N, V) host float64 Gumbel(0, 1) noise g = -log E, E ~ Exp(1), row n drawn
    by a Philox generator keyed by ``keys[n]``: a sample depends on its own key only, not on which
    thread or rank computes it. (The authors' code draws g = -log(-log(u + 1e-9) + 1e-9), u ~ U[0, 1):
    the same distribution up to its guards; -log E needs one logarithm and no guard.)"""
    noise = np.empty((len(keys), vocab_size))
    for row, key in zip(noise, keys):
        np.random.Generator(np.random.Philox(key=int(key))).standard_exponential(out=row)  # E
    np.log(noise, out=noise)
    return np.negative(noise, out=noise)  # g = -log E


def sample_tokens(logits, noise, *, xp):
    """One id per row of ``logits`` (N, V) from softmax(logits) (temperature 1), by the Gumbel-max
    trick, as the authors' code (spec bert-family §5):

        x_hat = argmax_v (logits_v + g_v),   g_v ~ Gumbel(0, 1) i.i.d.   (``noise``, N x V, host-drawn)

    P(argmax = v) = softmax(logits)_v. In float64, a rounding change of the logits at 1e-7 flips a
    sample only when two perturbed logits are that close, far more rarely than an inverse CDF, whose
    V-term cumulative sum moves every bucket boundary. Integer output, so nothing downstream can
    pass a gradient back through it."""
    return (logits.astype(xp.float64) + xp.asarray(noise)).argmax(axis=1).astype(xp.int64)


def replace_tokens(original_ids, positions, samples, *, xp):
    """x_corrupt = ``original_ids`` (B, T) with ``samples`` written at the flat ``positions`` (all of
    them), and labels y = [x_corrupt != x] (int64): a sample equal to the original is "original"."""
    corrupt = original_ids.copy()
    corrupt.reshape(-1)[positions] = samples
    return corrupt, (corrupt != original_ids).astype(xp.int64)


# --------------------------------------------------------------------------- the loss


def init_electra_params(config, gen_config, seed, *, xp, dtype="float32") -> dict:
    """Discriminator encoder + head, then the generator's own encoder tensors + head, drawn on the
    host from ``seed`` in that fixed order and cast to ``dtype`` on the device. The generator's
    embedding draw is discarded: it uses the discriminator's (shared) tables."""
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    host = {**init_encoder_params(config, rng), **init_discriminator_head_params(config, rng)}
    generator = {**init_encoder_params(gen_config, rng), **init_generator_head_params(gen_config, rng)}
    host.update({GENERATOR + name: value for name, value in generator.items() if not name.startswith(SHARED)})
    return {name: xp.asarray(value.astype(dtype)) for name, value in host.items()}


@dataclass
class ElectraOutput:
    """Loss parts and counts as backend 0-d arrays (read back with float() only when logging).

    mlm_*: the generator at the masked positions; disc_*: the discriminator over the non-pad tokens
    (``disc_correct``: [z > 0] == y; the counts ``mlm_count``/``disc_count`` are host ints, read off
    the host batch); replaced_count / original_count: non-pad tokens with y = 1 / y = 0;
    disc_replaced_correct / disc_original_correct: those with z > 0 / z <= 0 (accuracy on each class). ``corrupt_ids``, ``labels`` and
    ``disc_logits`` (B, T, on the backend) are the discriminator's input, targets and logits z."""
    loss: object
    mlm_loss: object
    disc_loss: object
    mlm_correct: object
    mlm_count: int
    disc_correct: object
    disc_count: int
    replaced_count: object
    original_count: object
    disc_replaced_correct: object
    disc_original_correct: object
    corrupt_ids: object
    labels: object
    disc_logits: object


def electra_forward(params, batch, config, gen_config, *, xp, disc_weight=DISC_WEIGHT, train=False, rng=None,
                    corrupt_ids=None):
    """One :class:`minispanbert.electra_masking.ElectraBatch` -> (ElectraOutput, cache).

    ``rng`` supplies dropout masks when training. ``corrupt_ids`` (B, T), when given, replaces the
    sampled discriminator input (gradient checks hold the samples fixed with it)."""
    eps = config.layer_norm_eps
    gen_params, disc_params = generator_view(params), discriminator_view(params)
    mask = xp.asarray(batch.attention_mask)

    # generator: L_MLM at the masked positions (gather first, like the SpanBERT MLM head)
    flat_labels = batch.mlm_labels.reshape(-1)
    positions = np.flatnonzero(flat_labels != IGNORE_INDEX)
    positions_xp, targets = xp.asarray(positions), xp.asarray(flat_labels[positions])
    h_gen, gen_encoder_cache = encoder_forward(gen_params, batch.input_ids, batch.token_type_ids, batch.attention_mask,
                                               gen_config, xp=xp, train=train, rng=rng)
    logits, gen_head_cache = generator_head_forward(gen_params, h_gen, positions_xp, xp=xp, eps=eps)
    mlm_correct = (logits.argmax(axis=1) == targets).sum()

    # sample (no gradient), corrupt, label
    if corrupt_ids is None:
        noise = gumbel_noise(batch.sample_keys.reshape(-1)[positions], gen_config.vocab_size)
        samples = sample_tokens(logits, noise, xp=xp)
        corrupt_ids, labels = replace_tokens(xp.asarray(batch.original_ids), positions_xp, samples, xp=xp)
    else:
        corrupt_ids = xp.asarray(corrupt_ids)
        labels = (corrupt_ids != xp.asarray(batch.original_ids)).astype(xp.int64)
    labels = labels * mask  # padding is never "replaced"
    mlm_loss, ce_cache = cross_entropy.cross_entropy_forward(logits, targets, xp=xp)

    # discriminator: L_Disc over all non-pad tokens
    h_disc, disc_encoder_cache = encoder_forward(disc_params, corrupt_ids, batch.token_type_ids, batch.attention_mask,
                                                 config, xp=xp, train=train, rng=rng)
    z, disc_head_cache = discriminator_head_forward(disc_params, h_disc, xp=xp, hidden_act=config.hidden_act)
    disc_loss, bce_cache = binary_cross_entropy_forward(z, labels, mask, xp=xp)

    predicted_replaced = z > 0
    disc_count = int(np.asarray(batch.attention_mask).sum())
    replaced_count = labels.sum()
    replaced_correct = (predicted_replaced * labels).sum()
    original_correct = (~predicted_replaced * (mask - labels)).sum()
    out = ElectraOutput(
        loss=mlm_loss + disc_weight * disc_loss, mlm_loss=mlm_loss, disc_loss=disc_loss,
        mlm_correct=mlm_correct, mlm_count=int(positions.size), disc_correct=replaced_correct + original_correct,
        disc_count=disc_count, replaced_count=replaced_count, original_count=disc_count - replaced_count,
        disc_replaced_correct=replaced_correct, disc_original_correct=original_correct,
        corrupt_ids=corrupt_ids, labels=labels, disc_logits=z,
    )
    cache = (gen_encoder_cache, gen_head_cache, ce_cache, disc_encoder_cache, disc_head_cache, bce_cache,
             disc_weight, params)
    return out, cache


def electra_backward(cache, *, xp, term_scales=None) -> dict:
    """Gradients of L = L_MLM + lambda L_Disc for every parameter, keyed like the parameters.

    ``term_scales`` ({"mlm": a, "disc": b}, default 1) multiplies each term's upstream gradient
    (data parallelism renormalises shard means with global counts through it). The shared
    embeddings get the sum of both networks' gradients; every other tensor belongs to one network."""
    (gen_encoder_cache, gen_head_cache, ce_cache, disc_encoder_cache, disc_head_cache, bce_cache,
     disc_weight, params) = cache
    scales = {"mlm": 1.0, "disc": 1.0, **(term_scales or {})}
    # discriminator: L_Disc = BCE(z, y), weighted by lambda
    dz = binary_cross_entropy_backward(disc_weight * scales["disc"], bce_cache, xp=xp)
    dh_disc, grads = discriminator_head_backward(dz, disc_head_cache, xp=xp)
    grads.update(encoder_backward(dh_disc, disc_encoder_cache, xp=xp))
    # generator: L_MLM = CE(logits, x_M); the sampling step contributes nothing
    dlogits = cross_entropy.cross_entropy_backward(scales["mlm"], ce_cache, xp=xp)
    dh_gen, gen_grads = generator_head_backward(dlogits, gen_head_cache, xp=xp)
    decoder_grad = gen_grads.pop(WORD_EMBEDDINGS)
    gen_grads.update(encoder_backward(dh_gen, gen_encoder_cache, xp=xp))
    gen_grads[WORD_EMBEDDINGS] += decoder_grad  # G's lookup + G's tied decoder
    for name, value in gen_grads.items():
        if name.startswith(SHARED):
            grads[name] += value  # shared: D's part + G's part
        else:
            grads[GENERATOR + name] = value
    missing = set(params) - set(grads)
    if missing:
        raise AssertionError(f"electra_backward produced no gradient for {sorted(missing)}")
    return grads


# What a run logs per step and per evaluation (metrics.jsonl keys). Accuracies: the generator's
# argmax at the masked positions; the discriminator's z > 0 on replaced tokens (y = 1) and z <= 0 on
# original ones (y = 0, non-pad); replaced_share: replaced tokens / non-pad tokens.
METRICS = ("loss", "mlm_loss", "disc_loss", "mlm_acc", "replaced_share", "disc_acc_replaced", "disc_acc_original")


def metric_values(out, *, xp):
    """The METRICS of one output as one backend 1-D array (read back with a single copy)."""
    def ratio(num, den):
        return num / xp.maximum(den, 1)

    original_count = out.original_count
    return xp.stack([xp.asarray(v, dtype=xp.float64) for v in (
        out.loss, out.mlm_loss, out.disc_loss, ratio(out.mlm_correct, out.mlm_count),
        ratio(out.replaced_count, out.disc_count), ratio(out.disc_replaced_correct, out.replaced_count),
        ratio(out.disc_original_correct, original_count))])


class ElectraForPretraining:
    """Generator + discriminator on one flat parameter dict (module docstring), CS231n-style:
    ``forward`` returns the output and a cache, ``backward(cache)`` the gradients."""

    def __init__(self, config, gen_config, params, *, xp, disc_weight=DISC_WEIGHT):
        self.config, self.gen_config, self.params, self.xp, self.disc_weight = config, gen_config, params, xp, disc_weight

    @classmethod
    def initialise(cls, config, gen_config, *, seed, xp, dtype="float32", disc_weight=DISC_WEIGHT):
        return cls(config, gen_config, init_electra_params(config, gen_config, seed, xp=xp, dtype=dtype), xp=xp,
                   disc_weight=disc_weight)

    def forward(self, batch, *, train=False, rng=None):
        return electra_forward(self.params, batch, self.config, self.gen_config, xp=self.xp,
                               disc_weight=self.disc_weight, train=train, rng=rng)

    def backward(self, cache, term_scales=None) -> dict:
        return electra_backward(cache, xp=self.xp, term_scales=term_scales)

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.params.values()))


# --------------------------------------------------------------------------- Hugging Face folders

DISCRIMINATOR_FOLDER, GENERATOR_FOLDER = "discriminator", "generator"


def hf_electra_config(config, architecture: str, *, pad_token_id: int = 0) -> dict:
    """config.json for ``transformers.ElectraConfig`` (its field names), one network's sizes."""
    return {
        "architectures": [architecture], "model_type": "electra",
        "vocab_size": config.vocab_size, "embedding_size": config.embedding_width,
        "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act, "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings, "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range, "layer_norm_eps": config.layer_norm_eps,
        "tie_word_embeddings": True, **padding_rule_keys(config, pad_token_id),
    }


def save_electra_pretrained(directory, params, config, gen_config) -> list[str]:
    """Write ``directory/discriminator`` (``ElectraForPreTraining``) and ``directory/generator``
    (``ElectraForMaskedLM``): config.json + model.safetensors each, atomically, under exactly the
    names transformers uses (the generator's tied ``generator_lm_head.weight`` is not stored: it
    is re-tied to the word table on load, as transformers' own save does). Returns the folders."""
    folders = []
    for folder, view, cfg, architecture in (
            (DISCRIMINATOR_FOLDER, discriminator_view(params), config, "ElectraForPreTraining"),
            (GENERATOR_FOLDER, generator_view(params), gen_config, "ElectraForMaskedLM")):
        path = Path(directory) / folder
        save_params(path / "model.safetensors", view)
        write_text_atomic(path / "config.json", json.dumps(hf_electra_config(cfg, architecture), indent=2) + "\n")
        folders.append(str(path))
    return folders


# ElectraConfig fields read back into a ModelConfig (the rest keep their defaults).
HF_CONFIG_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                    "type_vocab_size", "initializer_range", "layer_norm_eps", "embedding_size")
TIED_ALIAS = "generator_lm_head.weight"  # the word table, stored by some writers, never by ours


def _read_folder(folder: Path, architecture: str, *, xp, dtype):
    try:
        hf = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / 'config.json'} is missing or not JSON ({type(exc).__name__}): pass the folder "
                         f"save_electra_pretrained wrote (it holds {DISCRIMINATOR_FOLDER}/ and {GENERATOR_FOLDER}/)") from None
    if hf.get("model_type") != "electra" or architecture not in hf.get("architectures", [architecture]):
        raise ValueError(f"{folder} holds {hf.get('architectures') or hf.get('model_type')!r}, not an ELECTRA "
                         f"{architecture}: pass an ELECTRA discriminator/generator pair")
    values = {name: hf[name] for name in HF_CONFIG_FIELDS if name in hf}
    config = ModelConfig(model_type="electra", **values)
    params = load_params(folder / "model.safetensors", xp=xp)
    return config, {name: value.astype(dtype) for name, value in params.items()}


def load_electra_pretrained(directory, *, xp, dtype="float32"):
    """The inverse of :func:`save_electra_pretrained`: ``directory/discriminator`` and
    ``directory/generator`` (ours, or folders ``transformers`` saved from two ELECTRA models that
    share their embeddings) -> (config, gen_config, params) in this module's layout. The two
    folders must hold the same shared embeddings (they are one module); a stored tied alias
    ``generator_lm_head.weight`` must equal the word table."""
    dtype = check_dtype(dtype)
    directory = Path(directory)
    config, disc = _read_folder(directory / DISCRIMINATOR_FOLDER, "ElectraForPreTraining", xp=xp, dtype=dtype)
    gen_config, gen = _read_folder(directory / GENERATOR_FOLDER, "ElectraForMaskedLM", xp=xp, dtype=dtype)
    for name in [n for n in gen if n.startswith(SHARED)] + ([TIED_ALIAS] if TIED_ALIAS in gen else []):
        reference = disc.get(WORD_EMBEDDINGS if name == TIED_ALIAS else name)
        if reference is None or reference.shape != gen[name].shape or not bool((reference == gen[name]).all()):
            raise ValueError(f"{directory}: the generator's {name} differs from the discriminator's "
                             f"{WORD_EMBEDDINGS if name == TIED_ALIAS else name}: the two folders do not share "
                             "their embeddings, so they are not one ELECTRA pair")
    params = dict(disc)
    params.update({GENERATOR + name: value for name, value in gen.items()
                   if not name.startswith(SHARED) and name != TIED_ALIAS})
    expected = init_electra_params(config, gen_config, 0, xp=np, dtype="float64")
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{directory}: {len(missing)} tensors missing (e.g. {missing[:1]}) and {len(unexpected)} "
                         f"unexpected (e.g. {unexpected[:1]}) for these configs: not an ELECTRA pair we can load")
    for name, value in expected.items():
        if tuple(params[name].shape) != value.shape:
            raise ValueError(f"{directory}: {name} has shape {tuple(params[name].shape)}, the config implies {value.shape}")
    return config, gen_config, {name: params[name] for name in expected}


# --------------------------------------------------------------------------- --objective electra

NAME = "electra"
HEADS = ("mlm", "disc")
SCHEMES = ("token",)
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-6
RATIOS = {
    "replaced_share": ("replaced_count", "disc_count"),
    "disc_acc_replaced": ("disc_replaced_correct", "replaced_count"),
    "disc_acc_original": ("disc_original_correct", "original_count"),
}
HF_FOLDER = "hf"


def model_config(base, cfg):
    return base.replace(model_type="electra")


def check_flags(cfg) -> None:
    check_scheme(NAME, SCHEMES, cfg)
    check_no_sbo(NAME, cfg)
    if not 0.0 < cfg.generator_size <= 1.0:
        raise ValueError(f"--generator-size must lie in (0, 1], got {cfg.generator_size}: the paper recommends 0.25 to 0.5")
    if cfg.disc_weight <= 0:
        raise ValueError(f"--disc-weight must be positive, got {cfg.disc_weight}: ELECTRA uses 50")


def pack(encoded_documents, *, seq_len, rng):
    blocks, starts = pack_blocks(encoded_documents, seq_len - 2)
    return list(zip(blocks, starts))


def make_batch(examples, rng, *, cfg, model_config, unigram):
    return make_electra_batch([ex[0] for ex in examples], rng, seq_len=cfg.seq_len)


def initialise(model_config, *, seed, xp, dtype, cfg):
    return ElectraForPretraining.initialise(model_config, generator_config(model_config, cfg.generator_size),
                                            seed=seed, xp=xp, dtype=dtype, disc_weight=cfg.disc_weight)


def from_params(model_config, params, *, xp, cfg):
    return ElectraForPretraining(model_config, generator_config(model_config, cfg.generator_size), params, xp=xp,
                                 disc_weight=cfg.disc_weight)


def after_run(run_path, model, tokenizer, cfg, log) -> None:
    """Export both networks as Hugging Face folders under RUN/hf/."""
    with staged_folder(Path(run_path) / HF_FOLDER) as staging:  # replaces a resumed run's earlier export
        for folder in save_electra_pretrained(staging, model.params, model.config, model.gen_config):
            save_bert_tokenizer(tokenizer, folder, model_max_length=model.config.max_position_embeddings)
    log(f"exported the discriminator (ElectraForPreTraining) and the generator (ElectraForMaskedLM) to "
        f"{Path(run_path) / HF_FOLDER}")


def term_weights(cfg) -> dict:
    """loss = mlm_loss + disc_weight * disc_loss."""
    return {"mlm": 1.0, "disc": cfg.disc_weight}
