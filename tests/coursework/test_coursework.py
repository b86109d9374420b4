"""Acceptance tests of the coursework kit (minispanbert/coursework/): build each shipped assignment
once, then check the student copy (stubs, no solution text, no hidden test, unlisted tests still
pass), grade the untouched copy (0, every test naming its NotImplementedError), grade the solution
(full points, as a zip from `submit`), grade planted bugs (each loses points on exactly the tests
covering it), and grade a crashing / hanging / chatty / torch-importing submission (a valid
results.json all the same). Grading runs the real grader (one process forking a child per graded
function), about a second of CPU per submission.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework.__main__ import main as coursework_main
from minispanbert.coursework.build import EXCLUDED_PREFIXES, build, project_root, tracked_files
from minispanbert.coursework.grade import forbidden_imports, grade, read_submission
from minispanbert.coursework.stubs import function_body
from minispanbert.coursework.submit import submit

from crash_points import run_with_a_crash

ROOT = project_root()
if subprocess.run(["git", "-C", str(ROOT), "ls-files", "--error-unmatch", "pyproject.toml"],
                  capture_output=True).returncode != 0:
    pytest.skip("the coursework kit builds from a git checkout; this is not one", allow_module_level=True)
SHIPPED = ("A1", "A2", "A3")
# Tests of functions the assignment does not list: they must pass in the student copy.
UNLISTED_TESTS = {  # (only the assignment's own student tests ship)
    "A1": ["tests/core/test_layers.py::test_embedding_backward_adds_duplicates",
           "tests/core/test_layers.py::test_dropout_train_vs_eval"],
    "A2": ["tests/core/test_masking.py::test_masking_budget_function"],
    "A3": ["tests/finetune/test_squad.py::test_max_context_hand_computed"],
}

# (assignment, file, solution text, buggy text, the tests that must fail -- all others must pass)
PLANTED_BUGS = [
    ("A1", "minispanbert/layers/layernorm.py", "    g -= mean_g\n", "",
     {"layernorm_backward_input", "layernorm_backward_3d"}),
    ("A1", "minispanbert/layers/softmax.py", "dx = dy - (y * dy).sum(axis=-1, keepdims=True)", "dx = dy.copy()",
     {"softmax_backward", "attention_backward", "attention_dropout_backward"}),
    ("A1", "minispanbert/layers/attention.py", "scale = 1.0 / math.sqrt(H // num_heads)", "scale = 1.0",
     {"attention_forward", "attention_dropout_forward"}),  # its backward reads the scale from the cache: right
    ("A1", "minispanbert/layers/gelu.py", "    pdf *= x\n", "",
     {"gelu_backward"}),
    ("A1", "minispanbert/layers/cross_entropy.py", "loss = -(log_prob_target * keep).sum() / count",
     "loss = -(log_prob_target * keep).sum()",
     {"cross_entropy_forward", "cross_entropy_edge_cases"}),  # its backward is right: not charged again
    ("A2", "minispanbert/masking.py", "draw = np.repeat(rng.random(starts.size), lengths)",
     "draw = rng.random(positions.size)",  # 80/10/10 per token instead of per span
     {"replace_spans_per_span", "masking_end_to_end"}),
    ("A2", "minispanbert/masking.py", "        start, stop = word_begin[anchor_word], word_end[last_word]\n",
     "        start = word_begin[anchor_word]\n"  # span lengths counted in subword tokens
     "        stop = min(start + int(lengths[used - 1]), word_end[next_barrier[anchor_word] - 1])\n",
     {"span_masking_whole_words", "masking_end_to_end"}),
    ("A2", "minispanbert/masking.py", "return span_start - 1, np.repeat(ends, counts) + 1, rel_pos, span_start + rel_pos",
     "return span_start, np.repeat(ends, counts), rel_pos, span_start + rel_pos",  # SBO reads tokens inside the span
     {"sbo_targets", "masking_end_to_end"}),
    ("A2", "minispanbert/masking.py", "    return weights / weights.sum()",
     "    weights[-1] = (1.0 - p) ** (upper - lower)\n    return weights",  # clipped, not truncated, geometric
     {"span_length_pmf", "span_length_mean"}),
    ("A2", "minispanbert/model/sbo_head.py", "scatter_add(dh, left, dh0[:, :hidden], xp=xp)",
     "dh[left] = dh0[:, :hidden]",  # shared boundaries overwritten instead of accumulated
     {"sbo_head_backward", "pretraining_gradients", "pretraining_gradients_scaled"}),
    ("A2", "minispanbert/model/spanbert_loss.py", '        decoder_grad += sbo_grads.pop("bert.embeddings.word_embeddings.weight")\n',
     '        sbo_grads.pop("bert.embeddings.word_embeddings.weight")\n',  # tied embedding misses the SBO decoder
     {"pretraining_gradients", "pretraining_gradients_scaled"}),
    ("A3", "minispanbert/optim.py", "decay = weight_decay if decay_mask is None or decay_mask[name] else 0.0",
     "decay = weight_decay",  # AdamW decays biases and LayerNorm too
     {"adamw_decay_mask"}),
    ("A3", "minispanbert/optim.py",
     "    if is_cupy(xp) or not clip_coef >= 1.0:\n        for g in grads.values():\n            g *= clip_coef\n",
     "    for g in grads.values():\n"  # clipping each tensor to max_norm on its own
     "        g *= xp.minimum(max_norm / (xp.sqrt(xp.vdot(g.reshape(-1), g.reshape(-1))) + CLIP_NORM_EPS), 1.0)\n",
     {"clip_grad_norm"}),
    ("A3", "minispanbert/finetune/qa_head.py", "loss = (start_loss + end_loss) / 2", "loss = start_loss + end_loss",
     {"qa_loss"}),  # the QA loss not halved: its backward is right, so qa_gradients judges it by the reference
    ("A3", "minispanbert/finetune/squad.py",
     "    prediction_tokens = normalize_answer(prediction).split()\n    truth_tokens = normalize_answer(ground_truth).split()\n",
     "    prediction_tokens = list(normalize_answer(prediction))\n    truth_tokens = list(normalize_answer(ground_truth))\n",
     {"f1_score", "f1_edge_cases"}),  # F1 over characters instead of words
    ("A3", "minispanbert/finetune/squad.py", "start_candidates = np.flatnonzero(feature.token_is_max_context)",
     "start_candidates = np.arange(len(starts))",  # answers may start where the window lacks maximal context
     {"decode_constraints"}),
]

# Gradescope's results.json (https://gradescope-autograders.readthedocs.io/en/latest/specs/)
GS_TOP_KEYS = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
               "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
GS_TEST_KEYS = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
                "tags", "visibility", "extra_data"}
GS_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
GS_FORMATS = {"text", "html", "simple_format", "md", "ansi"}


def validate_gradescope(report: dict) -> None:
    report = json.loads(json.dumps(report, allow_nan=False))  # plain JSON, no NaN
    assert set(report) <= GS_TOP_KEYS, set(report) - GS_TOP_KEYS
    assert isinstance(report.get("tests", []), list) and ("score" in report or report["tests"])
    for key in ("score", "execution_time"):
        assert key not in report or isinstance(report[key], (int, float)) and report[key] >= 0
    assert report["visibility"] in GS_VISIBILITY and report["stdout_visibility"] in GS_VISIBILITY
    assert report["output_format"] in GS_FORMATS and isinstance(report["output"], str)
    for test in report["tests"]:
        assert set(test) <= GS_TEST_KEYS, set(test) - GS_TEST_KEYS
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
        assert isinstance(test["score"], (int, float)) and isinstance(test["max_score"], (int, float))
        assert 0 <= test["score"] <= test["max_score"]
        assert test["status"] in ("passed", "failed") and test["visibility"] in GS_VISIBILITY
        assert test["output_format"] in GS_FORMATS
        assert isinstance(test["tags"], list) and all(isinstance(tag, str) for tag in test["tags"])
    if report["tests"]:
        assert abs(report["score"] - sum(t["score"] for t in report["tests"])) < 1e-9


def solution_submission(spec, dest: Path, patch=None) -> Path:
    """A folder with the solution's files of ``spec``, optionally one text replaced (a planted bug)."""
    for rel in spec.files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dest / rel)
    if patch is not None:
        rel, old, new = patch
        text = (dest / rel).read_text()
        assert text.count(old) == 1, f"the planted bug's anchor {old!r} is not unique in {rel}"
        (dest / rel).write_text(text.replace(old, new))
    return dest


