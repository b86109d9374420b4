"""The student copy holds nothing to copy (issue 24, item 2): the build-time leak check fails the
build on a planted second implementation (a kernel kept, a body pasted into another module, a
paraphrase), the kernels and the PyTorch twin are absent while the copy still imports its trainer,
a stub that calls the shipped code that once computed its answer scores 0, the stub messages and
--hints keep the derivative out, and a notebook's stated last line of a backward pass is gone.
"""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys

import pytest

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework import build as build_module
from minispanbert.coursework.build import build, project_root
from minispanbert.coursework.grade import grade
from minispanbert.coursework.leaks import check_student_tree, find_leaks, solutions
from minispanbert.coursework.stubs import function_body, reduce_docstring

ROOT = project_root()
if subprocess.run(["git", "-C", str(ROOT), "ls-files", "--error-unmatch", "pyproject.toml"],
                  capture_output=True).returncode != 0:
    pytest.skip("the coursework kit builds from a git checkout; this is not one", allow_module_level=True)


@pytest.fixture(scope="module")
def a1(tmp_path_factory):
    """A build of its own: these tests import from its student copy (and so write bytecode there)."""
    return build("A1", tmp_path_factory.mktemp("a1") / "A1")


def leak_in(spec, source: str) -> list:
    return find_leaks(ast.parse(source), "planted.py", solutions(spec, ROOT))


def test_planted_leaks_are_found_and_the_shipped_copies_are_clean(a1):
    spec = assignments.load("A1")
    body = function_body((ROOT / "minispanbert/layers/linear.py").read_text(), "linear_backward")
    renamed = body.replace("dy", "upstream").replace("weight", "w")
    assert "linear_backward" in leak_in(spec, f"def helper(upstream, cache, *, xp):\n{renamed}")[0][1]
    softmax = "def helper(g, s, *, xp):\n    out = g - (s * g).sum(axis=-1, keepdims=True)\n    return out * s\n"
    assert "softmax_backward" in leak_in(spec, softmax)[0][1]  # one statement, renamed
    kernel = (ROOT / "minispanbert/engine/kernels/cpu/layernorm.py").read_text()
    assert "same name" in leak_in(spec, kernel)[0][1]  # a numba kernel shares no code, only the name
    assert leak_in(spec, "def wiring(dy, cache, *, xp):\n    dx, dw, db = linear_backward(dy, cache, xp=xp)\n"
                   "    return dx\n") == []  # calling a layer is not an answer
    a3 = assignments.load("A3")
    official = (ROOT / "tests/finetune/test_squad.py").read_text()
    assert "f1_score" in leak_in(a3, official)[0][1]  # the transcribed official SQuAD script
    check_student_tree(spec, ROOT, a1 / "student")  # the build's own check passes on what it built


def plant_body(root, dest):
    body = function_body((root / "minispanbert/layers/layernorm.py").read_text(), "layernorm_backward")
    (dest / "minispanbert/layers/relu.py").write_text("def relu_helper(dy, cache, *, xp):\n" + body)


def plant_kernels(root, dest):
    shutil.rmtree(dest / "minispanbert/engine/kernels")
    shutil.copytree(root / "minispanbert/engine/kernels", dest / "minispanbert/engine/kernels")


@pytest.mark.parametrize("plant, message", [
    (plant_body, "leak check: minispanbert/layers/relu.py: relu_helper (line 1) has the body of "
                 "minispanbert.layers.layernorm:layernorm_backward: leave it out of the student copy or rewrite it"),
    (plant_kernels, "leak check: minispanbert/engine/kernels/adamw.py (a second implementation of graded maths) "
                    "is in the student copy")])
def test_a_planted_leak_fails_the_build_in_one_line(tmp_path, monkeypatch, plant, message):
    real = build_module.write_student

    def write_then_plant(spec, root, files, dest, hints="derivations"):
        real(spec, root, files, dest, hints)
        plant(root, dest)
    monkeypatch.setattr(build_module, "write_student", write_then_plant)
    with pytest.raises(ValueError) as caught:
        build("A1", tmp_path / "leaky")
    assert str(caught.value) == message
    assert not (tmp_path / "leaky").exists()


