"""Known wrong variants of the graded functions, each with the sentence that names its misconception.

A variant stands in for one graded function while the tests it changes run on the solution at build
time (:func:`record_variants`): every graded value that then differs from the reference is stored as
``"<test>/<what>@<variant>"`` with the sentence under ``"...#why"``. When grading, a failing value
equal to one of them gets that sentence (harness.judge). Only the recorded outputs reach the
autograder's judging; this module stays out of the student copy (workflow.write_local_checks), and
so do the variants' outputs.

A variant is ``wrong(original) -> function``: given the solution's function, the function a
student who holds the misconception would have written (same signature).
"""
from __future__ import annotations

import importlib
import math
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .harness import Check, Fail, matches


@dataclass(frozen=True)
class Misconception:
    name: str  # the key's variant part
    function: str  # "module:function" the variant replaces
    tests: tuple  # the graded tests whose values it changes
    why: str  # what the student reads
    wrong: Callable


MISCONCEPTIONS: dict[str, list[Misconception]] = {"a1": [], "a2": [], "a3": []}


def wrong_variant(assignment: str, name: str, function: str, tests, why: str):
    """Decorator: register ``wrong(original)`` as the variant ``name`` of ``function`` for ``assignment``."""
    def register(wrong):
        MISCONCEPTIONS[assignment].append(Misconception(name, function, tuple(tests), why, wrong))
        return wrong
    return register


# --- A1 ------------------------------------------------------------------------------------------------
LINEAR, LAYERNORM, GELU = "minispanbert.layers.linear:", "minispanbert.layers.layernorm:", "minispanbert.layers.gelu:"
SOFTMAX, ATTENTION = "minispanbert.layers.softmax:", "minispanbert.layers.attention:"
CROSS_ENTROPY = "minispanbert.layers.cross_entropy:"


@wrong_variant("a1", "dweight-transposed", LINEAR + "linear_backward",
               ["linear_backward", "attention_backward", "attention_dropout_backward"],
               "a weight gradient computed as x^T dy is the transpose of the gradient: W is stored (OUT, IN) like "
               "torch.nn.Linear, so dW = dy^T x, summed over the leading positions, has W's shape (OUT, IN).")
def _dweight_transposed(original):
    def linear_backward(dy, cache, *, xp):
        dx, dweight, dbias = original(dy, cache, xp=xp)
        return dx, dweight.T, dbias
    return linear_backward


def _layernorm(x, gamma, beta, *, eps, ddof=0, eps_outside=False):
    centred = x - x.mean(axis=-1, keepdims=True)
    var = (centred * centred).sum(axis=-1, keepdims=True) / (x.shape[-1] - ddof)
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return centred / std * gamma + beta


@wrong_variant("a1", "unbiased-variance", LAYERNORM + "layernorm_forward", ["layernorm_forward"],
               "this is LayerNorm with the unbiased variance (dividing by H - 1, np.var(ddof=1) or torch.var's "
               "default): LayerNorm normalises with the biased variance mean((x - mu)^2), dividing by H.")
def _unbiased_variance(original):
    def layernorm_forward(x, gamma, beta, *, xp, eps=1e-12):
        return _layernorm(x, gamma, beta, eps=eps, ddof=1), original(x, gamma, beta, xp=xp, eps=eps)[1]
    return layernorm_forward


@wrong_variant("a1", "eps-outside-sqrt", LAYERNORM + "layernorm_forward", ["layernorm_forward"],
               "this is (x - mu) / (sqrt(var) + eps): eps belongs inside the square root, 1 / sqrt(var + eps).")
def _eps_outside_sqrt(original):
    def layernorm_forward(x, gamma, beta, *, xp, eps=1e-12):
        return _layernorm(x, gamma, beta, eps=eps, eps_outside=True), original(x, gamma, beta, xp=xp, eps=eps)[1]
    return layernorm_forward


@wrong_variant("a1", "no-mean-term", LAYERNORM + "layernorm_backward",
               ["layernorm_backward_input", "layernorm_backward_3d"],
               "this dx has the variance term but not the mean term: mu depends on every x of the row, so "
               "subtract mean(g) over the row as well, dx = rstd (g - mean(g) - xhat mean(g xhat)).")
def _no_mean_term(original):
    def layernorm_backward(dy, cache, *, xp):
        xhat, rstd, gamma = cache
        g = dy * gamma
        dx = rstd * (g - xhat * (g * xhat).mean(axis=-1, keepdims=True))
        return (dx, *original(dy, cache, xp=xp)[1:])
    return layernorm_backward


@wrong_variant("a1", "tanh-gelu", GELU + "gelu_forward", ["gelu_forward"],
               "this is the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2's gelu_new): "
               "BERT's GeLU is the exact x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2.")
def _tanh_gelu(original):
    def gelu_forward(x, *, xp):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))), original(x, xp=xp)[1]
    return gelu_forward


@wrong_variant("a1", "pdf-without-x", GELU + "gelu_backward", ["gelu_backward"],
               "this is dy (Phi(x) + phi(x)): the product rule on x Phi(x) gives Phi(x) + x phi(x); the second "
               "term keeps its factor x.")
