"""The instructor's and the student's everyday commands around ``build`` and ``grade``:

    check       (student, in the student copy) the visible graded tests on the student's own code,
                as a table of points, pass/fail and messages (otter-grader's ``otter check``)
    grade-all   (instructor) every submission of a folder -> grades.csv and one feedback report each
    new         (instructor) a new assignment file to fill in, from a blank template or a shipped one

``check`` needs the visible tests only: ``build`` writes ``student/.coursework/`` (see
:func:`write_local_checks`) with the visible tests' code and references and an assignment file
listing them alone; hidden tests' names, code and reference values never reach the student copy.
``check`` lays that folder out as an autograder whose ``base/`` is the student's own package and
grades the copy with ``grade.grade``, so a test passes locally exactly when it would pass on
Gradescope with the same files.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework import notebook_grading
from minispanbert.coursework.grade import CHECKS_PACKAGE, check_autograder, grade
from minispanbert.engine.runs.atomic import check_output_file, staged_folder, temp_file, write_text_atomic

LOCAL_CHECKS = ".coursework"  # in the student copy: the visible tests, their references, their assignment file
REPORTS_MARKER = ".coursework-reports"  # a reports folder grade-all wrote (and so may replace)
KIT_ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout (or bundle base/) this kit runs from
MISCONCEPTIONS_MODULE = "misconceptions"  # checks/misconceptions.py: the known wrong variants, never shipped
VARIANT_MARK = "@"  # as checks/harness.py: "<test>/<what>@<variant>", a wrong variant's recorded output
GRADE_SLACK_S = 60.0  # a submission's grading process: start-up and copying, on top of its tests' limits


# --- check: the visible tests in the student copy ----------------------------------------------

def _defined_names(node) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {t.id for t in targets if isinstance(t, ast.Name)}
    return set()


def visible_checks_source(source: str, hidden: set[str], *, where: str) -> str:
    """A checks module's source without its hidden tests and without the helpers and constants that
    only they use (reachability from the kept tests, ``TESTS`` and every other statement), so that
    neither a hidden test's code nor its inputs reach students. ValueError when a hidden test's name
    is still in the result (in a comment or a string): the student copy would name it."""
    tree = ast.parse(source, filename=where)
    missing = hidden - {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if missing:
        raise ValueError(f"{where} defines no test {sorted(missing)[0]!r}")
    prunable = {name: node for node in tree.body for name in _defined_names(node) if name != "TESTS"}
    visible_tests = _test_names(tree) - hidden
    kept = [node for node in tree.body
            if not _defined_names(node) & prunable.keys() or _defined_names(node) & visible_tests]
    reached: set[int] = {id(node) for node in kept}
    work = list(kept)
    while work:
        for used in {n.id for n in ast.walk(work.pop()) if isinstance(n, ast.Name)}:
            node = prunable.get(used)
            if node is not None and id(node) not in reached and used not in hidden:
                reached.add(id(node))
                work.append(node)
    lines = source.splitlines(keepends=True)
    for node in sorted((n for n in tree.body if id(n) not in reached), key=lambda n: -n.lineno):
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while first > 0 and lines[first - 1].lstrip().startswith("#"):  # the comment above it goes too
            first -= 1
        del lines[first:node.end_lineno]
    result = re.sub(r"\n{4,}", "\n\n\n", "".join(lines))
    named = sorted(name for name in hidden if re.search(rf"\b{re.escape(name)}\b", result))
    if named:
        raise ValueError(f"{where} names the hidden test {named[0]!r} outside its function: reword that comment "
                         "or string (the student copy gets the visible tests' code)")
    return result


def _test_names(tree) -> set[str]:
    """Top-level functions registered by a decorator (``@test``): the module's graded tests."""
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.decorator_list}


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a TOML basic string


