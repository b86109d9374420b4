"""``python -m minispanbert.check_gradients``: every hand-written backward pass against centred
differences in float64, one table.

Each op is checked against every differentiable input (weights and biases included) with a random
upstream gradient ``dout``, so no backward is only tried with an all-ones output gradient. Then the
whole encoder, the MLM and SBO heads and the full SpanBERT loss are checked against every
parameter, the tied word embedding included, and so are ELECTRA's heads, its whole loss
(generator + discriminator, samples held fixed) and its shared embeddings' summed gradient. The tests (``tests/test_layers.py``,
``tests/test_encoder.py``, ``tests/test_spanbert_model.py``) assert on the same checks, and
coursework can point this command at a student's version of the layers.

Every op and block that takes dropout is checked a second time with dropout ON (rows and checks
named ``*_dropout``): the generator is re-created from the same seed for every evaluation of the
loss (``fixed_dropout_rng``), so each evaluation draws the same masks and the loss is a smooth
function of the inputs that centred differences can check. A backward pass that forgets to apply
a mask fails only these rows. The masks are drawn on the host (:mod:`minispanbert.keyed_random`),
so NumPy and CuPy draw the same ones and the backend-parity tests include these rows.

Score: rel_error = max|analytic - numeric| / max(|analytic| + |numeric|) per tensor
(``minispanbert.gradcheck.rel_error``; inf for a non-finite value, so a NaN gradient fails).
Parameters whose true gradient is exactly zero -- the attention key bias, since softmax ignores a
constant shift of a score row -- have no meaningful relative error; they are reported as "exact
zero" after an absolute check (``gradcheck.check_exact_zero``). The command exits non-zero when
any check fails, a NaN included.

The tables are data: a new op is one more entry in ``op_cases`` (its inputs, forward, backward,
differentiable inputs), a new model part one more entry in ``MODEL_CHECKS``; the tests, this
command and the coursework read them.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from minispanbert.config import ModelConfig
from minispanbert.engine.cli import Parser
from minispanbert.family.electra import (
    DISC_WEIGHT,
    discriminator_head_backward,
    discriminator_head_forward,
    electra_backward,
    electra_forward,
    generator_config,
    generator_head_backward,
    generator_head_forward,
    init_discriminator_head_params,
    init_electra_params,
    init_generator_head_params,
)
from minispanbert.family.electra import GENERATOR as ELECTRA_GENERATOR
from minispanbert.family.electra import SHARED as ELECTRA_SHARED
from minispanbert.family.electra import WORD_EMBEDDINGS as ELECTRA_WORD_EMBEDDINGS
from minispanbert.family.electra_masking import ElectraBatch
from minispanbert.gradcheck import check_exact_zero, check_param_gradients, numerical_gradient, rel_error, worst_error
from minispanbert.keyed_random import KeyedRandom
from minispanbert.layers import cross_entropy, gelu, layernorm, softmax
from minispanbert.layers.attention import padding_mask_bias, self_attention_backward, self_attention_forward
from minispanbert.layers.binary_cross_entropy import binary_cross_entropy_backward, binary_cross_entropy_forward
from minispanbert.layers.cross_entropy import IGNORE_INDEX
from minispanbert.layers.dropout import dropout_backward, dropout_forward
from minispanbert.layers.embedding import embedding_backward, embedding_forward
from minispanbert.layers.feedforward import feedforward_backward, feedforward_forward
from minispanbert.layers.gelu import gelu_new_backward, gelu_new_forward
from minispanbert.layers.linear import linear_backward, linear_forward
from minispanbert.layers.relu import relu_backward, relu_forward
from minispanbert.layers.residual import residual_layernorm_backward, residual_layernorm_forward
from minispanbert.model.encoder import encoder_backward, encoder_forward, init_encoder_params
from minispanbert.model.mlm_head import init_mlm_head_params, mlm_head_backward, mlm_head_forward
from minispanbert.model.names import WORD_EMBEDDINGS, key_bias_names
from minispanbert.model.pooler import pooler_backward, pooler_forward
from minispanbert.model.sbo_head import init_sbo_head_params, sbo_head_backward, sbo_head_forward
from minispanbert.model.spanbert_loss import init_pretraining_params, pretraining_backward, pretraining_forward

# Tolerances (float64). A single smooth op: CS231n sees 1e-8 .. 1e-13. A model: errors grow with depth.
OP_TOLERANCE = 1e-7
MODEL_TOLERANCE = 1e-6
EXACT_ZERO = 0.0  # marker in the results for an exactly-zero true gradient

B, T, H, NH, F, V = 2, 5, 8, 2, 12, 11

# A model small enough that every element of every parameter can be perturbed twice in seconds.
CHECK_CONFIG = ModelConfig(vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=12, max_position_embeddings=8, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, sbo_max_targets=4, sbo_position_dim=3)
KEY_BIASES = {f"bert.encoder.layer.{i}.attention.self.key.bias" for i in range(CHECK_CONFIG.num_hidden_layers)}

# Dropout-on checks: a probability high enough that every tensor loses a good share of its units.
DROPOUT_P = 0.3
DROPOUT_SEED = 1234
DROPOUT_CONFIG = CHECK_CONFIG.replace(hidden_dropout_prob=DROPOUT_P, attention_probs_dropout_prob=DROPOUT_P)
# Whole-model dropout checks perturb a sample of each tensor's elements (the masks make every
# element's gradient depend on them, so a sample sees a missing mask); this keeps them ~5 s.
DROPOUT_MAX_ELEMENTS = 24


def fixed_dropout_rng(xp=np):
    """A dropout generator that draws the same masks every time: call it once per evaluation of
    the loss (a :class:`KeyedRandom` from one fixed key)."""
    return KeyedRandom((DROPOUT_SEED,), xp=xp)


def op_cases(rng):
    """name -> (inputs, forward(xp, **inputs) -> (out, cache), backward(xp, dout, cache) -> grads,
    names of the differentiable inputs, in the order backward returns their gradients)."""
    x = rng.normal(size=(B, T, H))
    attention_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    return {
        "linear": (
            dict(x=x, weight=rng.normal(size=(F, H)), bias=rng.normal(size=F)),
            lambda xp, x, weight, bias: linear_forward(x, weight, bias, xp=xp),
            lambda xp, d, c: linear_backward(d, c, xp=xp),
            ("x", "weight", "bias"),
        ),
        "embedding": (
            dict(ids=np.array([[1, 3, 3, 0, 10], [3, 1, 2, 2, 9]]), table=rng.normal(size=(V, H))),
            lambda xp, ids, table: embedding_forward(ids, table, xp=xp),
            lambda xp, d, c: (embedding_backward(d, c, xp=xp),),
            ("table",),
        ),
        "layernorm": (
            dict(x=x * 3 + 1, gamma=rng.normal(size=H), beta=rng.normal(size=H)),
            lambda xp, x, gamma, beta: layernorm.layernorm_forward(x, gamma, beta, xp=xp),
            lambda xp, d, c: layernorm.layernorm_backward(d, c, xp=xp),
            ("x", "gamma", "beta"),
        ),
        "gelu": (
            dict(x=x * 2),
            lambda xp, x: gelu.gelu_forward(x, xp=xp),
            lambda xp, d, c: (gelu.gelu_backward(d, c, xp=xp),),
            ("x",),
        ),
        "gelu_new": (
            dict(x=x * 2),
            lambda xp, x: gelu_new_forward(x, xp=xp),
            lambda xp, d, c: (gelu_new_backward(d, c, xp=xp),),
            ("x",),
        ),
        "relu": (
            dict(x=x * 2),
            lambda xp, x: relu_forward(x, xp=xp),
            lambda xp, d, c: (relu_backward(d, c, xp=xp),),
            ("x",),
        ),
        "softmax": (
            dict(x=x * 2),
            lambda xp, x: softmax.softmax_forward(x, xp=xp),
            lambda xp, d, c: (softmax.softmax_backward(d, c, xp=xp),),
            ("x",),
        ),
        "feedforward": (
            dict(x=x, w1=rng.normal(size=(F, H)) * 0.3, b1=rng.normal(size=F), w2=rng.normal(size=(H, F)) * 0.3,
                 b2=rng.normal(size=H)),
            lambda xp, x, w1, b1, w2, b2: feedforward_forward(x, w1, b1, w2, b2, xp=xp),
            lambda xp, d, c: feedforward_backward(d, c, xp=xp),
            ("x", "w1", "b1", "w2", "b2"),
        ),
        "residual_layernorm": (
            dict(x=x, s=rng.normal(size=(B, T, H)), gamma=rng.normal(size=H), beta=rng.normal(size=H)),
            lambda xp, x, s, gamma, beta: residual_layernorm_forward(x, s, gamma, beta, xp=xp),
            lambda xp, d, c: residual_layernorm_backward(d, c, xp=xp),
            ("x", "s", "gamma", "beta"),
        ),
        "attention": (
            dict(x=x, **{n: rng.normal(size=(H, H)) * 0.4 for n in ("wq", "wk", "wv", "wo")},
                 **{n: rng.normal(size=H) * 0.4 for n in ("bq", "bk", "bv", "bo")}, attention_mask=attention_mask),
            lambda xp, x, wq, bq, wk, bk, wv, bv, wo, bo, attention_mask: self_attention_forward(
                x, wq, bq, wk, bk, wv, bv, wo, bo, padding_mask_bias(attention_mask, x.dtype, xp=xp), num_heads=NH, xp=xp),
            lambda xp, d, c: self_attention_backward(d, c, xp=xp),
            ("x", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"),
        ),
        "pooler": (
            dict(h=x, weight=rng.normal(size=(H, H)) * 0.4, bias=rng.normal(size=H) * 0.4),
            lambda xp, h, weight, bias: pooler_forward(h, weight, bias, xp=xp),
            lambda xp, d, c: pooler_backward(d, c, xp=xp),
            ("h", "weight", "bias"),
        ),
        "dropout": (
            dict(x=x),
            lambda xp, x: dropout_forward(x, DROPOUT_P, fixed_dropout_rng(xp), xp=xp, train=True),
            lambda xp, d, c: (dropout_backward(d, c, xp=xp),),
            ("x",),
        ),
        "residual_layernorm_dropout": (
            dict(x=x, s=rng.normal(size=(B, T, H)), gamma=rng.normal(size=H), beta=rng.normal(size=H)),
            lambda xp, x, s, gamma, beta: residual_layernorm_forward(
                x, s, gamma, beta, xp=xp, dropout_p=DROPOUT_P, rng=fixed_dropout_rng(xp), train=True),
            lambda xp, d, c: residual_layernorm_backward(d, c, xp=xp),
            ("x", "s", "gamma", "beta"),
        ),
        "attention_dropout": (
            dict(x=x, **{n: rng.normal(size=(H, H)) * 0.4 for n in ("wq", "wk", "wv", "wo")},
                 **{n: rng.normal(size=H) * 0.4 for n in ("bq", "bk", "bv", "bo")}, attention_mask=attention_mask),
            lambda xp, x, wq, bq, wk, bk, wv, bv, wo, bo, attention_mask: self_attention_forward(
                x, wq, bq, wk, bk, wv, bv, wo, bo, padding_mask_bias(attention_mask, x.dtype, xp=xp), num_heads=NH, xp=xp,
                dropout_p=DROPOUT_P, rng=fixed_dropout_rng(xp), train=True),
            lambda xp, d, c: self_attention_backward(d, c, xp=xp),
            ("x", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"),
        ),
        "binary_cross_entropy": (
            dict(logits=np.concatenate([rng.normal(size=8) * 3, [1000.0, -1000.0, 999.0, -999.0]]),
                 labels=np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1]), mask=np.array([1] * 7 + [0] + [1] * 4)),
            lambda xp, logits, labels, mask: binary_cross_entropy_forward(logits, labels, mask, xp=xp),
            lambda xp, d, c: (binary_cross_entropy_backward(d, c, xp=xp),),
            ("logits",),
        ),
        "cross_entropy": (
            dict(logits=rng.normal(size=(7, V)) * 2, labels=np.array([3, IGNORE_INDEX, 0, 10, IGNORE_INDEX, 3, 5])),
            lambda xp, logits, labels: cross_entropy.cross_entropy_forward(logits, labels, xp=xp),
            lambda xp, d, c: (cross_entropy.cross_entropy_backward(d, c, xp=xp),),
            ("logits",),
        ),
    }


EXACTLY_ZERO_OP_GRADIENTS = {("attention", "bk"), ("attention_dropout", "bk")}
# Ops that draw random numbers (dropout masks), for the test that their masks are really drawn.
RANDOM_OPS = {"dropout", "residual_layernorm_dropout", "attention_dropout"}


def _exact_zero(analytic, numeric) -> float:
    """The key-bias check: the analytic gradient is (near) exactly zero and the numeric one is
    rounding noise. Returns EXACT_ZERO, or raises when either is not (or is not finite)."""
    check_exact_zero(analytic, numeric, analytic_atol=1e-10, numeric_atol=1e-7)
    return EXACT_ZERO


def check_op(name, seed=42) -> dict:
    """{input name: rel error} for one op in float64 with a random upstream gradient."""
    rng = np.random.default_rng(seed)
    inputs, forward, backward, diff_names = op_cases(rng)[name]
    out, cache = forward(np, **inputs)
    dout = rng.normal(size=np.shape(out))
    grads = dict(zip(diff_names, backward(np, dout if np.ndim(out) else float(dout), cache)))
    errors = {}
    for arg in diff_names:
        numeric = numerical_gradient(lambda: forward(np, **inputs)[0], inputs[arg], dout)
        if (name, arg) in EXACTLY_ZERO_OP_GRADIENTS:
            errors[arg] = _exact_zero(grads[arg], numeric)
        else:
            errors[arg] = rel_error(grads[arg], numeric)
    return errors


def encoder_inputs(rng, B=2, T=6, config=CHECK_CONFIG):
    """Ids, token types (0 then 1 in row 0) and a mask with two padded positions in row 1."""
    input_ids = rng.integers(5, config.vocab_size, size=(B, T))
    attention_mask = np.ones((B, T), dtype=np.int64)
    attention_mask[1, 4:] = 0
    input_ids[1, 4:] = 0
    token_type_ids = np.zeros((B, T), dtype=np.int64)
    token_type_ids[0, 3:] = 1
    return input_ids, token_type_ids, attention_mask


def hand_batch():
    """Two sequences of 7: [CLS] a b c d e [SEP] and [CLS] f g h [SEP] pad pad, with a two-token span
    in row 0 (positions 2-3, boundaries 1 and 4), a one-token span in row 1 (position 2, boundaries
    1 and 3) and one MLM-only target. Token 9 appears twice, so embedding rows get duplicate updates."""
    input_ids = np.array([[2, 9, 4, 4, 9, 7, 3], [2, 6, 4, 8, 3, 0, 0]])
    attention_mask = (np.arange(7) < np.array([[7], [5]])).astype(np.int64)
    mlm_labels = np.full((2, 7), IGNORE_INDEX)
    mlm_labels[0, 2], mlm_labels[0, 3], mlm_labels[1, 2], mlm_labels[0, 5] = 11, 12, 5, 7
    return SimpleNamespace(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=np.zeros((2, 7), dtype=np.int64),
        mlm_labels=mlm_labels,
        sbo_batch=np.array([0, 0, 1]), sbo_left=np.array([1, 1, 1]), sbo_right=np.array([4, 4, 3]),
        sbo_rel_pos=np.array([0, 1, 0]), sbo_target=np.array([11, 12, 5]),
    )


def _pop_key_biases(errors, grads):
    for name in KEY_BIASES & set(errors):
        errors[name] = _exact_zero(grads[name], np.zeros(1))
    return errors


def check_encoder(seed=0, *, dropout=False) -> dict:
    """Every encoder parameter, against sum(h * dout) for a random dout. Weights are scaled up so
    the model is far from its near-linear initialisation and every path carries signal. With
    ``dropout``, all four dropouts are on (embeddings, attention probabilities, both residuals),
    with the same masks at every evaluation."""
    rng = np.random.default_rng(seed)
    config = DROPOUT_CONFIG if dropout else CHECK_CONFIG
    params = {k: v * 10 if k.endswith(".weight") and "LayerNorm" not in k else v
              for k, v in init_encoder_params(config, rng).items()}
    ids, types, mask = encoder_inputs(rng)
    dout = rng.normal(size=(*ids.shape, config.hidden_size))

    def forward():
        return encoder_forward(params, ids, types, mask, config, xp=np, train=dropout,
                               rng=fixed_dropout_rng() if dropout else None)

    grads = encoder_backward(dout, forward()[1], xp=np)
    errors = check_param_gradients(lambda: np.sum(forward()[0] * dout), params, grads,
                                   max_elements=DROPOUT_MAX_ELEMENTS if dropout else None)
    return _pop_key_biases(errors, grads)


def _head_params(init, rng):
    """Head parameters with non-trivial LayerNorm/bias values and large weights, plus a random E."""
    params = init(CHECK_CONFIG, rng)
    params[WORD_EMBEDDINGS] = rng.normal(size=(CHECK_CONFIG.vocab_size, CHECK_CONFIG.hidden_size))
    return {k: v + 0.3 * rng.normal(size=v.shape) if ("LayerNorm" in k or k.endswith("bias"))
            else v * 20 if v.ndim == 2 and k != WORD_EMBEDDINGS else v
            for k, v in params.items()}


def check_mlm_head(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    params = _head_params(init_mlm_head_params, rng)
    h = rng.normal(size=(2, 5, CHECK_CONFIG.hidden_size))
    positions = np.array([1, 3, 7, 8])
    return _check_vocabulary_head(mlm_head_forward, mlm_head_backward, params, h, positions, rng)


def _check_vocabulary_head(forward, backward, params, h, positions, rng) -> dict:
    """A head h (B, T, H) -> logits at ``positions`` against a random upstream gradient: every
    parameter and the encoder output h (the MLM head and ELECTRA's generator head)."""
    logits, cache = forward(params, h, positions, xp=np)
    dlogits = rng.normal(size=logits.shape)
    dh, grads = backward(dlogits, cache, xp=np)

    def f():
        return forward(params, h, positions, xp=np)[0]

    errors = check_param_gradients(lambda: np.sum(f() * dlogits), params, grads)
    errors["h (encoder output)"] = rel_error(dh, numerical_gradient(f, h, dlogits))
    return errors


def check_sbo_head(seed=1) -> dict:
    rng = np.random.default_rng(seed)
    params = _head_params(init_sbo_head_params, rng)
    h = rng.normal(size=(2, 6, CHECK_CONFIG.hidden_size))
    # three targets share the boundaries 1 and 5: the scatter-add in backward must accumulate them
    left, right, rel = np.array([1, 1, 1, 7]), np.array([5, 5, 5, 10]), np.array([0, 1, 2, 0])
    logits, cache = sbo_head_forward(params, h, left, right, rel, xp=np)
    dlogits = rng.normal(size=logits.shape)
    dh, grads = sbo_head_backward(dlogits, cache, xp=np)

    def f():
        return sbo_head_forward(params, h, left, right, rel, xp=np)[0]

    errors = check_param_gradients(lambda: np.sum(f() * dlogits), params, grads)
    errors["h (encoder output)"] = rel_error(dh, numerical_gradient(f, h, dlogits))
    return errors


def scaled_model_params(seed=0) -> dict:
    """float64 pretraining parameters scaled away from the near-linear initialisation."""
    params = init_pretraining_params(CHECK_CONFIG, seed, xp=np, dtype="float64")
    rng = np.random.default_rng(seed + 100)
    return {k: v * 15 if v.ndim == 2 else v + 0.2 * rng.normal(size=v.shape) for k, v in params.items()}


def check_pretraining_loss(seed=0, *, dropout=False) -> dict:
    """The full loss L = MLM + SBO against every parameter (tied word embedding included); with
    ``dropout``, as in training (every dropout on, the same masks at every evaluation)."""
    params = scaled_model_params(seed)
    batch = hand_batch()
    config = DROPOUT_CONFIG if dropout else CHECK_CONFIG

    def forward():
        return pretraining_forward(params, batch, config, xp=np, train=dropout,
                                   rng=fixed_dropout_rng() if dropout else None)

    grads = pretraining_backward(forward()[1], xp=np)
    errors = check_param_gradients(lambda: float(forward()[0].loss), params, grads,
                                   max_elements=DROPOUT_MAX_ELEMENTS if dropout else None)
    return _pop_key_biases(errors, grads)


# The BERT family's encoders (config.py): RoBERTa's positions and padding_idx rows, ALBERT's E < H
# projection, gelu_new and shared layers (L2/G1/K2: applications (0,0),(0,1),(0,0),(0,1), so each
# weight is used twice), ELECTRA's embeddings_project.
FAMILY_CHECK_CONFIGS = {
    "roberta": CHECK_CONFIG.replace(model_type="roberta", pad_token_id=1, type_vocab_size=1,
                                    max_position_embeddings=10, layer_norm_eps=1e-5),
    "albert": CHECK_CONFIG.replace(model_type="albert", hidden_act="gelu_new", embedding_size=6, num_hidden_layers=2,
                                   num_hidden_groups=1, inner_group_num=2),
    "electra": CHECK_CONFIG.replace(model_type="electra", embedding_size=6),
}
def check_family_encoder(model_type, *, dropout=False, seed=0) -> dict:
    """Every parameter of one family encoder against sum(h * dout), dout zero at padded positions
    (a pad row's lookup gradient is dropped by the padding_idx rule, and only padded positions
    read it). With ``dropout`` every dropout is on with fixed masks (``fixed_dropout_rng``)."""
    config = FAMILY_CHECK_CONFIGS[model_type]
    if dropout:
        config = config.replace(hidden_dropout_prob=DROPOUT_P, attention_probs_dropout_prob=DROPOUT_P)
    rng = np.random.default_rng(seed)
    # Layer weights 10x and the E -> H projection 25x (std 0.5, so h_0 is O(1) and attention is far
    # from uniform: otherwise the query gradients are ~1e-5 and drown in difference noise).
    params = {k: v * 25 if k.endswith(".weight") and v.ndim == 2 and ("mapping_in" in k or "project" in k) else
              v * 10 if k.endswith(".weight") and v.ndim == 2 and "embeddings." not in k else
              v + 0.2 * rng.normal(size=v.shape) if v.ndim == 1 else v
              for k, v in init_encoder_params(config, rng).items()}
    ids, types, mask = encoder_inputs(rng, config=config)
    if config.pad_token_id is not None:
        ids[mask == 0] = config.pad_token_id
    types = np.minimum(types, config.type_vocab_size - 1)
    dout = rng.normal(size=(*ids.shape, config.hidden_size)) * mask[..., None]

    def forward():
        return encoder_forward(params, ids, types, mask, config, xp=np, train=dropout,
                               rng=fixed_dropout_rng() if dropout else None)

    _, cache = forward()
    grads = encoder_backward(dout, cache, xp=np)
    errors = check_param_gradients(lambda: np.sum(forward()[0] * dout), params, grads,
                                   max_elements=DROPOUT_MAX_ELEMENTS if dropout else None)
    for name in key_bias_names(config):
        errors[name] = _exact_zero(grads[name], np.zeros(1))
    return errors


# ELECTRA (model/electra.py): the discriminator head, the generator head, the whole loss
# L_MLM + 50 L_Disc with the generator's samples held fixed, and the shared embeddings' gradient
# as the sum of the generator's and the discriminator's parts. E = 6 differs from both H_D = 8 and
# H_G = 4, so each network has its own embeddings_project.
ELECTRA_CHECK_CONFIG = FAMILY_CHECK_CONFIGS["electra"].replace(num_hidden_layers=1)
ELECTRA_GENERATOR_SIZE = 0.5


def electra_check_setup(seed=0):
    """(params, batch, corrupt_ids, config, gen_config): scaled float64 parameters and a hand-made
    batch whose fixed discriminator input has a replaced token and a sample equal to the original
    in each row, both segment ids, and two padded positions."""
    config = ELECTRA_CHECK_CONFIG
    gen_config = generator_config(config, ELECTRA_GENERATOR_SIZE)
    rng = np.random.default_rng(seed + 100)
    params = {k: v * (40 if "embeddings_project" in k else 10) if v.ndim == 2 and not k.startswith(ELECTRA_SHARED) else
              v + 0.2 * rng.normal(size=v.shape) if v.ndim == 1 else v
              for k, v in init_electra_params(config, gen_config, seed, xp=np, dtype="float64").items()}
    original = np.array([[2, 9, 6, 7, 9, 8, 3], [2, 6, 11, 5, 3, 0, 0]])
    attention_mask = (original != 0).astype(np.int64)
    mlm_labels = np.full((2, 7), IGNORE_INDEX)
    targets = ([0, 0, 1, 1], [2, 4, 2, 3])
    mlm_labels[targets] = original[targets]
    input_ids = original.copy()
    input_ids[([0, 0, 1], [2, 4, 2])] = 4  # [MASK]; (1, 3) is a target the generator sees unmasked
    keys = np.zeros((2, 7), dtype=np.uint64)
    keys[targets] = [11, 12, 13, 14]
    batch = ElectraBatch(original_ids=original, input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=np.array([[0, 0, 0, 0, 1, 1, 1], [0] * 7]), mlm_labels=mlm_labels,
                         sample_keys=keys)
    corrupt = original.copy()
    corrupt[targets] = [12, 9, 11, 10]  # replaced, equal to the original (label 0), equal, replaced
    return params, batch, corrupt, config, gen_config


def _electra_key_biases(errors, grads, config, gen_config):
    for name in key_bias_names(config) | {ELECTRA_GENERATOR + n for n in key_bias_names(gen_config)}:
        errors[name] = _exact_zero(grads[name], np.zeros(1))
    return errors


def check_electra_discriminator_head(seed=3) -> dict:
    rng = np.random.default_rng(seed)
    params = {k: v * 20 if v.ndim == 2 else v + 0.3 * rng.normal(size=v.shape)
              for k, v in init_discriminator_head_params(ELECTRA_CHECK_CONFIG, rng).items()}
    h = rng.normal(size=(2, 5, ELECTRA_CHECK_CONFIG.hidden_size))
    z, cache = discriminator_head_forward(params, h, xp=np)
    dz = rng.normal(size=z.shape)
    dh, grads = discriminator_head_backward(dz, cache, xp=np)

    def f():
        return discriminator_head_forward(params, h, xp=np)[0]

    errors = check_param_gradients(lambda: np.sum(f() * dz), params, grads)
    errors["h (encoder output)"] = rel_error(dh, numerical_gradient(f, h, dz))
    return errors


def check_electra_generator_head(seed=4) -> dict:
    gen_config = generator_config(ELECTRA_CHECK_CONFIG, ELECTRA_GENERATOR_SIZE)
    rng = np.random.default_rng(seed)
    params = {k: v * 20 if v.ndim == 2 else v + 0.3 * rng.normal(size=v.shape)
              for k, v in init_generator_head_params(gen_config, rng).items()}
    params[ELECTRA_WORD_EMBEDDINGS] = rng.normal(size=(gen_config.vocab_size, gen_config.embedding_width))
    h = rng.normal(size=(2, 5, gen_config.hidden_size))
    positions = np.array([1, 3, 7, 8])
    return _check_vocabulary_head(generator_head_forward, generator_head_backward, params, h, positions, rng)


def check_electra_loss(seed=0, *, dropout=False) -> dict:
    """L = L_MLM + 50 L_Disc against every parameter of both networks, the samples held fixed;
    with ``dropout``, as in training (both networks' dropout on, the same masks at every evaluation).
    L ~ 35 is dominated by 50 L_Disc while the generator's own gradients are ~1e-4, so without
    dropout the step is h = 3e-5: the rounding noise eps L / h falls 3x below that of h = 1e-5
    (worst error 2.8e-7 instead of 5.7e-7, the generator's query bias). With dropout the masks'
    1/(1-p) scaling makes the truncation error of h = 3e-5 dominate (2.3e-6 on the word table), so
    it keeps h = 1e-5 (worst 2.6e-7 on a sample of 24 elements per tensor)."""
    params, batch, corrupt, config, gen_config = electra_check_setup(seed)
    if dropout:
        config, gen_config = (c.replace(hidden_dropout_prob=DROPOUT_P, attention_probs_dropout_prob=DROPOUT_P)
                              for c in (config, gen_config))

    def forward():
        return electra_forward(params, batch, config, gen_config, xp=np, corrupt_ids=corrupt, train=dropout,
                               rng=fixed_dropout_rng() if dropout else None)

    _, cache = forward()
    grads = electra_backward(cache, xp=np)
    errors = check_param_gradients(lambda: float(forward()[0].loss), params, grads, h=1e-5 if dropout else 3e-5,
                                   max_elements=DROPOUT_MAX_ELEMENTS if dropout else None)
    return _electra_key_biases(errors, grads, config, gen_config)


def check_electra_shared_embeddings(seed=0) -> dict:
    """The shared tensors' analytic gradient of L against the SUM of two separate numerical
    gradients: of L_MLM (the generator alone) and of 50 L_Disc (the discriminator alone)."""
    params, batch, corrupt, config, gen_config = electra_check_setup(seed)

    def term(name):
        return lambda: float(getattr(electra_forward(params, batch, config, gen_config, xp=np, corrupt_ids=corrupt)[0], name))

    _, cache = electra_forward(params, batch, config, gen_config, xp=np, corrupt_ids=corrupt)
    grads = electra_backward(cache, xp=np)
    errors = {}
    for name in (n for n in params if n.startswith(ELECTRA_SHARED)):
        generator_part = numerical_gradient(term("mlm_loss"), params[name])
        discriminator_part = DISC_WEIGHT * numerical_gradient(term("disc_loss"), params[name])
        errors[name + " = G + D"] = rel_error(grads[name], generator_part + discriminator_part)
    return errors


def family_pair_batch(model_type="bert"):
    """Two sequences of 7, ``[CLS] A [SEP] B [SEP]`` (types 0 then 1) and a shorter padded one, with
    MLM targets in both rows (token 9 twice: duplicate embedding updates) and sentence labels 0, 1.
    RoBERTa's version uses its ids (<s> 0, <pad> 1, </s> 2) and one token type."""
    cls, pad, sep = (0, 1, 2) if model_type == "roberta" else (2, 0, 3)
    input_ids = np.array([[cls, 9, 4, sep, 4, 9, sep], [cls, 6, sep, 4, sep, pad, pad]])
    attention_mask = (np.arange(7) < np.array([[7], [5]])).astype(np.int64)
    token_type_ids = np.array([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]])
    if model_type == "roberta":
        token_type_ids[:] = 0
    mlm_labels = np.full((2, 7), IGNORE_INDEX)
    mlm_labels[0, 2], mlm_labels[0, 4], mlm_labels[1, 3], mlm_labels[0, 5] = 11, 12, 5, 9
    return SimpleNamespace(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           mlm_labels=mlm_labels, sentence_labels=np.array([0, 1]))