def _pdf_without_x(original):
    def gelu_backward(dy, cache, *, xp):
        x, cdf = cache
        return dy * (cdf + np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi))
    return gelu_backward


@wrong_variant("a1", "no-max-shift", SOFTMAX + "softmax_forward", ["softmax_forward"],
               "this is exp(x) / sum(exp(x)) without the max shift: exp overflows to inf (or underflows to 0) "
               "at large logits and inf / inf = nan; subtract each row's max first (softmax(x - c) = softmax(x)).")
def _no_max_shift(original):
    def softmax_forward(x, *, xp):
        y = np.exp(x)
        y = y / y.sum(axis=-1, keepdims=True)
        return y, y
    return softmax_forward


@wrong_variant("a1", "elementwise-softmax-backward", SOFTMAX + "softmax_backward", ["softmax_backward"],
               "this is dx = y * dy, the softmax treated as elementwise (only the Jacobian's diagonal): every "
               "output depends on every input of its row, dx = y * (dy - sum_j y_j dy_j).")
def _elementwise_softmax_backward(original):
    def softmax_backward(dy, cache, *, xp):
        return cache * dy
    return softmax_backward


@wrong_variant("a1", "no-attention-scale", ATTENTION + "self_attention_forward",
               ["attention_forward", "attention_dropout_forward"],
               "these are the outputs of attention without the 1 / sqrt(D) scale: scores = Q K^T / sqrt(D), with "
               "D = hidden / num_heads the size of one head.")