def visible_assignment_toml(spec) -> str:
    """The assignment file of the student copy's checks: the visible tests only, and how many hidden
    tests (and points) the autograder adds, so that ``check`` can say its total excludes them."""
    hidden = [t for t in spec.tests if t.hidden]
    lines = ["# The visible graded tests of this assignment, for `python -m minispanbert.coursework check`.",
             f"id = {_toml_string(spec.id)}", f"title = {_toml_string(spec.title)}",
             f"checks = {_toml_string(spec.checks)}", f"time_limit = {spec.time_limit!r}",
             f"hidden_tests = {len(hidden)}", f"hidden_points = {float(sum(t.points for t in hidden))!r}"]
    for f in spec.functions:
        lines += ["[[functions]]", f"name = {_toml_string(f.name)}", f"task = {_toml_string(f.task)}"]
    for t in spec.tests:
        if not t.hidden:
            covers = ", ".join(_toml_string(c) for c in t.covers)
            lines += ["[[tests]]", f"name = {_toml_string(t.name)}", f"points = {t.points!r}", f"covers = [{covers}]"]
    return "\n".join(lines) + "\n"


def write_local_checks(spec, checks_dir: Path, refs: dict, student: Path) -> None:
    """Write ``student/.coursework/``: ``assignment.toml`` (visible tests), ``references.npz`` (their
    references only, without the recorded wrong variants) and ``grader/coursework_checks/`` (the kit's
    checks package: harness and runner as they are, this assignment's tests module without its hidden
    tests, other assignments' modules and the wrong variants left out). Local checks so score partial
    credit but name no misconception."""
    visible = {t.name for t in spec.tests if not t.hidden}
    hidden = {t.name for t in spec.tests if t.hidden}
    local = student / LOCAL_CHECKS
    package = local / "grader" / CHECKS_PACKAGE
    package.mkdir(parents=True)
    for source in sorted(checks_dir.glob("*.py")):
        text = source.read_text(encoding="utf-8")
        if source.stem == MISCONCEPTIONS_MODULE:
            continue  # the known wrong variants: code a student need not see
        if source.stem == spec.checks:
            text = visible_checks_source(text, hidden, where=f"checks/{source.name}")
        elif any(_defined_names(node) == {"TESTS"} for node in ast.parse(text).body):
            continue  # another assignment's graded tests
        (package / source.name).write_text(text, encoding="utf-8")
    (local / "assignment.toml").write_text(visible_assignment_toml(spec), encoding="utf-8")
    np.savez(local / "references.npz", **{key: value for key, value in refs.items()
                                          if key.split("/")[0] in visible and VARIANT_MARK not in key})


def check(root=".") -> tuple[dict, str]:
    """Grade the student copy at ``root`` on its visible tests -> (results.json dict, the table)."""
    root = Path(root).resolve()
    if not (root / "coursework.json").is_file():
        raise ValueError(f"{root} has no coursework.json: run check in the folder of your assignment copy "
                         "(the one holding ASSIGNMENT.md)")
    local = root / LOCAL_CHECKS
    if not (local / "assignment.toml").is_file():
        raise ValueError(f"{root} has no {LOCAL_CHECKS}/assignment.toml (the visible tests): ask for an assignment "
                         "copy built with this kit's `build`, or restore that folder from your copy")
    meta = assignments.read_toml(local / "assignment.toml", "visible tests file")
    with tempfile.TemporaryDirectory(prefix="coursework-check-") as tmp:
        autograder = Path(tmp)
        for name in ("assignment.toml", "references.npz", "grader"):
            (autograder / name).symlink_to(local / name)
        (autograder / "base").mkdir()
        (autograder / "base" / "minispanbert").symlink_to(root / "minispanbert")
        report = grade(root, autograder)
    return report, check_table(report, meta.get("hidden_tests", 0), meta.get("hidden_points", 0.0))


def check_table(report: dict, hidden_tests: int, hidden_points: float) -> str:
    """Points, PASS/FAIL and the first lines of each failure's message, one test a row."""
    tests = report["tests"]
    width = max([len(t["name"]) for t in tests] + [4])
    lines = [f"{'test':<{width}}  points  result  message"]
    for t in tests:
        result = "PASS" if t["status"] == "passed" else "FAIL"
        message = t["output"].splitlines() or [""]
        lines.append(f"{t['name']:<{width}}  {t['score']:>2g}/{t['max_score']:<3g} {result}    {message[0][:200]}")
        if result == "FAIL":
            lines.extend(f"{'':<{width}}                  {line[:200]}" for line in message[1:8])
    maximum = sum(t["max_score"] for t in tests)
    lines.append(f"visible tests: {report['score']:g} / {maximum:g} points")
    if hidden_tests:
        lines.append(f"not included: {hidden_tests} hidden tests worth {hidden_points:g} points, run only by the "
                     "autograder (shown after grades are published)")
    return "\n".join(lines)


