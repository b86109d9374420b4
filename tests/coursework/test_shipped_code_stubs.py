"""A backward computed from shipped code scores 0 for its function (issue 24, acceptance): a stub that
returns the centred differences of the student's own forward (``minispanbert.gradcheck.numerical_gradient``,
the shipped helper) would pass every small float64 backward test, so each graded backward is also run at
scale in float32 (harness.at_scale). The helper refuses float32, so a plain stub fails at once; a stub that
casts to float64 first is exact enough but needs 2 forward passes per element, minutes at that size, and
stops at the test's time limit. Every other test still passes. Gradings run two at a time.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from test_coursework import failed, solution_submission

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework.grade import grade

# Appended to a module: forwards keep their inputs in the cache, backwards return their centred differences.
NUMERIC = '''

import copy as _copy
import numpy as _np
from minispanbert.gradcheck import numerical_gradient as _numerical_gradient

_UPCAST = {upcast}


def _numeric(f, arrays, dout):
    """d<f(*arrays), dout>/d(each array) by centred differences (in float64 when _UPCAST), in the arrays' dtypes."""
    work = [_np.array(a, dtype=_np.float64 if _UPCAST else None) for a in arrays]
    dout = _np.asarray(dout, dtype=_np.float64) if _UPCAST else dout
    return tuple(_numerical_gradient(lambda: f(*work), w, dout).astype(_np.asarray(a).dtype)
                 for w, a in zip(work, arrays))


def _fresh(rng):
    return None if rng is None else _copy.copy(rng)
'''
STUBS = {  # file -> {function graded by its tests: code appended after NUMERIC}
    "minispanbert/layers/linear.py": {"minispanbert.layers.linear:linear_backward": '''
_forward = linear_forward
def linear_forward(x, weight, bias, *, xp):
    return _forward(x, weight, bias, xp=xp)[0], (x, weight, bias)
def linear_backward(dy, cache, *, xp):
    return _numeric(lambda *a: _forward(*a, xp=xp)[0], cache, dy)
'''},
    "minispanbert/layers/layernorm.py": {"minispanbert.layers.layernorm:layernorm_backward": '''
_forward = layernorm_forward
def layernorm_forward(x, gamma, beta, *, xp, eps=1e-12):
    return _forward(x, gamma, beta, xp=xp, eps=eps)[0], (x, gamma, beta, eps)
def layernorm_backward(dy, cache, *, xp):
    return _numeric(lambda *a: _forward(*a, xp=xp, eps=cache[3])[0], cache[:3], dy)
'''},
    "minispanbert/layers/gelu.py": {"minispanbert.layers.gelu:gelu_backward": '''
_forward = gelu_forward
def gelu_forward(x, *, xp):
    return _forward(x, xp=xp)[0], x
def gelu_backward(dy, cache, *, xp):
    return _numeric(lambda x: _forward(x, xp=xp)[0], (cache,), dy)[0]
'''},
    "minispanbert/layers/softmax.py": {"minispanbert.layers.softmax:softmax_backward": '''
_forward = softmax_forward
def softmax_forward(x, *, xp):
    return _forward(x.copy(), xp=xp)[0], x.copy()
def softmax_backward(dy, cache, *, xp):
    return _numeric(lambda x: _forward(x.copy(), xp=xp)[0], (cache,), dy)[0]
'''},
    "minispanbert/layers/attention.py": {"minispanbert.layers.attention:self_attention_backward": '''
_forward = self_attention_forward
def self_attention_forward(x, wq, bq, wk, bk, wv, bv, wo, bo, mask_bias, *, rng=None, **options):
    arrays = (x, wq, bq, wk, bk, wv, bv, wo, bo)
    return _forward(*arrays, mask_bias, rng=_fresh(rng), **options)[0], (arrays, mask_bias, _fresh(rng), options)
def self_attention_backward(dout, cache, *, xp):
    arrays, mask_bias, rng, options = cache
    return _numeric(lambda *a: _forward(*a, mask_bias, rng=_fresh(rng), **options)[0], arrays, dout)
'''},
    "minispanbert/layers/cross_entropy.py": {"minispanbert.layers.cross_entropy:cross_entropy_backward": '''
_forward = cross_entropy_forward
def cross_entropy_forward(logits, labels, *, xp, ignore_index=IGNORE_INDEX):
    return _forward(logits, labels, xp=xp, ignore_index=ignore_index)[0], (logits, labels, ignore_index)
def cross_entropy_backward(dloss, cache, *, xp):
    logits, labels, ignore_index = cache
    return _numeric(lambda z: _forward(z, labels, xp=xp, ignore_index=ignore_index)[0], (logits,), dloss)[0]
'''},
    "minispanbert/model/sbo_head.py": {"minispanbert.model.sbo_head:sbo_head_backward": '''
_forward = sbo_head_forward
def sbo_head_forward(params, h, left, right, rel_pos, *, xp, eps=1e-12):
    return _forward(params, h, left, right, rel_pos, xp=xp, eps=eps)[0], (params, h, left, right, rel_pos, eps)
def sbo_head_backward(dlogits, cache, *, xp):
    params, h, left, right, rel_pos, eps = cache
    names = [n for n in sorted(params) if n.startswith("cls.sbo.") or n == WORD_EMBEDDINGS]
    def f(h, *values):
        return _forward({**params, **dict(zip(names, values))}, h, left, right, rel_pos, xp=xp, eps=eps)[0]
    dh, *grads = _numeric(f, (h, *[params[n] for n in names]), dlogits)
    return dh, dict(zip(names, grads))
