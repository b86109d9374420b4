"""Every graded argument matters (issue 24, item 3): mistakes that only show when an argument takes a
non-default value (eps, dropout, sbo_weight, term_scales, ignore_index, betas, span lengths in words,
repeated words, the no-decay name forms), mistakes in a forward that must cost that forward's points
only, and correct variants the task text allows. Each planted mistake must lose points on exactly
the tests listed with it (with partial credit, part of a test's points where some of its values still
match), and each correct variant none. An assignment's submissions are graded
two at a time (each grading is a process of its own), about a second each.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from test_coursework import failed, solution_submission

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework.grade import grade

LN, SM, ATT = "minispanbert/layers/layernorm.py", "minispanbert/layers/softmax.py", "minispanbert/layers/attention.py"
CE, MASKING = "minispanbert/layers/cross_entropy.py", "minispanbert/masking.py"
SBO, LOSS = "minispanbert/model/sbo_head.py", "minispanbert/model/spanbert_loss.py"
OPTIM, QA, SQUAD = "minispanbert/optim.py", "minispanbert/finetune/qa_head.py", "minispanbert/finetune/squad.py"

# name -> (file, solution text, planted text, the tests that must fail; every other test must pass)
MISTAKES = {"A1": {
    "eps ignored (BERT's 1e-12 hard-coded)": (LN, "rstd = 1.0 / xp.sqrt(var + eps)", "rstd = 1.0 / xp.sqrt(var + 1e-12)",
                                             {"layernorm_forward"}),
    "eps outside the square root": (LN, "rstd = 1.0 / xp.sqrt(var + eps)", "rstd = 1.0 / (xp.sqrt(var) + eps)",
                                    {"layernorm_forward"}),
    "softmax shifted by the max of the whole array": (SM, "y = x - x.max(axis=-1, keepdims=True)", "y = x - x.max()",
                                                      {"softmax_forward"}),
    "attention dropout never applied (train and rng not passed on)": (
        ATT, "dropout_forward(probs, dropout_p, rng, xp=xp, train=train)", "dropout_forward(probs, dropout_p, rng, xp=xp, train=False)",
        {"attention_dropout_forward"}),
    "attention dropout on the scores, before the softmax": (
        ATT, "    probs, softmax_cache = softmax.softmax_forward(scores, xp=xp)\n"
             "    dropped, dropout_cache = dropout_forward(probs, dropout_p, rng, xp=xp, train=train)\n",
        "    scores, dropout_cache = dropout_forward(scores, dropout_p, rng, xp=xp, train=train)\n"
        "    probs, softmax_cache = softmax.softmax_forward(scores, xp=xp)\n    dropped = probs\n",
        {"attention_dropout_forward", "attention_dropout_backward"}),
    "attention backward skips the dropout mask": (
        ATT, "dprobs = dropout_backward(ddropped, dropout_cache, xp=xp)", "dprobs = ddropped", {"attention_dropout_backward"}),
    "attention backward uses the softmax output, not the dropped weights, for dV": (
        ATT, "dvh = dropped.transpose(0, 1, 3, 2) @ dcontext_h", "dvh = softmax_cache.transpose(0, 1, 3, 2) @ dcontext_h",
        {"attention_dropout_backward"}),
    "ignore_index compared with the constant -100": (CE, "keep = labels != ignore_index", "keep = labels != IGNORE_INDEX",
                                                     {"cross_entropy_forward"}),
    # forward mistakes whose backward is right (or the true derivative of the forward): charged once
    "LayerNorm forward shifts before it scales, (xhat + beta) * gamma": (
        LN, "    y = xhat * gamma\n    y += beta\n", "    y = (xhat + beta) * gamma\n", {"layernorm_forward"}),
}, "A2": {
    "whole-word masking (one word per span)": (
        MASKING, "last_word = min(anchor_word + lengths[used] - 1, next_barrier[anchor_word] - 1)", "last_word = anchor_word",
        {"span_masking_whole_words"}),
    "every span takes the first length": (
        MASKING, "last_word = min(anchor_word + lengths[used] - 1, next_barrier[anchor_word] - 1)",
        "last_word = min(anchor_word + lengths[0] - 1, next_barrier[anchor_word] - 1)", {"span_masking_whole_words"}),
    "SBO head ignores eps": (SBO, "h1, cache0 = transform_forward(h0, *_mlp_params(params, 0), xp=xp, eps=eps)",
                             "h1, cache0 = transform_forward(h0, *_mlp_params(params, 0), xp=xp)",
                             {"sbo_head_forward", "pretraining_loss"}),  # the backward tests judge its own forward
    "SBO head reads the position table one row off (forward and backward alike)": (
        SBO, "h0 = xp.concatenate([flat[left], flat[right], params[POSITIONS][rel_pos]], axis=1)",
        "rel_pos = (rel_pos + 1) % params[POSITIONS].shape[0]\n"
        "    h0 = xp.concatenate([flat[left], flat[right], params[POSITIONS][rel_pos]], axis=1)",
        {"sbo_head_forward", "pretraining_loss", "sbo_head_backward_sparsity"}),
    "encoder dropout never applied in pretraining": (
        LOSS, "config, xp=xp, train=train, rng=rng)", "config, xp=xp)", {"pretraining_loss"}),
    "sbo_count reported as the MLM count": (
        LOSS, "mlm_count=int(mlm_positions.size), sbo_correct=sbo_correct, sbo_count=sbo_count)",
        "mlm_count=int(mlm_positions.size), sbo_correct=sbo_correct, sbo_count=int(mlm_positions.size))",
        {"pretraining_loss"}),
    "term_scales ignored": (LOSS, "scales = {\"mlm\": 1.0, \"sbo\": 1.0, **(term_scales or {})}",
                            "scales = {\"mlm\": 1.0, \"sbo\": 1.0}", {"pretraining_gradients_scaled"}),
    "sbo_weight missing from the SBO upstream gradient": (
        LOSS, "cross_entropy_backward(scales[\"sbo\"] * sbo_weight, sbo_ce_cache, xp=xp)",
        "cross_entropy_backward(scales[\"sbo\"], sbo_ce_cache, xp=xp)", {"pretraining_gradients_scaled"}),
    "MLM and SBO term scales swapped": (
        LOSS, "cross_entropy_backward(scales[\"mlm\"], mlm_ce_cache, xp=xp)",
        "cross_entropy_backward(scales[\"sbo\"], mlm_ce_cache, xp=xp)", {"pretraining_gradients_scaled"}),
}, "A3": {
    "AdamW eps inside the square root": (OPTIM, "w -= lr * m_hat / (xp.sqrt(v_hat) + eps)",
                                         "w -= lr * m_hat / xp.sqrt(v_hat + eps)",
                                         {"adamw_update", "adamw_decay_mask", "adamw_eps_and_betas"}),
    "AdamW eps before the bias correction (fairseq's Adam)": (
        OPTIM, "w -= lr * m_hat / (xp.sqrt(v_hat) + eps)",
        "w -= lr * m_hat / ((xp.sqrt(v) + eps) / math.sqrt(1.0 - beta2**state.t))",
        {"adamw_update", "adamw_decay_mask", "adamw_eps_and_betas"}),  # visible at eps 1e-8 too, at step 1
    "AdamW betas hard-coded": (OPTIM, "    beta1, beta2 = betas\n", "    beta1, beta2 = 0.9, 0.999\n",
                               {"adamw_eps_and_betas"}),
    "no-decay rule knows only BERT's LayerNorm spelling": (
        OPTIM, 'or "LayerNorm" in name or "layer_norm" in name)', 'or "LayerNorm" in name)', {"no_decay_mask"}),
    "no-decay rule matches .layer_norm. only (misses ALBERT's full_layer_layer_norm)": (
        OPTIM, 'or "LayerNorm" in name or "layer_norm" in name)', 'or "LayerNorm" in name or ".layer_norm." in name)',
        {"no_decay_mask"}),
    "clipping returns the norm after clipping": (
        OPTIM, "    return xp.asarray(total_norm)\n", "    return xp.asarray(total_norm * xp.minimum(clip_coef, 1.0))\n",
        {"clip_grad_norm"}),
    "clipping without min(1, .): small gradients scaled up": (
        OPTIM, "    if is_cupy(xp) or not clip_coef >= 1.0:\n        for g in grads.values():\n            g *= clip_coef\n",
        "    for g in grads.values():\n        g *= max_norm / (total_norm + CLIP_NORM_EPS)\n", {"clip_grad_norm_small"}),
    "F1 over sets of words (no multiplicity)": (
        SQUAD, "num_same = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())",
        "num_same = len(set(prediction_tokens) & set(truth_tokens))", {"f1_score"}),
    "encoder dropout never applied in QA fine-tuning": (
        QA, 'arrays["attention_mask"], config, xp=xp, train=train, rng=rng)', 'arrays["attention_mask"], config, xp=xp)',
        {"qa_loss"}),
    "QA term_scales ignored": (QA, 'scales = {"start": 1.0, "end": 1.0, **(term_scales or {})}',
                               'scales = {"start": 1.0, "end": 1.0}', {"qa_gradients_scaled"}),
    "QA end term scaled by the start scale": (
        QA, 'cross_entropy_backward(0.5 * scales["end"], end_ce_cache, xp=xp)',
        'cross_entropy_backward(0.5 * scales["start"], end_ce_cache, xp=xp)', {"qa_gradients_scaled"}),
}}

# Correct variants the task text allows: full marks.
VARIANTS = {"A1": {
    "LayerNorm backward in its N-scaled form": (
        LN, "    g -= mean_g\n    g -= xhat * mean_g_xhat\n    g *= rstd\n    return g, dgamma, dbeta",
        "    n = g.shape[-1]\n    dx = (n * g - g.sum(axis=-1, keepdims=True) - xhat * (g * xhat).sum(axis=-1, keepdims=True))"
        " * rstd / n\n    return dx, dgamma, dbeta"),
    "softmax stabilised by the log-sum-exp": (
        SM, "    y = x - x.max(axis=-1, keepdims=True)\n    xp.exp(y, out=y)\n    y /= y.sum(axis=-1, keepdims=True)\n",
        "    m = x.max(axis=-1, keepdims=True)\n    y = xp.exp(x - (m + xp.log(xp.exp(x - m).sum(axis=-1, keepdims=True))))\n"),
}, "A3": {
    "clipping by max_norm / norm exactly, the norm from one concatenated vector": (
        OPTIM, "    total_norm = xp.sqrt(sum_of_squares)\n    clip_coef = xp.minimum(max_norm / (total_norm + CLIP_NORM_EPS), 1.0)",
        "    total_norm = xp.linalg.norm(xp.concatenate([g.reshape(-1) for g in grads.values()]))\n"
        "    clip_coef = xp.minimum(max_norm / total_norm, 1.0)"),
    "AdamW in PyTorch's step-size form": (
        OPTIM, "        m_hat = m / (1.0 - beta1**state.t)\n        v_hat = v / (1.0 - beta2**state.t)\n"
               "        w -= lr * m_hat / (xp.sqrt(v_hat) + eps)",
        "        step_size = lr / (1.0 - beta1**state.t)\n"
        "        denom = xp.sqrt(v) / math.sqrt(1.0 - beta2**state.t) + eps\n        w -= step_size * m / denom"),
}}


def grade_all(build_of, tmp_path, name, cases):
    """{case: (report, expected failures)} for ``cases`` {case: (file, old, new, expected)}, two at a time."""
    spec = assignments.load(name)
    autograder = build_of(name) / "autograder"

    def one(item):
        index, (case, (rel, old, new, expected)) = item
        return case, grade(solution_submission(spec, tmp_path / f"s{index}", (rel, old, new)), autograder), expected
    with ThreadPoolExecutor(max_workers=2) as pool:
        return spec, list(pool.map(one, enumerate(cases.items())))


@pytest.mark.parametrize("name", ["A1", "A2", "A3"])
def test_each_planted_mistake_loses_exactly_its_tests_points_and_correct_variants_none(built, name, tmp_path):
    cases = {**MISTAKES[name], **{case: (*v, set()) for case, v in VARIANTS.get(name, {}).items()}}
    spec, graded = grade_all(built, tmp_path, name, cases)
    wrong = {}
    for case, report, expected in graded:  # partial credit: a failing test may keep part of its points
        below_full = {t["name"] for t in report["tests"] if t["score"] < t["max_score"]}
        if failed(report) != expected or below_full != expected:
            wrong[case] = {t["name"]: t["output"][:300] for t in report["tests"] if t["status"] != "passed"}
            wrong[case]["expected to fail"] = sorted(expected)
    assert not wrong, wrong


def test_at_least_36_mistakes_are_planted_in_all():
    from test_coursework import PLANTED_BUGS
    assert len(PLANTED_BUGS) + sum(len(m) for m in MISTAKES.values()) >= 36