def check_family_loss(objective, *, dropout=False, seed=0) -> dict:
    """The whole pretraining loss of BERT (MLM + NSP), RoBERTa (MLM) or ALBERT (MLM + SOP, shared
    layers, E < H) against every parameter, the tied word table included (model/bert_nsp.py)."""
    from minispanbert.family.albert import AlbertForPretraining
    from minispanbert.family.bert import BertForPretraining
    from minispanbert.family.roberta import RobertaForMaskedLM

    model_class, config = {"bert": (BertForPretraining, CHECK_CONFIG),
                           "roberta": (RobertaForMaskedLM, FAMILY_CHECK_CONFIGS["roberta"]),
                           "albert": (AlbertForPretraining, FAMILY_CHECK_CONFIGS["albert"])}[objective]
    if dropout:
        config = config.replace(hidden_dropout_prob=DROPOUT_P, attention_probs_dropout_prob=DROPOUT_P)
    model = model_class.initialise(config, seed=seed, xp=np, dtype="float64")
    rng = np.random.default_rng(seed + 100)
    for name, value in model.params.items():
        value *= 25 if ("mapping_in" in name and value.ndim == 2) else 10 if value.ndim == 2 else 1
        if value.ndim == 1:
            value += 0.2 * rng.normal(size=value.shape)
    batch = family_pair_batch(config.model_type)

    def forward():
        return model.forward(batch, train=dropout, rng=fixed_dropout_rng() if dropout else None)

    grads = model.backward(forward()[1])
    errors = check_param_gradients(lambda: float(forward()[0].loss), model.params, grads,
                                   max_elements=DROPOUT_MAX_ELEMENTS if dropout else None)
    for name in key_bias_names(config):
        errors[name] = _exact_zero(grads[name], np.zeros(1))
    return errors