def failed(report) -> set[str]:
    """The graded functions' failed tests (a notebook's test cells, notebook_grading.py, aside)."""
    return {t["name"] for t in report["tests"] if t["status"] != "passed" and "notebook" not in t["tags"]}


def notebook_tests(autograder: Path) -> int:
    """How many notebook test cells the autograder grades (test_notebook_points.py tests them)."""
    path = autograder / "grade_cells.json"
    return sum(len(cells) for cells in json.loads(path.read_text()).values()) if path.is_file() else 0


@pytest.mark.parametrize("name", SHIPPED)
def test_student_copy_has_stubs_and_nothing_it_should_not(built, name):
    spec = assignments.load(name)
    student = built(name) / "student"
    files = [p for p in student.rglob("*") if p.is_file()]
    rels = [p.relative_to(student).as_posix() for p in files]
    assert not (student / ".git").exists()
    assert not [r for r in rels if "__pycache__" in r or r.endswith((".pyc", ".pyo"))]
    assert not [r for r in rels if r.startswith(EXCLUDED_PREFIXES)], "instructor material leaked"
    texts = {r: p.read_text(encoding="utf-8", errors="replace") for r, p in zip(rels, files)}

    # Each stub keeps its signature and docstring and raises a message naming the function.
    for f in spec.functions:
        tree = ast.parse(texts[f.path])
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == f.function)
        original = next(n for n in ast.parse((ROOT / f.path).read_text()).body
                        if isinstance(n, ast.FunctionDef) and n.name == f.function)
        assert ast.get_docstring(node) == ast.get_docstring(original)
        assert ast.unparse(node.args) == ast.unparse(original.args)
        assert len(node.body) == 2 and isinstance(node.body[1], ast.Raise)
        assert f.name in ast.unparse(node.body[1]) and "NotImplementedError" in ast.unparse(node.body[1])

    # No solution text: each body as a whole, and each of its distinctive lines (those found
    # nowhere else in the instructor's tracked files), appears in no file of the copy.
    originals = {r: (ROOT / r).read_text(encoding="utf-8", errors="replace") for r in tracked_files(ROOT)
                 if (ROOT / r).is_file()}
    everything = "\n".join(texts.values())
    for f in spec.functions:
        body = function_body(originals[f.path], f.function)
        assert body.strip() and body.strip() not in everything, f"{f.name}'s body is in the student copy"
        elsewhere = "\n".join(t for r, t in originals.items() if r != f.path) + originals[f.path].replace(body, "")
        distinctive = [ln.strip() for ln in body.splitlines() if len(ln.strip()) >= 20 and ln.strip() not in elsewhere]
        for line in distinctive:
            assert line not in everything, f"solution line of {f.name} found in the student copy: {line!r}"

    # Notebooks: no outputs, the solution regions replaced by nbgrader's stub, valid JSON.
    for rel in [r for r in rels if r.endswith(".ipynb")]:
        notebook = json.loads(texts[rel])
        for cell in notebook["cells"]:
            source = "".join(cell["source"])
            marker_lines = {line.strip() for line in source.splitlines()} & {"### BEGIN SOLUTION", "### END SOLUTION"}
            assert not marker_lines, f"{rel} keeps a solution marker"
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None
            if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
                assert "# YOUR CODE HERE\nraise NotImplementedError()" in source
        original = json.loads(originals[rel])
        for cell in original["cells"]:
            source = "".join(cell["source"])
            if "### BEGIN SOLUTION\n" in source:
                answer = source.split("### BEGIN SOLUTION\n")[1].split("### END SOLUTION")[0].strip()
                assert answer and answer not in texts[rel], f"{rel} keeps a reference answer"

    # No hidden test: neither its name nor its code; the visible tests' code only in .coursework/ (for `check`).
    outside = "\n".join(text for rel, text in texts.items() if not rel.startswith(".coursework/"))
    for t in spec.tests:
        assert f"def {t.name}(check" not in (everything if t.hidden else outside), f"graded test {t.name}'s code leaked"
        if t.hidden:
            assert t.name not in everything, f"hidden test {t.name} is named in the student copy"


