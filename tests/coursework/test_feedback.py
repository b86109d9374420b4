"""Feedback that teaches (issue 24, item 4): partial credit per graded value, every failing value
reported, and the misconception named when a failing value equals a known wrong variant's output
(checks/misconceptions.py). Submissions carry several independent planted mistakes at once (each in
a different function), so an assignment is graded a few times only, about a second each.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_coursework import solution_submission

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework.checks.harness import judge
from minispanbert.coursework.checks.misconceptions import MISCONCEPTIONS
from minispanbert.coursework.grade import grade

LINEAR, LN, GELU = "minispanbert/layers/linear.py", "minispanbert/layers/layernorm.py", "minispanbert/layers/gelu.py"
SM, ATT, CE = "minispanbert/layers/softmax.py", "minispanbert/layers/attention.py", "minispanbert/layers/cross_entropy.py"
MASKING, OPTIM, SQUAD = "minispanbert/masking.py", "minispanbert/optim.py", "minispanbert/finetune/squad.py"
HINTED = " matches a known mistake: "
AT_SCALE = " (float32, at scale)"
WEIGHTS = ["layer.dense.weight after step 1", "layer.dense.bias after step 1", "layer.dense.weight after step 2",
           "layer.dense.bias after step 2", "layer.dense.weight after step 3", "layer.dense.bias after step 3"]

# assignment -> submissions, each: (patches (file, solution text, planted text),
#                                   {test: ({failing value: the variant it must be named as}, share of points kept)})
SUBMISSIONS = {"A1": [
    ([(LINEAR, "dweight = dy2d.T @ x.reshape(-1, x.shape[-1])", "dweight = x.reshape(-1, x.shape[-1]).T @ dy2d"),
      (LN, "var = xp.mean(centred * centred, axis=-1, keepdims=True)", "var = xp.var(x, axis=-1, ddof=1, keepdims=True)"),
      (GELU, "    cdf = erf(x * _INV_SQRT2, xp=xp)\n    cdf += 1.0\n    cdf *= 0.5\n",
       "    cdf = 0.5 * (1.0 + xp.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x**3)))\n"),
      (SM, "    y = x - x.max(axis=-1, keepdims=True)\n", "    y = x.copy()\n"),
      (CE, "loss = -(log_prob_target * keep).sum() / count", "loss = -(log_prob_target * keep).sum()")],
     {"linear_backward": ({"dweight": "dweight-transposed"}, 2 / 3),
      "attention_backward": ({w: "dweight-transposed" for w in ("dwq", "dwk", "dwv", "dwo")}, 4 / 8),
      "layernorm_forward": ({"y": "unbiased-variance", "y with eps=0.1": "unbiased-variance"}, 0.0),
      "gelu_forward": ({"y": "tanh-gelu"}, 0.0),
      "softmax_forward": ({"y_shifted_by_1000": "no-max-shift", "y_rows_shifted_by_0_800_-800": "no-max-shift"}, 1 / 3),
      "cross_entropy_forward": ({"loss": "summed-cross-entropy", "loss with ignore_index=-1": "summed-cross-entropy"},
                                0.0)}),
    ([(LN, "rstd = 1.0 / xp.sqrt(var + eps)", "rstd = 1.0 / (xp.sqrt(var) + eps)"),
      (LN, "    g -= mean_g\n", ""),
      (GELU, "    pdf *= x\n", ""),
      (SM, "dx = dy - (y * dy).sum(axis=-1, keepdims=True)", "dx = dy.copy()"),
      (ATT, "scale = 1.0 / math.sqrt(H // num_heads)", "scale = 1.0"),
      (CE, "loss = -(log_prob_target * keep).sum() / count", "loss = -(log_prob_target * keep).sum() / logits.shape[0]")],
     {"layernorm_forward": ({"y with eps=0.1": "eps-outside-sqrt"}, 1 / 2),  # at eps 1e-12 the placement is invisible
      "layernorm_backward_input": ({"dx": "no-mean-term"}, 0.0),
      "layernorm_backward_3d": ({"dx": "no-mean-term"}, 2 / 3),
      "gelu_backward": ({"dx": "pdf-without-x"}, 0.0),
      "softmax_backward": ({"dx": "elementwise-softmax-backward"}, 0.0),
      "attention_forward": ({"out": "no-attention-scale"}, 0.0),
      "attention_dropout_forward": ({"out with dropout 0.3 (training)": "no-attention-scale",
                                     "out with dropout 0.3 (evaluation)": "no-attention-scale"}, 0.0),
      "cross_entropy_forward": ({"loss": "cross-entropy-over-all-rows",
                                 "loss with ignore_index=-1": "cross-entropy-over-all-rows"}, 0.0)}),
], "A2": [
    ([(MASKING, "    return weights / weights.sum()", "    weights[-1] = (1.0 - p) ** (upper - lower)\n    return weights"),
      (MASKING, "return span_start - 1, np.repeat(ends, counts) + 1, rel_pos, span_start + rel_pos",
       "return span_start, np.repeat(ends, counts), rel_pos, span_start + rel_pos")],
     {"span_length_pmf": ({"pmf(p=0.2, 1..10)": "clipped-geometric", "pmf(p=0.5, 2..6)": "clipped-geometric"}, 0.0),
      "sbo_targets": ({"left": "boundaries-inside-span", "right": "boundaries-inside-span"}, 2 / 4)}),
], "A3": [
    ([(OPTIM, "        m_hat = m / (1.0 - beta1**state.t)\n        v_hat = v / (1.0 - beta2**state.t)\n",
       "        m_hat = m\n        v_hat = v\n"),
      (OPTIM, "    if is_cupy(xp) or not clip_coef >= 1.0:\n        for g in grads.values():\n            g *= clip_coef\n",
       "    for g in grads.values():\n"
       "        g *= xp.minimum(max_norm / (xp.sqrt(xp.vdot(g.reshape(-1), g.reshape(-1))) + CLIP_NORM_EPS), 1.0)\n"),
      (SQUAD, "num_same = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())",
       "num_same = len(set(prediction_tokens) & set(truth_tokens))")],
     {"adamw_update": ({w: "no-bias-correction" for w in WEIGHTS}, 0.0),
      "adamw_decay_mask": ({w: "no-bias-correction" for w in WEIGHTS[4:]}, 0.0),
      "clip_grad_norm": ({"clipped gradient 'a'": "clip-per-tensor", "clipped gradient 'b'": "clip-per-tensor"}, 1 / 3),
      "f1_score": ({"F1 with repeated words": "f1-over-sets"}, 1 / 2)}),
    ([(OPTIM, "w -= lr * m_hat / (xp.sqrt(v_hat) + eps)", "w -= lr * m_hat / xp.sqrt(v_hat + eps)")],
     {"adamw_eps_and_betas": ({w: "eps-inside-sqrt" for w in WEIGHTS}, 0.0)}),
    ([(OPTIM, "decay = weight_decay if decay_mask is None or decay_mask[name] else 0.0", "decay = weight_decay")],
     {"adamw_decay_mask": ({"layer.dense.bias after step 3": "decay-ignores-mask"}, 1 / 2)}),
]}


def why(assignment: str, variant: str) -> str:
    return next(m.why for m in MISCONCEPTIONS[assignment.lower()] if m.name == variant)


def planted(spec, dest, patches):
    """The solution's files with every patch of ``patches`` applied (each anchor must be unique)."""
    solution_submission(spec, dest)
    for rel, old, new in patches:
        text = (dest / rel).read_text()
        assert text.count(old) == 1, f"the planted mistake's anchor {old!r} is not unique in {rel}"
        (dest / rel).write_text(text.replace(old, new))
    return dest