MODEL_CHECKS = {
    "encoder": check_encoder,
    "encoder_dropout": lambda: check_encoder(dropout=True),
    **{f"encoder_{t}{'_dropout' if d else ''}": (lambda t=t, d=d: check_family_encoder(t, dropout=d))
       for t in FAMILY_CHECK_CONFIGS for d in (False, True)},
    "mlm_head": check_mlm_head,
    "sbo_head": check_sbo_head,
    "pretraining_loss": check_pretraining_loss,
    "pretraining_loss_dropout": lambda: check_pretraining_loss(dropout=True),
    **{f"{o}_loss{'_dropout' if d else ''}": (lambda o=o, d=d: check_family_loss(o, dropout=d))
       for o in ("bert", "roberta", "albert") for d in (False, True)},
    "electra_discriminator_head": check_electra_discriminator_head,
    "electra_generator_head": check_electra_generator_head,
    "electra_loss": check_electra_loss,
    "electra_loss_dropout": lambda: check_electra_loss(dropout=True),
    "electra_shared_embeddings": check_electra_shared_embeddings,
}


def report_rows():
    """(group, worst tensor, worst rel error, tolerance) for every op and model check, each as soon
    as it is done."""
    for name in op_cases(np.random.default_rng(0)):
        worst, err = worst_error(check_op(name))
        yield f"op {name}", worst, err, OP_TOLERANCE
    for name, check in MODEL_CHECKS.items():
        errors = check()
        worst, err = worst_error(errors)
        yield f"model {name} ({len(errors)} tensors)", worst, err, model_tolerance(name)


