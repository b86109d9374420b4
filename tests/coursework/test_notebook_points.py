"""Points for notebook cells (minispanbert/coursework/notebook_grading.py): A1 opted in (its
assignment file plus ``graded_notebooks``) grades the autograded test cell of
notebooks/core/01_attention.ipynb (nbgrader ``grade: true``, 2 points), which checks the
notebook's permutation exercise. Each test grades one submitted notebook with A1's solution package
(so only the notebook decides), in a real kernel confined by the notebook runner: the solution
notebook scores the points, the released one (exercise stripped) scores 0 naming the error, an
edited or deleted test cell does not help, a hanging notebook is stopped at its limit and leaves no
process, and the kernel cannot touch the autograder. One notebook run per test (about 5 s on two
cores: the runner's imports, the kernel's start, the notebook's cells).
"""
from __future__ import annotations

import dataclasses
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from test_sandbox import alive, tree_digest  # its process and folder checks (and its skips: git, /proc)

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework.build import build, project_root
from minispanbert.coursework.grade import grade
from minispanbert.coursework.notebook_grading import grade_notebooks

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
ROOT = project_root()
NOTEBOOK = "notebooks/core/01_attention.ipynb"


def opted_in_a1(folder: Path) -> Path:
    """A1's assignment file with its notebook 01 graded (the shipped A1 leaves it ungraded: a kernel
    run per grading costs about 5 s)."""
    text = (assignments.ASSIGNMENTS_DIR / "A1.toml").read_text(encoding="utf-8")
    anchor = "student_tests = "
    path = folder / "A1.toml"
    path.write_text(text.replace(anchor, f'graded_notebooks = ["{NOTEBOOK}"]\n{anchor}', 1), encoding="utf-8")
    return path


SPEC_FILE = opted_in_a1(Path(tempfile.mkdtemp(prefix="a1-notebook-")))  # read at import: the tests' defaults
SPEC = assignments.load(str(SPEC_FILE))
TEST_NAME = "01_attention.ipynb: permutation-equivariance"
POINTS = 2.0


@pytest.fixture(scope="module")
def a1(tmp_path_factory):
    return build(str(SPEC_FILE), tmp_path_factory.mktemp("notebook-points") / "A1")


def solution_package(dest: Path) -> Path:
    for rel in SPEC.files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dest / rel)
    return dest


def released(a1: Path) -> dict:
    """The notebook as students receive it: the exercise is ``raise NotImplementedError()``."""
    return json.loads((a1 / "student" / NOTEBOOK).read_text(encoding="utf-8"))