# --- grade-all: a folder of submissions -> grades.csv and one report each ------------------------

def find_submissions(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """{student id: submission} for each subfolder or ``.zip`` of ``folder`` (the id is its name
    without ``.zip``), and what was skipped. ValueError when two submissions share an id."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder: pass the folder holding one subfolder or zip per student")
    found, skipped = {}, []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or entry.suffix.lower() == ".zip":
            student = entry.name if entry.is_dir() else entry.stem
            if student in found:
                raise ValueError(f"{found[student].name} and {entry.name} are both student {student!r}: keep one")
            found[student] = entry
        else:
            skipped.append(f"{entry.name}: neither a folder nor a zip")
    if not found:
        raise ValueError(f"{folder} holds no submission (a subfolder or a zip per student)")
    return found, skipped


def grade_in_process(submission: Path, autograder: Path, out: Path, timeout: float) -> dict:
    """Grade one submission in a process of its own (``coursework grade``), so that nothing it does
    to its grader can reach the others -> the results.json dict, or a failure report with the reason."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(KIT_ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "minispanbert.coursework", "grade", str(submission),
               "--autograder", str(autograder), "--out", str(out)]
    # A session of its own: whatever the submission does to its process group (killpg) stays there,
    # and a grading that runs too long is stopped with everything it started.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"error": f"grading took longer than {timeout:g} s and was stopped"}
    try:
        report = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the grader failed (exit code {process.returncode}): {last}"}
    if not report.get("tests"):  # grade's failure report: score 0 and the reason
        return {"error": report.get("output", "the grader wrote no tests")}
    return report


def feedback_report(student: str, report: dict) -> str:
    """The per-student feedback (Markdown): the score, a table of every test, each failure's message."""
    lines = [f"# {student}", ""]
    if "error" in report:
        return "\n".join(lines + ["Score: 0 (this submission could not be graded)", "", report["error"], ""])
    lines += ["```", report["output"], "```", "", "| test | points | result |", "|---|---|---|"]
    for t in report["tests"]:
        hidden = "" if t["visibility"] == "visible" else " (hidden)"
        lines.append(f"| {t['name']}{hidden} | {t['score']:g} / {t['max_score']:g} | {t['status']} |")
    failures = [t for t in report["tests"] if t["status"] != "passed"]
    if failures:
        lines += ["", "## What failed", ""]
        for t in failures:
            lines += [f"### {t['name']} ({t['score']:g} / {t['max_score']:g})", "",
                      "```", t["output"].strip(), "```", ""]
    return "\n".join(lines) + "\n"