def report() -> list[tuple[str, str, float, float]]:
    return list(report_rows())


def model_tolerance(name: str) -> float:
    """A head is a few ops deep (OP_TOLERANCE); a whole model accumulates more rounding."""
    return OP_TOLERANCE if name.endswith("head") else MODEL_TOLERANCE


def passed(err: float, tol: float) -> bool:
    """``err < tol`` and finite: a NaN or an infinity never passes (``nan >= tol`` is False too)."""
    return bool(np.isfinite(err) and err < tol)


def main(argv=None) -> None:
    Parser("python -m minispanbert.check_gradients", __doc__).parse_args(argv)
    print(f"{'check':<44} {'worst tensor':<52} {'rel error':>9}  {'tolerance':>9}", flush=True)
    rows, started = [], time.perf_counter()
    try:
        for group, worst, err, tol in report_rows():  # each row as soon as its check is done
            print(f"{group:<44} {worst:<52} {err:9.1e}  {tol:9.0e}  {'ok' if passed(err, tol) else 'FAIL'}", flush=True)
            rows.append((group, worst, err, tol))
    except AssertionError as exc:  # an exactly-zero gradient that is not (or is NaN)
        raise SystemExit(f"error: gradient check failed: {str(exc).splitlines()[0]}") from None
    failed = [r for r in rows if not passed(r[2], r[3])]
    if failed:
        raise SystemExit(f"error: {len(failed)} gradient check(s) above tolerance or not finite")
    print(f"{len(rows)} checks passed in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