def cell_index(notebook: dict, grade_id: str) -> int:
    return next(i for i, c in enumerate(notebook["cells"])
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def insert_code(notebook: dict, before: int, source: str) -> dict:
    notebook["cells"].insert(before, {"cell_type": "code", "execution_count": None, "id": f"added-{before}",
                                      "metadata": {}, "outputs": [], "source": source})
    return notebook


def grade_notebook(a1: Path, tmp_path: Path, notebook: dict, spec=SPEC) -> dict:
    """The notebook's test as graded in a submission with the solution package -> its results.json entry."""
    submission = solution_package(tmp_path / "submission")
    (submission / NOTEBOOK).parent.mkdir(parents=True, exist_ok=True)
    (submission / NOTEBOOK).write_text(json.dumps(notebook), encoding="utf-8")
    project = tmp_path / "project"
    shutil.copytree(a1 / "autograder" / "base", project)
    solution_package(project)
    (tmp_path / "work").mkdir()
    tests = grade_notebooks(spec, submission, autograder=a1 / "autograder", project=project, work=tmp_path / "work")
    assert [t["name"] for t in tests] == [TEST_NAME]
    return tests[0]


def test_the_solution_notebook_earns_the_cells_points_in_the_whole_grading(a1, tmp_path):
    """grade() adds the notebook's test after the graded functions' tests: the solution (package and
    notebook) scores every point, the notebook's two included."""
    submission = solution_package(tmp_path / "submission")
    (submission / NOTEBOOK).parent.mkdir(parents=True)
    shutil.copyfile(ROOT / NOTEBOOK, submission / NOTEBOOK)
    report = grade(submission, a1 / "autograder")
    test = report["tests"][-1]
    assert (test["name"], test["score"], test["max_score"], test["status"]) == (TEST_NAME, POINTS, POINTS, "passed")
    assert test["number"] == str(len(SPEC.tests) + 1)
    assert report["score"] == report["extra_data"]["max_score"] == SPEC.max_score + POINTS
    assert (a1 / "autograder" / "grade_cells.json").is_file() and "nbclient" in (
        a1 / "autograder" / "requirements.txt").read_text()


def test_the_released_notebook_scores_zero_and_editing_the_test_cell_does_not_help(a1, tmp_path):
    """The released notebook (exercise stripped) with its test cell emptied to ``pass`` and claiming 100
    points: the instructor's cell runs instead and fails, naming the error and its earlier cause. A
    notebook whose test cell is gone scores 0, saying so (no kernel needed)."""
    notebook = released(a1)
    index = cell_index(notebook, "permutation-equivariance")
    notebook["cells"][index]["source"] = "pass"
    notebook["cells"][index]["metadata"]["nbgrader"]["points"] = 100
    test = grade_notebook(a1, tmp_path / "edited", notebook)
    assert (test["score"], test["max_score"], test["status"]) == (0.0, POINTS, "failed")
    assert "NameError: name 'permuted_out' is not defined" in test["output"], test["output"]
    assert "NotImplementedError" in test["output"], test["output"]  # the exercise cell's stub, named as the cause

    del notebook["cells"][index]
    test = grade_notebook(a1, tmp_path / "deleted", notebook)
    assert test["score"] == 0 and "no cells with grade_id 'permutation-equivariance'" in test["output"]


def test_a_hanging_notebook_is_stopped_at_its_limit_and_leaves_no_process(a1, tmp_path):
    """A cell starts a process in its own group, one in a new session and a double-forked daemon,
    then loops forever with SIGINT ignored, in the solution notebook: stopped at the 3 s limit, 0
    points, and none of its processes alive once grading returns."""
    marker = f"{random.randint(10**6, 10**7)}.5"
    notebook = json.loads((ROOT / NOTEBOOK).read_text(encoding="utf-8"))
    insert_code(notebook, cell_index(notebook, "permutation-equivariance"), f"""\
import os, signal, subprocess
subprocess.Popen(["sleep", "{marker}"])
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{marker}"])
    os._exit(0)
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    pass
""")
    started = time.monotonic()
    test = grade_notebook(a1, tmp_path, notebook, spec=dataclasses.replace(SPEC, notebook_time_limit=3))
    assert time.monotonic() - started < 30
    assert test["score"] == 0 and "ran past its time limit of 3 s" in test["output"], test["output"]
    assert alive(marker) == []


def test_the_kernel_cannot_touch_the_autograder_or_the_submission_copy(a1, tmp_path):
    """A cell tries to read the autograder's references and to append to its files and to the
    submission copy's package, then raises how many it managed: none (Landlock)."""
    before = tree_digest(a1 / "autograder")
    autograder = a1 / "autograder"
    targets = [autograder / "assignment.toml", autograder / "grade_cells.json",
               autograder / "grader" / "coursework_checks" / "runner.py", tmp_path / "project" / SPEC.files[0]]
    notebook = insert_code(released(a1), 2, f"""\
done = []
for target in {[str(t) for t in targets]!r}:
    try:
        with open(target, "a") as f:
            f.write("# tampered")
        done.append(target)
    except OSError:
        pass
try:
    open({str(autograder / "references.npz")!r}, "rb").read()
    done.append("read the references")
except OSError:
    pass
raise RuntimeError(f"tampered with {{len(done)}}: {{done}}")
""")
    test = grade_notebook(a1, tmp_path, notebook)
    assert test["score"] == 0 and "RuntimeError: tampered with 0: []" in test["output"], test["output"]
    assert tree_digest(autograder) == before