'''},
    "minispanbert/model/spanbert_loss.py": {"minispanbert.model.spanbert_loss:pretraining_backward": '''
_forward = pretraining_forward
def pretraining_forward(params, batch, config, *, xp, sbo_weight=1.0, train=False, rng=None):
    out = _forward(params, batch, config, xp=xp, sbo_weight=sbo_weight, train=train, rng=_fresh(rng))[0]
    return out, (params, batch, config, sbo_weight, train, _fresh(rng))
def pretraining_backward(cache, *, xp, term_scales=None):
    params, batch, config, sbo_weight, train, rng = cache
    scales = {"mlm": 1.0, "sbo": 1.0, **(term_scales or {})}
    names = sorted(params)
    def f(*values):
        out = _forward(dict(zip(names, values)), batch, config, xp=xp, sbo_weight=sbo_weight, train=train,
                       rng=_fresh(rng))[0]
        return scales["mlm"] * out.mlm_loss + scales["sbo"] * sbo_weight * out.sbo_loss
    return dict(zip(names, _numeric(f, [params[n] for n in names], 1.0)))
'''},
    "minispanbert/finetune/qa_head.py": {
        "minispanbert.finetune.qa_head:qa_head_backward": '''
_head_forward = qa_head_forward
def qa_head_forward(params, h, *, xp):
    start, end, _ = _head_forward(params, h, xp=xp)
    return start, end, (params, h)
def qa_head_backward(dstart, dend, cache, *, xp):
    params, h = cache
    names = (QA_WEIGHT, QA_BIAS)
    def f(h, *values):
        return _np.stack(_head_forward(dict(zip(names, values)), h, xp=xp)[:2], axis=-1)
    dh, *grads = _numeric(f, (h, *[params[n] for n in names]), _np.stack([dstart, dend], axis=-1))
    return dh, dict(zip(names, grads))
''',
        "minispanbert.finetune.qa_head:qa_backward": '''
_forward = qa_forward
def qa_forward(params, arrays, config, *, xp, train=False, rng=None):
    out = _forward(params, arrays, config, xp=xp, train=train, rng=_fresh(rng))[0]
    return out, (params, arrays, config, train, _fresh(rng))
def qa_backward(cache, *, xp, term_scales=None):
    params, arrays, config, train, rng = cache
    scales = {"start": 1.0, "end": 1.0, **(term_scales or {})}
    names = sorted(params)
    def f(*values):
        out = _forward(dict(zip(names, values)), arrays, config, xp=xp, train=train, rng=_fresh(rng))[0]
        return (scales["start"] * out.start_loss + scales["end"] * out.end_loss) / 2
    return dict(zip(names, _numeric(f, [params[n] for n in names], 1.0)))
'''},
}
ASSIGNMENTS = {"A1": "minispanbert/layers/", "A2": "minispanbert/model/", "A3": "minispanbert/finetune/"}


def stubbed(spec, dest, function, *, upcast):
    """The solution with ``function`` (and its forward's cache) replaced by centred differences."""
    rel, code = next((rel, stubs[function]) for rel, stubs in STUBS.items() if function in stubs)
    submission = solution_submission(spec, dest)
    path = submission / rel
    path.write_text(path.read_text() + NUMERIC.format(upcast=upcast) + code)
    return submission


def covering(spec, function) -> set[str]:
    return {t.name for t in spec.tests if function in t.covers}


def grade_stubs(built, tmp_path, name, *, upcast, time_limit=None):
    """[(function, report)] for each numerical-gradient stub of assignment ``name``, two gradings at a time."""
    spec = assignments.load(name)
    autograder = built(name) / "autograder"
    if time_limit is not None:  # a copy of the autograder whose tests may run ``time_limit`` seconds
        import shutil
        copy = tmp_path / "autograder"
        shutil.copytree(autograder, copy)
        toml = copy / "assignment.toml"
        text = toml.read_text()
        assert f"time_limit = {spec.time_limit}\n" in text
        toml.write_text(text.replace(f"time_limit = {spec.time_limit}\n", f"time_limit = {time_limit}\n"))
        autograder = copy
    functions = [f for rel, stubs in STUBS.items() if rel.startswith(ASSIGNMENTS[name]) for f in stubs]

    def one(item):
        index, function = item
        return function, grade(stubbed(spec, tmp_path / f"s{index}", function, upcast=upcast), autograder)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return spec, list(pool.map(one, enumerate(functions)))


@pytest.mark.parametrize("name", ["A1", "A2", "A3"])
def test_a_backward_returning_numerical_gradient_scores_zero_for_its_function(built, name, tmp_path):
    spec, graded = grade_stubs(built, tmp_path, name, upcast=False)
    wrong = {}
    for function, report in graded:
        expected = covering(spec, function)
        messages = {t["name"]: t["output"][:200] for t in report["tests"] if t["status"] != "passed"}
        lost = sum(t.points for t in spec.tests if t.name in expected)
        if failed(report) != expected or report["score"] != spec.max_score - lost or not all(
                "float64" in m for m in messages.values()):  # numerical_gradient refused the float32 input
            wrong[function] = {**messages, "expected to fail": sorted(expected)}
    assert not wrong, wrong