def test_kernels_and_twin_are_absent_and_the_trainer_still_imports(a1):
    student = a1 / "student"
    for gone in ("minispanbert/engine/kernels/cpu", "minispanbert/engine/kernels/cuda",
                 "minispanbert/engine/kernels/adamw.py", "minispanbert/engine/bench", "benchmarks", "tests/fixtures",
                 "tests/core/test_forward_oracles.py", "tests/core/test_torch_crosscheck.py", "notebooks/family"):
        assert not (student / gone).exists(), gone
    code = ("import minispanbert.engine.trainer, minispanbert.train\n"
            "from minispanbert.engine import kernels\n"
            "with kernels.installed(): pass\n"
            "import minispanbert.engine.kernels.cpu\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=student, env={"PYTHONPATH": str(student)},
                         capture_output=True, text=True, timeout=120)
    last = run.stderr.strip().splitlines()[-1]
    assert last == "ModuleNotFoundError: No module named 'minispanbert.engine.kernels.cpu'", run.stderr


def test_a_stub_calling_shipped_code_scores_zero_for_that_function(a1, tmp_path):
    """The shipped code that once computed A1's answers is a no-op stand-in now: a layernorm_backward
    that defers to the kernels (installed or imported) scores 0 on its tests, and only on those."""
    spec = assignments.load("A1")
    submission = tmp_path / "submission"
    for rel in spec.files:
        (submission / rel).parent.mkdir(parents=True, exist_ok=True)
        (submission / rel).write_text((ROOT / rel).read_text())
    path = submission / "minispanbert/layers/layernorm.py"
    body = function_body(path.read_text(), "layernorm_backward")
    path.write_text(path.read_text().replace(body, (
        "    from minispanbert.engine import kernels\n"
        "    with kernels.installed():\n"
        "        try:\n"
        "            from minispanbert.engine.kernels.cpu.layernorm import layernorm_backward as fused\n"
        "        except ImportError:\n"
        "            raise NotImplementedError('no kernel to call') from None\n"
        "        return fused(dy, cache, xp=xp)\n")))
    report = grade(submission, a1 / "autograder")
    by_name = {t["name"]: t for t in report["tests"] if "notebook" not in t["tags"]}  # no notebook submitted
    layernorm_backward = {t.name for t in spec.tests if "minispanbert.layers.layernorm:layernorm_backward" in t.covers}
    assert {n for n, t in by_name.items() if t["score"] == 0} == layernorm_backward
    assert report["score"] == spec.max_score - sum(t.points for t in spec.tests if t.name in layernorm_backward)


def test_stub_messages_and_hints_keep_the_derivative_out(tmp_path):
    for name in ("A1", "A2", "A3"):
        for f in assignments.load(name).functions:
            assert not any(mark in f.task for mark in ("dx =", "dlogits =", "Phi(x) + x phi")), f.task
    built = build("A1", tmp_path / "eq", hints="equations") / "student"
    layernorm = (built / "minispanbert/layers/layernorm.py").read_text()
    assert "y = gamma * xhat + beta" in layernorm and "mean(g * xhat)" not in layernorm
    gelu = ast.get_docstring(ast.parse((built / "minispanbert/layers/gelu.py").read_text()))
    assert "Phi(x) = (1 + erf(x / sqrt 2)) / 2" in gelu and "phi(x) = exp" not in gelu
    assert reduce_docstring("Summary.\n\nForward: y = f(x)\nBackward: dx = g\n", "none") == "Summary."
    notebook = json.loads((built / "notebooks/core/02_layernorm_gelu_ffn.ipynb").read_text())
    prose = "\n".join("".join(c["source"]) for c in notebook["cells"])
    assert "This is the last line of `layernorm_backward`" not in prose and "The cell ships" in prose