@pytest.mark.parametrize("name", SHIPPED)
def test_student_copy_imports_and_its_unlisted_tests_pass(built, name):
    student = built(name) / "student"
    env = {**os.environ, "PYTHONPATH": str(student), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *UNLISTED_TESTS[name]],
                         cwd=student, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"{len(UNLISTED_TESTS[name])} passed" in run.stdout
    if name != "A1":
        return
    # The student copy cannot rebuild the assignment: it has no assignment files and no graded tests.
    run = subprocess.run([sys.executable, "-m", "minispanbert.coursework", "build", name, "--out", "rebuilt"],
                         cwd=student, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.startswith(f"error: unknown assignment '{name}'"), run.stderr
    assert "none: this is a student copy" in run.stderr and not (student / "rebuilt").exists()


def test_grading_with_relative_paths_as_the_readme_types_them(built, tmp_path):
    """python -m minispanbert.coursework grade hw1/student --autograder hw1/autograder, run from the
    folder that holds hw1/: the grading process, which runs in a temporary folder, still finds the
    autograder's checks (it once looked for them relative to that folder and scored 0). A folder that
    is not a complete autograder is one line naming what it lacks, not every test failing."""
    shutil.copytree(built("A1"), tmp_path / "hw1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def readme_grade(autograder):
        return subprocess.run([sys.executable, "-m", "minispanbert.coursework", "grade", "hw1/student",
                               "--autograder", autograder], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    run = readme_grade("hw1/autograder")
    assert run.returncode == 0, run.stderr
    assert f"score 0 / {assignments.load('A1').max_score:g}" in run.stdout
    assert run.stdout.count("FAIL ") == len(assignments.load("A1").tests) + notebook_tests(built("A1") / "autograder")
    assert "NotImplementedError" in run.stdout and "grader stopped" not in run.stdout
    assert "coursework_checks" not in run.stdout
    run = readme_grade("hw1")
    assert run.returncode == 2 and run.stdout == "" and run.stderr.splitlines() == [
        "error: hw1 is not a built autograder (no assignment.toml, references.npz, base/minispanbert, "
        "grader/coursework_checks/runner.py): pass the DIR/autograder folder that "
        "`python -m minispanbert.coursework build ID --out DIR` wrote"]
    (tmp_path / "hw1" / "autograder" / "references.npz").unlink()
    run = readme_grade("hw1/autograder")
    assert run.returncode == 2 and run.stderr.startswith("error: hw1/autograder is not a built autograder (no "
                                                         "references.npz): "), run.stderr


def test_a_grading_process_that_cannot_start_says_so_on_every_test(built, tmp_path):
    """A grading process that fails before running any test (here: its runner cannot import a
    module) gives each test that reason, not 'the grader stopped before this test finished'."""
    autograder = tmp_path / "autograder"
    shutil.copytree(built("A1") / "autograder", autograder)
    runner = autograder / "grader" / "coursework_checks" / "runner.py"
    runner.write_text(runner.read_text().replace("import argparse\n", "import argparse\nimport numpy_not_here\n", 1))
    report = grade(built("A1") / "student", autograder)
    validate_gradescope(report)
    assert report["score"] == 0
    for test in report["tests"][:len(assignments.load("A1").tests)]:  # the notebook's cell is graded apart
        assert test["output"].startswith("the grading process failed before any test ran (exit code 1: "
                                         "ModuleNotFoundError: No module named 'numpy_not_here')"), test["output"]


@pytest.mark.parametrize("name", SHIPPED)
def test_untouched_student_copy_scores_zero_naming_each_stub(built, name, tmp_path, capsys):
    spec = assignments.load(name)
    assert coursework_main(["grade", str(built(name) / "student"), "--autograder", str(built(name) / "autograder"),
                            "--out", str(tmp_path / "results.json")]) == 0
    summary = capsys.readouterr().out
    assert f"score 0 / {spec.max_score:g}" in summary
    assert summary.count("FAIL ") == len(spec.tests) + notebook_tests(built(name) / "autograder")
    report = json.loads((tmp_path / "results.json").read_text())
    validate_gradescope(report)
    assert report["score"] == 0
    listed = {f.name for f in spec.functions}
    for test in report["tests"][:len(spec.tests)]:
        assert test["output"].startswith("NotImplementedError: "), test
        named = test["output"].split()[1].rstrip(":")
        assert named in listed, test["output"]


@pytest.mark.parametrize("name", SHIPPED)
def test_solution_submitted_as_zip_scores_full_points(built, name, tmp_path):
    spec = assignments.load(name)
    copy = tmp_path / "student"
    shutil.copytree(built(name) / "student", copy)
    zip_path, warnings = submit(copy)
    assert len(warnings) == len(spec.functions) and all("still the stub" in w for w in warnings)
    solution_submission(spec, copy)
    zip_path, warnings = submit(copy)
    assert warnings == []
    with zipfile.ZipFile(zip_path) as archive:
        assert set(spec.files) <= set(archive.namelist())
    report = grade(zip_path, built(name) / "autograder")
    validate_gradescope(report)
    assert report["score"] == spec.max_score, "\n".join(t["output"] for t in report["tests"] if t["status"] != "passed")


@pytest.mark.parametrize("bug", PLANTED_BUGS, ids=lambda b: f"{b[0]}-{Path(b[1]).stem}-{sorted(b[4])[0]}")
def test_planted_bug_loses_exactly_the_points_of_its_tests(built, bug, tmp_path):
    name, rel, old, new, expected = bug
    spec = assignments.load(name)
    report = grade(solution_submission(spec, tmp_path, (rel, old, new)), built(name) / "autograder")
    assert failed(report) == expected, {t["name"]: t["output"] for t in report["tests"] if t["status"] != "passed"}
    # partial credit: a failing test keeps the share of its values that still match (test_feedback.py pins
    # the shares), so the bug costs points on exactly its tests, some of each, nothing elsewhere
    for test in report["tests"]:
        assert (test["score"] < test["max_score"]) == (test["name"] in expected), test
    assert report["score"] == pytest.approx(sum(t["score"] for t in report["tests"]))
    for test in report["tests"]:
        if test["name"] in expected:  # a message a student can act on, not a traceback
            assert "Traceback" not in test["output"] and len(test["output"]) < 2000, test["output"]


CRASHING_FILES = {
    # linear_forward never returns (a Python loop: the per-test alarm stops it)
    "minispanbert/layers/linear.py": ("y = x.reshape(-1, x.shape[-1]) @ weight.T", "while True:\n        pass"),
    # softmax_forward kills its process
    "minispanbert/layers/softmax.py": ("y = x - x.max(axis=-1, keepdims=True)", "import os; os._exit(3)"),
    # layernorm_backward prints 20 MB before answering correctly
    "minispanbert/layers/layernorm.py": ("xhat, rstd, gamma = cache",
                                         "print('spam' * 5_000_000)\n    xhat, rstd, gamma = cache"),
}


def test_crashing_hanging_chatty_and_torch_importing_submission_still_gets_valid_results(built, tmp_path):
    spec = assignments.load("A1")
    autograder = tmp_path / "autograder"
    shutil.copytree(built("A1") / "autograder", autograder)
    toml = autograder / "assignment.toml"
    toml.write_text(toml.read_text().replace("time_limit = 10", "time_limit = 2"))
    submission = solution_submission(spec, tmp_path / "submission")
    for rel, (old, new) in CRASHING_FILES.items():
        text = (submission / rel).read_text()
        (submission / rel).write_text(text.replace(old, new, 1))
    gelu = submission / "minispanbert/layers/gelu.py"
    gelu.write_text("import torch\n" + gelu.read_text())
    report = grade(submission, autograder, out=tmp_path / "results.json")
    validate_gradescope(json.loads((tmp_path / "results.json").read_text()))
    by_name = {t["name"]: t for t in report["tests"]}
    for name in ("linear_forward", "linear_backward", "attention_forward", "attention_backward"):
        assert "time limit of 2 s exceeded" in by_name[name]["output"], by_name[name]
    for name in ("softmax_forward", "softmax_backward"):
        assert "ended unexpectedly" in by_name[name]["output"], by_name[name]
    for name in ("gelu_forward", "gelu_backward"):
        assert "imports torch" in by_name[name]["output"], by_name[name]
    assert by_name["layernorm_backward_input"]["status"] == "passed"
    assert "more characters of output cut" in by_name["layernorm_backward_input"]["output"]
    assert len(json.dumps(report)) < 200_000
    passing = {"layernorm_forward", "layernorm_backward_input", "layernorm_backward_params", "layernorm_backward_3d",
               "cross_entropy_forward", "cross_entropy_backward", "cross_entropy_edge_cases"}
    assert failed(report) == {t.name for t in spec.tests} - passing
    assert report["score"] == sum(t.points for t in spec.tests if t.name in passing)


def test_cli_reports_bad_input_in_one_line(built, tmp_path, capsys):
    assert coursework_main(["build", "A9", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown assignment 'A9'")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert coursework_main(["build", "A1", "--out", str(tmp_path / "full")]) == 2
    assert "pick a new --out" in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert coursework_main(["grade", str(tmp_path / "nothing"), "--autograder", str(built("A1") / "autograder"),
                            "--out", str(tmp_path / "results.json")]) == 2
    assert capsys.readouterr().err.startswith("error: submission")
    report = json.loads((tmp_path / "results.json").read_text())  # Gradescope still gets a valid file
    validate_gradescope(report)
    assert report["score"] == 0 and "could not grade" in report["output"]
    assert coursework_main(["submit", "--root", str(tmp_path)]) == 2
    assert "no coursework.json" in capsys.readouterr().err


def test_notebook_exercises_are_nbgrader_solution_cells():
    """Every cell with a solution region carries nbgrader's solution metadata and a unique grade_id
    (nbgrader generate_assignment refuses a region outside a solution cell), and the delimiters
    appear nowhere else (nbgrader matches them inside any line, prose included). Checked against
    nbgrader 0.9.6's ClearSolutions, whose output equals notebooks.release_notebook's."""
    grade_ids = []
    for path in sorted((ROOT / "notebooks").glob("*/*.ipynb")):
        for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            lines = {line.strip() for line in "".join(cell["source"]).splitlines()}
            # nbgrader takes any line CONTAINING the delimiter as a marker: no other mention may exist
            mentions = {line for line in lines if "BEGIN SOLUTION" in line or "END SOLUTION" in line}
            assert mentions <= {"### BEGIN SOLUTION", "### END SOLUTION"}, f"{path.name} cell {index}: {mentions}"
            assert not mentions or cell["cell_type"] == "code", f"{path.name} cell {index}: a marker outside code"
            if "### BEGIN SOLUTION" in lines:
                meta = cell.get("metadata", {}).get("nbgrader", {})
                assert "### END SOLUTION" in lines, f"{path.name} cell {index}: unclosed solution region"
                assert meta.get("solution") is True and meta.get("grade_id"), (
                    f"{path.name} cell {index}: add nbgrader metadata (solution: true, a grade_id)")
                grade_ids.append(meta["grade_id"])
    assert grade_ids and len(set(grade_ids)) == len(grade_ids)


def test_shipped_assignments_load_and_cover_their_functions():
    for name in assignments.available():
        spec = assignments.load(name)
        graded = {c for t in spec.tests for c in t.covers}
        assert {f.name for f in spec.functions} <= graded, f"{name}: a listed function has no graded test"
        assert any(t.hidden for t in spec.tests) and any(not t.hidden for t in spec.tests)


def test_hidden_tests_stay_hidden_and_from_torch_import_is_forbidden_too(built, tmp_path):
    """Gradescope shows a test whose "visibility" is "after_published" only once grades are published
    (its autograder specification), so a hidden test must say so in results.json; and a file that
    imports PyTorch in its `from torch import ...` form scores 0 on the tests covering it, as
    `import torch` does."""
    spec = assignments.load("A1")
    submission = solution_submission(spec, tmp_path / "submission")
    gelu = submission / "minispanbert/layers/gelu.py"
    gelu.write_text("from torch import nn  # noqa\n" + gelu.read_text())
    report = grade(submission, built("A1") / "autograder", out=tmp_path / "results.json")
    by_name = {t["name"]: t for t in json.loads((tmp_path / "results.json").read_text())["tests"]}
    hidden = {t.name for t in spec.tests if t.hidden}
    assert hidden and {n for n, t in by_name.items() if t["visibility"] == "after_published"} == hidden
    assert all(by_name[n]["visibility"] == "visible" for n in by_name if n not in hidden)
    for name in ("gelu_forward", "gelu_backward"):
        assert by_name[name]["score"] == 0 and "imports torch" in by_name[name]["output"], by_name[name]
    assert report["score"] < spec.max_score



def test_every_spelling_of_a_forbidden_import_is_found_and_nothing_else():
    """The forms Python accepts for importing PyTorch (or JAX, autograd) are all caught, dotted and
    aliased ones included; a relative import or a module that merely starts with "torch" is not."""
    for source in ("import torch", "import torch.nn as nn", "import numpy, torch.nn.functional",
                   "from torch import nn", "from torch.autograd import grad", "def f():\n    import jax.numpy as jnp",
                   "import autograd.numpy as anp"):
        assert forbidden_imports(source.encode()) in (["torch"], ["jax"], ["autograd"]), source
    for source in ("import numpy as np", "from . import torch", "import torchvision_like_name", "x = 'import torch'"):
        assert forbidden_imports(source.encode()) == [], source


def test_a_nested_submission_is_found_beside_a_stray_copy_of_the_same_file(tmp_path):
    """A zip of the student's folder (one folder level above the project paths) that also holds a
    backup copy of a graded file elsewhere: the file at the project path is graded, not the copy."""
    wanted = "minispanbert/layers/gelu.py"
    with zipfile.ZipFile(tmp_path / "submission.zip", "w") as archive:
        archive.writestr("hw1/" + wanted, "graded = True\n")
        archive.writestr("hw1/backup/gelu.py", "graded = False\n")
    found, notes = read_submission(tmp_path / "submission.zip", [wanted])
    assert found == {wanted: b"graded = True\n"} and notes == []

def folder_contents(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_build_killed_at_any_change_leaves_no_folder_or_the_complete_build(built, tmp_path):
    """A build appears complete or not at all: traced, every change it makes to the disk before its
    last lies inside a hidden sibling of --out, and the last moves that folder to --out (all inside
    the folder lock, whose file is created first and removed last). Killed just
    before the first changes, the middle one and each of the last three, --out does not exist; run
    to the end, it holds exactly the files of an independent build; a new build after a kill succeeds
    and leaves nothing hidden behind."""
    reference = folder_contents(built("A1"))
    changes = run_with_a_crash(lambda: build("A1", tmp_path / "traced"), crash_at=0)
    staging = str(tmp_path / ".traced.new.")
    lock = str(tmp_path / ".traced.lock")  # atomic.folder_lock's file: taken first, removed last
    changes = [c for c in changes if c[1] != str(tmp_path)]  # mkdir of the existing parent
    assert changes[0][1] == lock and changes[-1] == ("os.remove", lock)
    *filling, (last_event, last_path) = changes[1:-1]
    assert [path for _, path in filling if not path.startswith(staging)] == []
    assert last_event == "os.rename" and last_path.startswith(staging)
    assert folder_contents(tmp_path / "traced") == reference
    for k in sorted({1, 2, 3, len(changes) // 2, len(changes) - 2, len(changes) - 1, len(changes)}):
        out = tmp_path / f"killed{k}"
        run_with_a_crash(lambda: build("A1", out), crash_at=k)
        assert not out.exists(), k
        build("A1", out)
        assert folder_contents(out) == reference, k
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".killed{k}.")] == [], k


# Gradescope's layout (its autograder specification): the bundle unzipped in ROOT/source, setup.sh run
# there once, run_autograder copied to ROOT, the submission in ROOT/submission, ROOT/results/results.json.
BUNDLE_TOOLS = [tool for tool in ("bash", "timeout", "mktemp") if shutil.which(tool) is None]
IN_A_VENV = sys.prefix != sys.base_prefix  # a --system-site-packages venv would miss this one's packages


def gradescope_root(root: Path, autograder_zip: Path) -> Path:
    """``root`` laid out as Gradescope lays out /autograder, from the uploaded zip (modes as stored)."""
    with zipfile.ZipFile(autograder_zip) as archive:
        for info in archive.infolist():
            archive.extract(info, root / "source")
            (root / "source" / info.filename).chmod((info.external_attr >> 16) & 0o777)
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    return root


def bundle_env(root: Path, tmp: Path, **extra) -> dict:
    """The scripts' environment: rooted in ``root``, python3 = this interpreter, offline (the new venv
    sees this interpreter's packages; pip may not reach an index), no PYTHONPATH of ours, and an
    apt-get that refuses (setup.sh needs it only where python3 or its venv module is missing)."""
    bin_dir = tmp / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "python3").symlink_to(sys.executable)
        (bin_dir / "apt-get").write_text("#!/bin/sh\necho \"the test's apt-get was called: $*\" >&2\nexit 97\n")
        (bin_dir / "apt-get").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "AUTOGRADER_ROOT": str(root),
            "AUTOGRADER_VENV_ARGS": "--system-site-packages", "PIP_NO_INDEX": "1", "PYTHONNOUSERSITE": "1", **extra}


def run_script(script: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(script)], env=env, cwd=script.parent, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.fixture(scope="module")
def gradescope(built, tmp_path_factory):
    """A1's autograder.zip set up by its own setup.sh in a temporary Gradescope layout -> (root, env)."""
    if BUNDLE_TOOLS or IN_A_VENV:
        pytest.skip(f"the bundle test needs {BUNDLE_TOOLS} and a Python outside a venv (sys.prefix {sys.prefix})")
    tmp = tmp_path_factory.mktemp("gradescope")
    root = gradescope_root(tmp / "autograder", built("A1") / "autograder.zip")
    env = bundle_env(root, tmp)
    setup = run_script(root / "source" / "setup.sh", env)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    assert f"setup.sh: ready: {root / 'venv'} (Python " in setup.stderr
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    return root, env


def run_autograder(root: Path, env: dict, **extra) -> dict:
    """Run ROOT/run_autograder -> results.json (checked against Gradescope's format)."""
    run = run_script(root / "run_autograder", {**env, **extra})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    validate_gradescope(report)
    return report


def test_gradescope_bundle_installs_and_always_writes_results_json(gradescope):
    """The uploaded zip, set up by its setup.sh in a fresh venv and run as Gradescope runs it: the
    solution scores full marks, the untouched stubs 0; a kit that cannot import, a run past the time
    limit and a missing venv each still leave a valid results.json with score 0 and the reason (and
    never an earlier run's results)."""
    root, env = gradescope
    spec = assignments.load("A1")
    submission = root / "submission"
    solution_submission(spec, submission)
    report = run_autograder(root, env)
    assert report["score"] == spec.max_score, "\n".join(t["output"] for t in report["tests"] if t["status"] != "passed")

    for rel in spec.files:  # the untouched stubs, as the student copy has them
        shutil.copyfile(root / "source" / "base" / rel, submission / rel)
    report = run_autograder(root, env)
    assert report["score"] == 0 and len(report["tests"]) == len(spec.tests) + notebook_tests(root / "source")
    assert all(t["output"].startswith("NotImplementedError: ") for t in report["tests"][:len(spec.tests)])

    report = run_autograder(root, env, AUTOGRADER_TIMEOUT_S="0.05")
    assert report["score"] == 0 and report["tests"] == []
    assert report["output"].endswith("could not grade this submission: grading ran past 0.05 s and was stopped")

    kit = root / "source" / "base" / "minispanbert" / "coursework" / "grade.py"
    text = kit.read_text(encoding="utf-8")  # the kit loses a module its environment lacks
    kit.write_text(text.replace("from __future__ import annotations\n",
                                "from __future__ import annotations\nimport numpy_this_venv_lacks\n", 1))
    try:
        report = run_autograder(root, env)
    finally:
        kit.write_text(text, encoding="utf-8")
    assert report["score"] == 0 and report["tests"] == []
    assert report["output"].endswith("the grading kit failed (exit code 1): ModuleNotFoundError: "
                                     "No module named 'numpy_this_venv_lacks'"), report["output"]

    (root / "venv").rename(root / "venv-aside")
    try:
        report = run_autograder(root, env)
    finally:
        (root / "venv-aside").rename(root / "venv")
    assert report["score"] == 0 and "setup.sh did not finish" in report["output"]


def test_gradescope_setup_names_the_python_it_needs_never_redoes_a_venv_and_falls_back_to_ranges(gradescope, tmp_path):
    """setup.sh names the Python it needs in one line on an older one; refuses to touch an existing
    venv; and where the versions that recorded the references do not install (NumPy 2.4 on Python
    3.10), installs those pyproject.toml accepts and says so."""
    root, env = gradescope
    old_bin = tmp_path / "old"
    old_bin.mkdir()
    (old_bin / "python3").write_text("#!/bin/sh\necho 'Python 3.8.10'\nexit 1\n")
    (old_bin / "python3").chmod(0o755)
    other = tmp_path / "other"
    shutil.copytree(root / "source", other / "source")
    other_env = bundle_env(other, tmp_path)
    run = run_script(other / "source" / "setup.sh", {**other_env, "PATH": f"{old_bin}{os.pathsep}{other_env['PATH']}"})
    assert run.returncode == 1 and run.stderr.splitlines() == [
        "setup.sh: the autograder needs Python 3.10 or newer and this image has Python 3.8.10: choose the base "
        "image Ubuntu 22.04 or newer in the autograder settings"]
    assert sorted(p.name for p in other.iterdir()) == ["source"]

    before = sorted(p.name for p in (root / "venv").iterdir())
    run = run_script(root / "source" / "setup.sh", env)
    assert run.returncode == 1 and run.stderr.splitlines() == [
        f"setup.sh: {root / 'venv'} already exists: setup.sh runs once per image; remove that folder to set up again"]
    assert sorted(p.name for p in (root / "venv").iterdir()) == before

    requirements = other / "source" / "requirements.txt"
    pins = requirements.read_text().splitlines()
    requirements.write_text("\n".join("numpy==0.0.1" if pin.startswith("numpy==") else pin for pin in pins) + "\n")
    run = run_script(other / "source" / "setup.sh", other_env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "(requirements.txt) do not install on Python 3." in run.stderr
    assert "installing the newest that minispanbert accepts (requirements-ranges.txt)" in run.stderr
    assert (other / "venv" / "bin" / "python").exists()


@pytest.mark.parametrize("parser", ["tomli", "none"])
def test_assignments_read_without_tomllib(parser):
    """On Python 3.10 (no tomllib) the kit reads its TOML with the tomli package, which setup.sh
    installs there; with neither, loading an assignment says what to install in one line."""
    if parser == "tomli":
        prelude = ("import sys, importlib.util\n"
                   "real = importlib.import_module('tomli') if importlib.util.find_spec('tomli') else None\n"
                   "if real is None and sys.version_info >= (3, 11):\n"
                   "    import tomllib as real  # tomli became tomllib: the same module under tomli's name\n"
                   "    del sys.modules['tomllib']\n"
                   "if real is None:\n"
                   "    sys.exit(77)\n"
                   "sys.modules['tomli'] = real\n")
    else:
        prelude = "import sys\nsys.modules['tomli'] = None\n"
    code = (prelude + "sys.modules['tomllib'] = None\n"
            "from minispanbert.coursework import assignment\n"
            "assert assignment.tomllib is sys.modules['tomli']\n"
            "try:\n"
            "    print(assignment.load('A1').max_score)\n"
            "except ValueError as exc:\n"
            "    print(f'error: {exc}')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    if run.returncode == 77:
        pytest.skip("neither tomllib nor tomli is available to stand in for it")
    assert run.returncode == 0, run.stderr
    if parser == "tomli":
        assert run.stdout.strip() == f"{assignments.load('A1').max_score}"
    else:
        assert run.stdout.strip().startswith("error: reading the assignment file ") and run.stdout.strip().endswith(
            "needs Python 3.11+ or the tomli package: pip install tomli"), run.stdout
