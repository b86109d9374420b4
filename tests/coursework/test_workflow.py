"""The coursework kit's everyday commands (minispanbert/coursework/workflow.py): ``check`` in the
student copy (the visible tests only, nothing hidden shipped), ``grade-all`` over a folder of
generated submissions (the CSV and the reports, written atomically, a broken submission a row of
its own), and ``new`` (an assignment file that ``build --assignment`` accepts, never overwritten).

Submissions are generated from a built A1: the student copy with some listed functions' bodies
replaced by the solution's (the instructor checkout's source). A test then passes exactly when
every function it covers was filled in, which gives each expected score from the assignment file.
"""
from __future__ import annotations

import ast
import csv
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework.__main__ import main as coursework_main
from minispanbert.coursework.build import build, project_root
from minispanbert.coursework.grade import grade
from minispanbert.coursework.stubs import function_body

from crash_points import run_with_a_crash

ROOT = project_root()
if subprocess.run(["git", "-C", str(ROOT), "ls-files", "--error-unmatch", "pyproject.toml"],
                  capture_output=True).returncode != 0:
    pytest.skip("the coursework kit builds from a git checkout; this is not one", allow_module_level=True)
SPEC = assignments.load("A1")
HIDDEN = {t.name for t in SPEC.tests if t.hidden}
VISIBLE = [t for t in SPEC.tests if not t.hidden]


@pytest.fixture(scope="module")
def a1(tmp_path_factory):
    return build("A1", tmp_path_factory.mktemp("workflow") / "A1")


def fill(student: Path, dest: Path, functions) -> Path:
    """A copy of the student folder with ``functions`` (names from A1.toml) given the solution's body."""
    shutil.copytree(student, dest)
    for f in SPEC.functions:
        if f.name in functions:
            path = dest / f.path
            text = path.read_text()
            node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == f.function)
            lines = text.splitlines(keepends=True)
            lines[node.body[0].end_lineno:node.end_lineno] = [function_body((ROOT / f.path).read_text(), f.function)]
            path.write_text("".join(lines))
    return dest


def expected_points(functions, tests) -> dict[str, float]:
    """{test: points} when exactly ``functions`` are implemented: a test needs every function it covers."""
    return {t.name: t.points if set(t.covers) <= set(functions) else 0.0 for t in tests}


LINEAR_AND_GELU = {"minispanbert.layers.linear:linear_forward", "minispanbert.layers.linear:linear_backward",
                   "minispanbert.layers.gelu:gelu_forward"}