@pytest.mark.parametrize("name", ["A1", "A2", "A3"])
def test_planted_misconceptions_are_named_on_exactly_their_values_with_partial_credit(built, name, tmp_path):
    spec = assignments.load(name)
    autograder = built(name) / "autograder"
    points = {t.name: t.points for t in spec.tests}
    jobs = [(tmp_path / "solution", [])] + [(tmp_path / f"s{i}", patches) for i, (patches, _) in
                                            enumerate(SUBMISSIONS[name])]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda job: grade(planted(spec, *job), autograder), jobs))
    solution, graded = reports[0], reports[1:]
    assert solution["score"] == spec.max_score and not [t for t in solution["tests"] if HINTED in t["output"]]
    for report, (_, expected) in zip(graded, SUBMISSIONS[name]):
        tests = {t["name"]: t for t in report["tests"]}
        for test, (hinted, kept) in expected.items():
            output = tests[test]["output"]
            assert tests[test]["status"] == "failed" and tests[test]["score"] == round(points[test] * kept, 4), output
            named = dict(re.findall(rf"^\s*(.+?){HINTED}(.+)$", output, flags=re.MULTILINE))
            want = {what: why(name, variant) for what, variant in hinted.items()}
            if "_backward" in test:  # a backward's gradients are judged again at scale (harness.at_scale)
                want |= {what + AT_SCALE: reason for what, reason in want.items()}
            assert named == want, output
            for what in hinted:  # every failing value is listed, each on a line of its own
                assert re.search(rf"^(- )?{re.escape(what)}[ :]", output, flags=re.MULTILINE), (what, output)
        assert report["score"] == pytest.approx(sum(t["score"] for t in report["tests"]))