def grades_csv(spec, rows: dict[str, dict]) -> str:
    """One row per student: id, total, maximum, each test's points (empty when not graded), error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "total", "max"] + [t.name for t in spec.tests] + ["error"])
    for student, report in rows.items():
        if "error" in report:
            writer.writerow([student, 0, spec.max_score] + [""] * len(spec.tests) + [report["error"]])
            continue
        points = {t["name"]: t["score"] for t in report["tests"]}
        writer.writerow([student, report["score"], spec.max_score]
                        + [points.get(t.name, "") for t in spec.tests] + [""])
    return buffer.getvalue()


def check_reports_folder(reports: Path) -> None:
    """grade-all replaces a reports folder it wrote before, and refuses any other non-empty folder."""
    if reports.exists() and not reports.is_dir():
        raise ValueError(f"--reports {reports} is a file: name a folder")
    if reports.is_dir() and any(reports.iterdir()) and not (reports / REPORTS_MARKER).is_file():
        raise ValueError(f"--reports {reports} is a non-empty folder that grade-all did not write: choose a new "
                         "folder (grade-all replaces only its own reports)")


def grade_all(submissions, autograder, csv_path, *, reports=None, jobs=None) -> tuple[dict[str, dict], list[str]]:
    """Grade every submission of the folder ``submissions`` (``jobs`` at a time, default: the CPU
    count), write ``csv_path`` atomically and, with ``reports``, one ``<student>.md`` each into a
    folder that appears complete or not at all -> ({student: results.json dict or {"error"}}, notes)."""
    autograder = Path(autograder)
    check_autograder(autograder)
    autograder = autograder.resolve()
    spec = assignments.load(autograder / "assignment.toml")
    csv_path = check_output_file(csv_path, "--csv", make_parent=True)
    if reports is not None:
        check_reports_folder(Path(reports))
    found, notes = find_submissions(Path(submissions))
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: grade at least one submission at a time (--jobs 1 or more)")
    timeout = (spec.time_limit * len(spec.tests) + GRADE_SLACK_S
               + notebook_grading.process_limit(spec) * len(spec.graded_notebooks))
    with tempfile.TemporaryDirectory(prefix="coursework-grade-all-") as tmp:
        def one(item):
            index, (student, path) = item
            return student, grade_in_process(path.resolve(), autograder, Path(tmp) / f"{index}.json", timeout)
        with ThreadPoolExecutor(max_workers=jobs) as pool:  # each thread waits on its own grading process
            rows = dict(pool.map(one, enumerate(found.items())))
    if reports is not None:
        with staged_folder(reports) as staging:
            for student, report in rows.items():
                (staging / f"{student}.md").write_text(feedback_report(student, report), encoding="utf-8")
            (staging / REPORTS_MARKER).write_text(f"grade-all reports of {spec.id}\n", encoding="utf-8")
    write_text_atomic(csv_path, grades_csv(spec, rows))
    return rows, notes


# --- new: an assignment file to fill in ------------------------------------------------------------

BLANK_TEMPLATE = '''# {id}: an assignment of the coursework kit. Format: see minispanbert/coursework/assignment.py.
# Fill in every field, write the graded tests in minispanbert/coursework/checks/{checks}.py (see
# checks/a1.py and checks/harness.py), then: python -m minispanbert.coursework build --assignment THIS_FILE --out DIR
id = "{id}"
title = "TODO: the title students see"
checks = "{checks}"   # the module of minispanbert/coursework/checks/ holding the graded tests
time_limit = 10       # seconds per graded test
notebooks = []        # e.g. ["notebooks/core/01_attention.ipynb"]: listed for students
student_tests = []    # e.g. ["tests/core/test_layers.py"]: public tests students can run
summary = """
TODO: what students write and why, in a few lines (ASSIGNMENT.md shows it).
"""

# One [[functions]] per function students write: it becomes a stub (signature + docstring + raise).
[[functions]]
name = "minispanbert.layers.linear:linear_forward"   # TODO: package.module:function
task = "TODO: what to implement, in one line (the stub's message)"

# One [[tests]] per graded test: name = a function of checks/{checks}.py; covers = the listed functions it
# calls, the graded one first; visibility = "visible" (default), "after_due_date", "after_published" or "hidden".
[[tests]]
name = "linear_forward"   # TODO
points = 1
covers = ["minispanbert.layers.linear:linear_forward"]
'''


def scaffold_text(name: str, source: str | None) -> str:
    """The text of a new assignment file ``name``: a copy of the shipped assignment ``source`` with
    its id replaced, or the blank template."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise ValueError(f"assignment name {name!r}: use letters, digits, '-' and '_', starting with a letter "
                         "(e.g. A4)")
    if source is None:
        return BLANK_TEMPLATE.format(id=name, checks=re.sub(r"\W", "_", name.lower()))
    spec = assignments.load(source)
    if Path(source).suffix == ".toml":
        path = Path(source)
    else:
        path = assignments.ASSIGNMENTS_DIR / f"{spec.id}.toml"
    text = path.read_text(encoding="utf-8")
    text, count = re.subn(r'(?m)^id = .*$', f"id = {_toml_string(name)}", text, count=1)
    if count != 1:
        raise ValueError(f"{path} has no top-level `id = ...` line to replace: copy it by hand")
    return f"# Made from {spec.id} by `coursework new`: change the title, functions and tests.\n" + text


def new_assignment(name: str, *, source: str | None = None, out=None) -> Path:
    """Write the new assignment file (default ``./NAME.toml``), never over an existing file."""
    out = Path(out) if out else Path(f"{name}.toml")
    if out.suffix != ".toml":
        raise ValueError(f"--out {out}: an assignment file ends in .toml (e.g. {out.with_suffix('.toml')})")
    text = scaffold_text(name, source)
    check_output_file(out, make_parent=True)
    fd, tmp = temp_file(out.parent, out.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            os.link(tmp, out)  # fails, rather than replaces, when the file exists
        except FileExistsError:
            raise ValueError(f"{out} already exists: choose another --out (new never overwrites)") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out