def run_cli(*args, cwd, kit=None):
    """The command line run in ``cwd`` with the kit of ``kit`` (default: ``cwd``'s own, as a student runs it)."""
    env = {**os.environ, "PYTHONPATH": str(kit or cwd)}
    return subprocess.run([sys.executable, "-m", "minispanbert.coursework", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_student_copy_ships_the_visible_tests_and_nothing_of_the_hidden_ones(a1):
    """student/.coursework holds exactly the visible tests' references (not the outputs of known wrong
    variants, "<test>/<what>@<variant>") and code; no byte of the student copy names a hidden test (its
    references are keyed by test name, its code is a named function)."""
    local = a1 / "student" / ".coursework"
    with np.load(a1 / "autograder" / "references.npz", allow_pickle=False) as full, \
            np.load(local / "references.npz", allow_pickle=False) as shipped:
        wanted = {key for key in full.files if key.split("/")[0] in {t.name for t in VISIBLE} and "@" not in key}
        assert wanted and set(shipped.files) == wanted
        for key in wanted:
            assert np.array_equal(shipped[key], full[key]), key
    module = ast.parse((local / "grader" / "coursework_checks" / "a1.py").read_text())
    graded = {n.name for n in module.body if isinstance(n, ast.FunctionDef) and n.decorator_list}
    assert graded == {t.name for t in VISIBLE}
    assert not (local / "grader" / "coursework_checks" / "a2.py").exists()
    for path in (a1 / "student").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name in HIDDEN:
                assert name.encode() not in data, f"hidden test {name} named in {path.relative_to(a1)}"


def test_check_grades_the_visible_tests_as_the_autograder_does(a1, tmp_path):
    """`coursework check` in a student copy with three functions written: a table row per visible
    test with its points, PASS exactly where every covered function is written, the visible total,
    and the hidden tests counted but not run; the autograder agrees on every visible test."""
    student = fill(a1 / "student", tmp_path / "student", LINEAR_AND_GELU)
    run = run_cli("check", cwd=student)
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in run.stdout.splitlines()[1:len(VISIBLE) + 1]}
    expected = expected_points(LINEAR_AND_GELU, VISIBLE)
    assert set(rows) == set(expected)
    for t in VISIBLE:
        assert rows[t.name] == [f"{expected[t.name]:g}/{t.points:g}", "PASS" if expected[t.name] else "FAIL"], t.name
    assert f"visible tests: {sum(expected.values()):g} / {sum(t.points for t in VISIBLE):g} points" in run.stdout
    assert f"not included: {len(HIDDEN)} hidden tests worth" in run.stdout
    assert "NotImplementedError: minispanbert.layers.softmax:softmax_forward" in run.stdout
    report = grade(student, a1 / "autograder")
    autograder = {t["name"]: t["score"] for t in report["tests"]}
    assert {name: autograder[name] for name in expected} == expected

    run = run_cli("check", cwd=tmp_path, kit=ROOT)  # not a student copy
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [f"error: {tmp_path} has no coursework.json: run check in the folder of your "
                                       "assignment copy (the one holding ASSIGNMENT.md)"]
    shutil.rmtree(student / ".coursework")
    run = run_cli("check", cwd=student)
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1 and "has no .coursework/" in run.stderr


def make_submissions(a1: Path, folder: Path) -> dict[str, set]:
    """20 submissions (folders and zips): the solution, untouched stubs, partly written ones, one that
    kills its grading process group when imported, and a file that is no zip -> {student: the
    functions written} (None for the last two)."""
    rng = np.random.default_rng(24)
    everything = {f.name for f in SPEC.functions}
    plan = {"solution0": everything, "solution1": everything, "stubs0": set(), "stubs1": set(),
            "linear_gelu": LINEAR_AND_GELU}
    for k in range(14):
        plan[f"partial{k:02d}"] = {f.name for f in SPEC.functions if rng.random() < 0.5}
    folder.mkdir()
    for index, (student, functions) in enumerate(plan.items()):
        copy = fill(a1 / "student", folder / student, functions)
        if index % 2:  # every other one as the zip `submit` would write
            with zipfile.ZipFile(folder / f"{student}.zip", "w") as archive:
                for rel in SPEC.files:
                    archive.write(copy / rel, rel)
            shutil.rmtree(copy)
    (folder / "broken.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    plan["broken"] = None
    killer = folder / "partial13" / "minispanbert" / "layers" / "softmax.py"  # kills its grading process group
    killer.write_text("import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)\n" + killer.read_text())
    plan["partial13"] = None
    (folder / "notes.txt").write_text("not a submission")
    return plan


def test_grade_all_writes_a_row_and_a_report_per_student_in_under_a_minute(a1, tmp_path):
    """20 generated submissions graded with --jobs 2: the CSV has one row per student with each
    test's points (as the assignment file predicts from the functions written), the broken zip a
    row of 0 with the reason, and a report each. Measured on 2 cores: about 12 s."""
    plan = make_submissions(a1, tmp_path / "submissions")
    assert len(plan) == 20
    started = time.monotonic()
    code = coursework_main(["grade-all", str(tmp_path / "submissions"), "--autograder", str(a1 / "autograder"),
                            "--csv", str(tmp_path / "grades.csv"), "--reports", str(tmp_path / "reports"),
                            "--jobs", "2"])
    seconds = time.monotonic() - started
    assert code == 0
    print(f"grade-all: {seconds:.1f} s for 20 submissions on {os.cpu_count()} CPUs")
    assert seconds < 60, f"grade-all took {seconds:.1f} s for 20 submissions"
    with open(tmp_path / "grades.csv", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(plan)
    for student, functions in plan.items():
        row = rows[student]
        assert float(row["max"]) == SPEC.max_score
        if student == "broken":
            assert float(row["total"]) == 0 and "neither a folder nor a zip" in row["error"], row
            continue
        if functions is None:  # the killer: its grader killed (a row of 0), or at least every test importing it
            softmax = [t.name for t in SPEC.tests if any(".softmax:" in c or ".attention:" in c for c in t.covers)]
            assert (float(row["total"]) == 0 and "the grader failed" in row["error"]
                    or row["error"] == "" and all(float(row[name]) == 0 for name in softmax)), row
            continue
        expected = expected_points(functions, SPEC.tests)
        assert {name: float(row[name]) for name in expected} == expected, student
        assert float(row["total"]) == sum(expected.values()) and row["error"] == "", student
    assert float(rows["solution0"]["total"]) == SPEC.max_score and float(rows["stubs1"]["total"]) == 0
    reports = sorted(p.name for p in (tmp_path / "reports").iterdir() if not p.name.startswith("."))
    assert reports == sorted(f"{student}.md" for student in plan)
    text = (tmp_path / "reports" / "linear_gelu.md").read_text()
    assert all(t.name in text for t in SPEC.tests) and "NotImplementedError" in text
    assert "neither a folder nor a zip" in (tmp_path / "reports" / "broken.md").read_text()


def test_grade_all_writes_the_csv_and_the_reports_atomically(a1, tmp_path):
    """Traced: the CSV and the reports are never opened for writing where they lie (a temporary file
    and a staging folder are renamed onto them), and killed just before its last change grade-all
    leaves the earlier grades.csv as it was. An existing foreign folder is refused as --reports."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    fill(a1 / "student", folder / "alice", LINEAR_AND_GELU)
    shutil.copytree(a1 / "student", folder / "bob")
    grades, reports = tmp_path / "grades.csv", tmp_path / "reports"
    grades.write_text("the earlier grades\n")
    from minispanbert.coursework.workflow import grade_all
    action = lambda: grade_all(folder, a1 / "autograder", grades, reports=reports, jobs=2)  # noqa: E731
    changes = run_with_a_crash(action, crash_at=0)
    opened = [path for event, path in changes if event == "open"]
    assert str(grades) not in opened and not [p for p in opened if p.startswith(str(reports) + os.sep)], changes
    renamed = [path for event, path in changes if event == "os.rename"]
    assert any(p.startswith(str(tmp_path / ".grades.csv.")) for p in renamed), changes
    assert (reports / "alice.md").is_file() and "alice," in grades.read_text()
    grades.write_text("the earlier grades\n")
    run_with_a_crash(action, crash_at=len(changes))  # just before the CSV's rename
    assert grades.read_text() == "the earlier grades\n"

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="non-empty folder that grade-all did not write"):
        grade_all(folder, a1 / "autograder", grades, reports=foreign)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_new_scaffolds_an_assignment_that_build_accepts_and_never_overwrites(tmp_path, capsys):
    blank = tmp_path / "A4.toml"
    assert coursework_main(["new", "A4", "--out", str(blank)]) == 0
    spec = assignments.load(blank)
    assert spec.id == "A4" and spec.checks == "a4" and spec.functions and spec.tests
    copy = tmp_path / "hw1.toml"
    assert coursework_main(["new", "hw1", "--from", "A1", "--out", str(copy)]) == 0
    spec = assignments.load(copy)
    assert spec.id == "hw1" and spec.tests == SPEC.tests and spec.functions == SPEC.functions
    capsys.readouterr()

    copy.write_text(copy.read_text().replace('title = "', 'title = "Edited: '))
    before = copy.read_text()
    assert coursework_main(["new", "hw1", "--from", "A1", "--out", str(copy)]) == 2
    assert capsys.readouterr().err == f"error: {copy} already exists: choose another --out (new never overwrites)\n"
    assert copy.read_text() == before
    assert coursework_main(["new", "bad name", "--out", str(tmp_path / "x.toml")]) == 2
    assert capsys.readouterr().err.startswith("error: assignment name 'bad name': use letters")

    assert coursework_main(["build", "--assignment", str(copy), "--out", str(tmp_path / "built")]) == 0
    assert "Edited: " in (tmp_path / "built" / "autograder" / "assignment.toml").read_text()
    assert assignments.load(tmp_path / "built" / "autograder" / "assignment.toml").id == "hw1"
    assert coursework_main(["build", "A1", "--assignment", str(copy), "--out", str(tmp_path / "two")]) == 2
    assert "build needs one assignment" in capsys.readouterr().err and not (tmp_path / "two").exists()


def test_visible_checks_drop_hidden_tests_with_the_helpers_only_they_use():
    source = (
        '"""Checks."""\nfrom .harness import graded\n\nTESTS: dict = {}\ntest = graded(TESTS)\nSHARED = 3\n'
        'SECRET_SEED = 4242\n\n\ndef _shared():\n    return SHARED\n\n\ndef _secret_inputs():\n'
        '    return SECRET_SEED\n\n\n@test\ndef shown(check):\n    return _shared()\n\n\n'
        '# the hidden one\n@test\ndef concealed(check):\n    return _secret_inputs() + _shared()\n')
    from minispanbert.coursework.workflow import visible_checks_source
    result = visible_checks_source(source, {"concealed"}, where="checks/x.py")
    for gone in ("concealed", "_secret_inputs", "SECRET_SEED", "4242", "the hidden one"):
        assert gone not in result, gone
    namespace = {}
    registry = "graded = lambda r: lambda f: r.setdefault(f.__name__, f)"
    exec(compile(result.replace("from .harness import graded", registry), "x", "exec"), namespace)
    assert set(namespace["TESTS"]) == {"shown"} and namespace["TESTS"]["shown"](None) == 3
    with pytest.raises(ValueError, match="names the hidden test 'concealed' outside its function"):
        visible_checks_source(source.replace("SHARED = 3", "SHARED = 3  # concealed uses it too"), {"concealed"},
                              where="checks/x.py")