def test_at_least_12_misconceptions_are_covered_by_a_planted_submission():
    covered = {(name, variant) for name, submissions in SUBMISSIONS.items() for _, expected in submissions
               for hinted, _ in expected.values() for variant in hinted.values()}
    registered = {(name.upper(), m.name) for name, ms in MISCONCEPTIONS.items() for m in ms}
    assert covered == registered and len(covered) >= 12


def test_the_student_copy_has_no_variant_code_outputs_or_sentences(built):
    student = built("A1") / "student"
    local = student / ".coursework"
    assert not list(local.rglob("misconceptions.py"))
    with np.load(local / "references.npz", allow_pickle=False) as refs:
        assert refs.files and not [key for key in refs.files if "@" in key]
    text = "\n".join(p.read_text(errors="replace") for p in student.rglob("*") if p.is_file() and p.suffix != ".npz")
    for m in MISCONCEPTIONS["a1"]:
        assert m.why not in text and m.name not in text


# --- judge() on hand-made records: the scoring rule itself ----------------------------------------------
REFS = {"t/a": np.array([1.0, 2.0]), "t/a#rtol": np.float64(1e-7), "t/b": np.array([3.0]), "t/b#rtol": np.float64(1e-7),
        "t/c": np.array([1, 2]), "t/b@off-by-one": np.array([4.0]), "t/b@off-by-one#why": np.array("b is one too big")}


def rec(kind, what, value, **options):
    return (kind, what, {"value": np.asarray(value)}, options)


def test_judge_scores_each_value_and_lists_every_failure():
    right = [rec("close", "a", [1.0, 2.0]), rec("close", "b", [3.0]), rec("equal", "c", [1, 2])]
    assert judge("t", right, REFS, None) == (1.0, None)
    fraction, message = judge("t", [rec("close", "a", [1.0, 2.5]), rec("close", "b", [4.0]), rec("equal", "c", [1, 2])],
                              REFS, None)
    assert fraction == pytest.approx(1 / 3)
    lines = message.splitlines()
    assert lines[0] == "1 of 3 values match the reference (partial credit, 1/3 of the points):"
    assert lines[1].startswith("- a (2,): relative error") and lines[2].startswith("- b (1,): relative error")
    assert lines[3] == "  b matches a known mistake: b is one too big" and len(lines) == 4
    # a value near the variant but not equal to it gets no hint; a missing value fails only its own share
    fraction, message = judge("t", [rec("close", "a", [1.0, 2.0]), rec("close", "b", [4.1])], REFS, None)
    assert fraction == pytest.approx(1 / 3) and "known mistake" not in message
    assert message.splitlines()[-1] == "- the test process reported no value for c: nothing to compare with the reference"


def test_judge_gives_nothing_when_the_test_stopped_or_a_whole_test_check_failed():
    fraction, message = judge("t", [rec("close", "a", [1.0, 2.0])], REFS, "your code raised KeyError: 'x'")
    assert fraction == 0.0 and message.splitlines()[-1] == "- your code raised KeyError: 'x'"
    within = ("within", "share", {}, {"value": 2.0, "low": 0.0, "high": 1.0, "why": "a bound"})
    right = [rec("close", "a", [1.0, 2.0]), rec("close", "b", [3.0]), rec("equal", "c", [1, 2])]
    assert judge("t", right + [within], REFS, None)[0] == 0.0
    # a failing record is not undone by a passing duplicate of the same value
    assert judge("t", [rec("close", "b", [4.0])] + right, REFS, None)[0] == pytest.approx(2 / 3)


def test_a_value_equal_to_the_solution_is_never_stored_as_a_variant(built):
    with np.load(built("A1") / "autograder" / "references.npz", allow_pickle=False) as refs:
        variants = [key for key in refs.files if "@" in key and not key.endswith("#why")]
        assert "layernorm_forward/y with eps=0.1@eps-outside-sqrt" in variants
        assert "layernorm_forward/y@eps-outside-sqrt" not in variants  # eps 1e-12 changes nothing at rtol 1e-7
        for key in variants:
            reference = refs[key.split("@")[0]]
            assert reference.shape != refs[key].shape or not np.allclose(reference, refs[key], rtol=1e-9, atol=0)