def _no_attention_scale(original):
    def self_attention_forward(x, wq, bq, *args, num_heads, **kwargs):
        root = math.sqrt(x.shape[-1] // num_heads)  # Q scaled by sqrt(D) cancels the 1 / sqrt(D)
        return original(x, wq * root, bq * root, *args, num_heads=num_heads, **kwargs)
    return self_attention_forward


@wrong_variant("a1", "summed-cross-entropy", CROSS_ENTROPY + "cross_entropy_forward", ["cross_entropy_forward"],
               "this is the sum of the rows' losses: the loss is their mean over the counted rows (labels != "
               "ignore_index), so divide by that count.")
def _summed_cross_entropy(original):
    def cross_entropy_forward(logits, labels, *, xp, ignore_index=-100):
        loss, cache = original(logits, labels, xp=xp, ignore_index=ignore_index)
        return loss * cache[-1], cache
    return cross_entropy_forward


@wrong_variant("a1", "cross-entropy-over-all-rows", CROSS_ENTROPY + "cross_entropy_forward",
               ["cross_entropy_forward"],
               "this is the counted rows' summed loss divided by ALL rows: a row whose label is ignore_index "
               "counts neither in the sum nor in the divisor.")
def _cross_entropy_over_all_rows(original):
    def cross_entropy_forward(logits, labels, *, xp, ignore_index=-100):
        loss, cache = original(logits, labels, xp=xp, ignore_index=ignore_index)
        return loss * cache[-1] / logits.shape[0], cache
    return cross_entropy_forward


# --- A2 ------------------------------------------------------------------------------------------------
MASKING = "minispanbert.masking:"


@wrong_variant("a2", "clipped-geometric", MASKING + "span_length_pmf", ["span_length_pmf"],
               "this is the clipped geometric (the tail beyond upper piled onto the longest length): the "
               "truncated geometric renormalises w_L = p (1 - p)^(L - lower) over lower..upper.")
def _clipped_geometric(original):
    def span_length_pmf(p, lower, upper):
        weights = p * (1.0 - p) ** np.arange(upper - lower + 1, dtype=np.float64)
        weights[-1] = (1.0 - p) ** (upper - lower)
        return weights
    return span_length_pmf


@wrong_variant("a2", "boundaries-inside-span", MASKING + "_sbo_targets", ["sbo_targets"],
               "these are the span's own first and last tokens x_s and x_e: the boundaries are the tokens just "
               "outside it, x_{s-1} and x_{e+1} (which are not masked, so the head can read them).")
def _boundaries_inside_span(original):
    def _sbo_targets(starts, ends, n, max_pair_targets):
        left, right, rel_pos, position = original(starts, ends, n, max_pair_targets)
        return left + 1, right - 1, rel_pos, position
    return _sbo_targets


# --- A3 ------------------------------------------------------------------------------------------------
OPTIM, SQUAD = "minispanbert.optim:", "minispanbert.finetune.squad:"
ADAMW_TESTS = ["adamw_update", "adamw_eps_and_betas", "adamw_decay_mask"]


def _adamw(bias_correction=True, eps_inside=False, ignore_mask=False):
    """adamw_update with one of three mistakes."""
    def adamw_update(params, grads, state, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decay_mask, xp):
        beta1, beta2 = betas
        state.t += 1
        for name, w in params.items():
            g, m, v = grads[name], state.m[name], state.v[name]
            w *= 1.0 - lr * (weight_decay if ignore_mask or decay_mask is None or decay_mask[name] else 0.0)
            m[...] = beta1 * m + (1.0 - beta1) * g
            v[...] = beta2 * v + (1.0 - beta2) * g * g
            m_hat = m / (1.0 - beta1**state.t) if bias_correction else m
            v_hat = v / (1.0 - beta2**state.t) if bias_correction else v
            w -= lr * m_hat / (np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps)
    return adamw_update


wrong_variant("a3", "no-bias-correction", OPTIM + "adamw_update", ADAMW_TESTS,
              "these are AdamW steps without the bias correction: m and v start at 0, so divide them by "
              "1 - beta1^t and 1 - beta2^t (m_hat, v_hat) before the step.")(lambda original: _adamw(bias_correction=False))
wrong_variant("a3", "eps-inside-sqrt", OPTIM + "adamw_update", ADAMW_TESTS,
              "these are AdamW steps with eps inside the square root, sqrt(v_hat + eps): AdamW adds it outside, "
              "m_hat / (sqrt(v_hat) + eps).")(lambda original: _adamw(eps_inside=True))
wrong_variant("a3", "decay-ignores-mask", OPTIM + "adamw_update", ["adamw_decay_mask"],
              "this parameter was decayed although its decay_mask entry is False: biases and LayerNorm "
              "parameters get no weight decay in BERT's recipe, only their Adam step.")(
    lambda original: _adamw(ignore_mask=True))


@wrong_variant("a3", "clip-per-tensor", OPTIM + "clip_grad_norm", ["clip_grad_norm"],
               "this gradient was clipped to max_norm on its own: clipping uses ONE norm over all gradients "
               "together and scales every gradient by the same factor, keeping the update's direction.")
def _clip_per_tensor(original):
    def clip_grad_norm(grads, max_norm, *, xp):
        total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
        for g in grads.values():
            g *= min(max_norm / (math.sqrt(float(np.vdot(g, g))) + 1e-6), 1.0)
        return np.asarray(total)
    return clip_grad_norm


@wrong_variant("a3", "f1-over-sets", SQUAD + "f1_score", ["f1_score"],
               "these are F1 scores over SETS of words: shared words count with multiplicity, min of their "
               "counts on the two sides (collections.Counter's &).")
def _f1_over_sets(original):
    from minispanbert.finetune.squad import normalize_answer

    def f1_score(prediction, ground_truth):
        predicted, truth = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
        same = len(set(predicted) & set(truth))
        if same == 0:
            return 0.0
        precision, recall = same / len(predicted), same / len(truth)
        return 2 * precision * recall / (precision + recall)
    return f1_score


# --- recording ---------------------------------------------------------------------------------------------
class VariantCheck(Check):
    """A graded test's view while a variant stands in: each graded value the variant changes is stored
    under its variant key; nothing is judged (the forward values a backward asks about are compared
    with the references, as when grading)."""

    def __init__(self, test_name: str, refs: dict, variant: Misconception):
        super().__init__(test_name, refs, record=False)
        self.variant = variant

    def _keep(self, what: str, value, rtol: float | None) -> None:
        key = f"{self.name}/{what}"
        if key not in self.refs:
            return
        value = np.array(value)
        if not matches(value, self.refs[key], rtol):
            self.refs[f"{key}@{self.variant.name}"] = value
            self.refs[f"{key}@{self.variant.name}#why"] = np.array(self.variant.why)

    def close(self, what, value, *, rtol=1e-7, hint=""):
        self._keep(what, value, float(self.refs.get(f"{self.name}/{what}#rtol", rtol)))

    def equal(self, what, value, *, hint=""):
        self._keep(what, value, None)

    def agrees(self, what, value, *, rtol=1e-7):
        try:
            Check.close(self, what, value, rtol=rtol)
        except Fail:
            return False
        return True

    def close_if(self, forward_agrees, what, value, *, rtol=1e-7, hint=""):
        if forward_agrees:
            self.close(what, value, rtol=rtol)

    def derivative(self, what, analytic, f, x, dout=None, *, forward_agrees, rtol=1e-7, tol=1e-6, hint=""):
        if forward_agrees:
            self.close(what, analytic, rtol=rtol)

    def gradient(self, *args, **kwargs):
        pass

    def within(self, *args, **kwargs):
        pass


def record_variants(assignment: str, tests: dict, refs: dict) -> None:
    """Run each variant of ``assignment`` (a checks module's name) on the tests it lists, adding the
    values it changes to ``refs``. A variant's run ends quietly where the test would fail it."""
    for variant in MISCONCEPTIONS.get(assignment, []):
        module_name, function = variant.function.split(":")
        original = getattr(importlib.import_module(module_name), function)
        holders = [module for name, module in list(sys.modules.items())
                   if name.startswith("minispanbert.") and getattr(module, function, None) is original]
        wrong = variant.wrong(original)
        for module in holders:  # wherever the package holds it, as a submission's mistake would be
            setattr(module, function, wrong)
        try:
            for name in variant.tests:
                with np.errstate(all="ignore"):
                    try:
                        tests[name](VariantCheck(name, refs, variant))
                    except Fail:
                        pass
        finally:
            for module in holders:
                setattr(module, function, original)
