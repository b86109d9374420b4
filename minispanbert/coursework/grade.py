"""Grade a submission against a built autograder and write Gradescope's ``results.json``.

    python -m minispanbert.coursework grade SUBMISSION --autograder DIR/autograder [--out results.json]
    python -m minispanbert.coursework grade SUBMISSION --assignment A1     (builds the autograder first)

SUBMISSION is a folder (a student copy, Gradescope's /autograder/submission) or the zip that
``submit`` writes. Only the assignment's source files are taken from it (found at their project
path, under one top folder, or by file name alone), laid over the autograder's student copy
``base/`` in a fresh temporary folder: the rest of the package is never the submission's.

Tests run in a sandbox: the grading process (checks/runner.py) holds the references and judges;
each test runs the submission in a confined child process of its own (checks/sandbox.py) under a
time limit, with what it prints capped, and everything it started is killed when it ends. A file
that imports torch, jax or autograd scores 0 on every test covering it, a test whose process dies or
hangs scores 0 with the reason, and results.json is written whatever happens. A test scores its
points times the share of its graded values that matched (harness.judge: every failing value listed,
a known misconception named); its ``output`` (shown to students at once) totals the visible tests only.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework import notebook_grading
from minispanbert.engine.runs.atomic import write_text_atomic

FORBIDDEN_MODULES = ("torch", "jax", "autograd")  # as checks/harness.py; the runner blocks them too
CHECKS_PACKAGE = "coursework_checks"
PROCESS_SLACK_S = 30.0  # the grading process's and its sandbox's start-up (NumPy imports)
CHILD_SLACK_S = 5.0  # as checks/runner.py: a test's child's start-up
STARTUP_OUTPUT_CAP = 2000
AUTOGRADER_PARTS = ("assignment.toml", "references.npz", "base/minispanbert", f"grader/{CHECKS_PACKAGE}/runner.py")


def read_submission(submission: Path, wanted: list[str]) -> tuple[dict[str, bytes], list[str]]:
    """{project path: bytes} for each wanted file found in ``submission`` (folder or zip), and
    notes on what was missing or ambiguous."""
    if submission.is_dir():
        if all((submission / rel).is_file() for rel in wanted):  # a whole project copy: no folder walk
            entries = {rel: submission / rel for rel in wanted}
        else:
            entries = {p.relative_to(submission).as_posix(): p for p in submission.rglob("*") if p.is_file()}
        read = lambda key: entries[key].read_bytes()  # noqa: E731
    elif zipfile.is_zipfile(submission):
        try:
            with zipfile.ZipFile(submission) as archive:
                entries = {info.filename: archive.read(info) for info in archive.infolist()
                           if not info.is_dir() and info.filename.endswith((".py", ".ipynb"))}
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise ValueError(f"{submission} is a damaged zip ({type(exc).__name__}: {exc}): zip the folder again with "
                             "`python -m minispanbert.coursework submit` and resubmit") from None
        read = entries.__getitem__
    else:
        raise ValueError(f"{submission} is neither a folder nor a zip file: pass the student's folder or "
                         "the zip that `python -m minispanbert.coursework submit` wrote")
    found, notes = {}, []
    for rel in wanted:
        exact = [k for k in entries if k == rel or k.endswith("/" + rel) and k.count("/") == rel.count("/") + 1]
        by_name = [k for k in entries if PurePosixPath(k).name == PurePosixPath(rel).name]
        candidates = exact or (by_name if len(by_name) == 1 else [])
        if candidates:
            found[rel] = read(candidates[0])
        elif by_name:
            notes.append(f"{rel}: several files named {PurePosixPath(rel).name} and none at {rel}; graded as not implemented")
        else:
            notes.append(f"{rel}: not in the submission; graded as not implemented")
    return found, notes


def forbidden_imports(source: bytes) -> list[str]:
    """Forbidden top-level modules a source file imports (``import torch``, ``from jax import ...``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # the test process reports the syntax error itself
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(names & set(FORBIDDEN_MODULES))


def run_tests(names, spec, *, project: Path, autograder: Path, work: Path) -> dict[str, dict]:
    """Run the named tests in one grading process (checks/runner.py), which runs each in a sandboxed
    child of its own; -> {test name: result}. A test without a result (the whole process was
    stopped) fails with the reason."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(autograder / "grader")]),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", f"{CHECKS_PACKAGE}.runner", "--module", spec.checks,
               "--refs", str(autograder / "references.npz"), "--root", str(project), "--work", str(work),
               "--time-limit", str(spec.time_limit), "--tests", json.dumps(names)]
    # each test's limit and its child's start-up, the grading process's and the sandbox's start-up
    limit = (spec.time_limit + CHILD_SLACK_S) * len(names) + PROCESS_SLACK_S
    log = work / "grader.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        timed_out = False
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()
            process.wait()
    results = {}
    lines = work / "results.jsonl"
    if lines.exists():
        for line in lines.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("name") in names:
                results[record["name"]] = record
    tail = log.read_bytes()[-STARTUP_OUTPUT_CAP:].decode("utf-8", errors="replace")
    if results or timed_out:
        message = (f"the grader stopped before this test finished (exit code {process.returncode}, "
                   f"limit {limit:g} s for the whole submission); see the output below")
    else:
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        message = f"the grading process failed before any test ran (exit code {process.returncode}: {last})"
    for name in names:
        if name not in results:
            results[name] = {"name": name, "passed": False, "output": tail, "message": message}
    return results


def check_autograder(folder: Path) -> None:
    """One line when ``folder`` is not a complete built autograder, instead of every test failing."""
    missing = [part for part in AUTOGRADER_PARTS if not (folder / part).exists()]
    if missing:
        raise ValueError(f"{folder} is not a built autograder (no {', '.join(missing)}): pass the DIR/autograder "
                         "folder that `python -m minispanbert.coursework build ID --out DIR` wrote")


def grade(submission, autograder, *, out=None) -> dict:
    """Grade ``submission`` with the built ``autograder`` folder -> the results.json dict (also
    written to ``out`` when given)."""
    started = time.monotonic()
    check_autograder(Path(autograder))
    autograder = Path(autograder).resolve()  # the grading process runs in a temporary folder
    spec = assignments.load(autograder / "assignment.toml")
    with tempfile.TemporaryDirectory(prefix="coursework-grade-") as tmp:
        work = Path(tmp)
        project = work / "project"
        shutil.copytree(autograder / "base", project)
        files, notes = read_submission(Path(submission), spec.files)
        blocked: dict[str, str] = {}  # function name -> why its tests score 0
        for rel, data in files.items():
            (project / rel).write_bytes(data)
            bad = forbidden_imports(data)
            if bad:
                notes.append(f"{rel} imports {', '.join(bad)}, which this assignment forbids")
                for f in spec.functions:
                    if f.path == rel:
                        blocked[f.name] = (f"{rel} imports {', '.join(bad)}: this assignment is NumPy only "
                                           "(write the backward by hand); remove the import and resubmit")
        results: dict[str, dict] = {}
        for t in spec.tests:
            why = next((blocked[c] for c in t.covers if c in blocked), None)
            if why:
                results[t.name] = {"name": t.name, "passed": False, "message": why, "output": ""}
        results.update(run_tests([t.name for t in spec.tests if t.name not in results], spec,
                                 project=project, autograder=autograder, work=work))
        # after the graded tests: the notebook's kernel runs student code outside their sandbox
        notebook_tests = notebook_grading.grade_notebooks(spec, Path(submission), autograder=autograder,
                                                          project=project, work=work)
    report = results_json(spec, results, notes, time.monotonic() - started, notebook_tests)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(report, indent=1) + "\n")
    return report


def failure_report(message: str) -> dict:
    """A valid results.json (score 0, the reason) for when grading itself could not run, so that
    Gradescope shows the reason instead of a missing-file error (build.py writes the same one into
    run_autograder for when this kit cannot even start)."""
    return {"score": 0.0, "output": f"the autograder could not grade this submission: {message}",
            "output_format": "text", "visibility": "visible", "stdout_visibility": "hidden", "tests": []}


def write_failure_results(out, message: str) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(failure_report(message), indent=1) + "\n")


def test_score(points: float, result: dict) -> float:
    """A test's points times the share of its graded values that matched (the runner's ``fraction``;
    a result without one, such as a blocked import, is all or nothing), rounded to 1e-4."""
    if result["passed"]:
        return float(points)
    fraction = result.get("fraction", 0.0)
    fraction = min(max(float(fraction), 0.0), 1.0) if isinstance(fraction, (int, float)) else 0.0
    return round(points * fraction, 4)


def results_json(spec, results: dict, notes: list[str], seconds: float, extra_tests=()) -> dict:
    """Gradescope's results.json (https://gradescope-autograders.readthedocs.io/en/latest/specs/);
    ``extra_tests`` (notebook cells' tests, notebook_grading.py) follow the graded functions' tests."""
    tests = []
    for number, t in enumerate(spec.tests, start=1):
        r = results[t.name]
        output = r["message"] + (f"\n\nprinted output:\n{r['output']}" if r.get("output") else "")
        tests.append({"name": t.name, "number": str(number), "score": test_score(t.points, r),
                      "max_score": t.points, "status": "passed" if r["passed"] else "failed",
                      "output": output, "output_format": "text", "visibility": t.visibility,
                      "tags": [c.split(":")[1] for c in t.covers]})
    tests += [{**test, "number": str(len(tests) + number)} for number, test in enumerate(extra_tests, start=1)]
    score = float(sum(t["score"] for t in tests))
    shown = [t for t in tests if t["visibility"] == "visible"]
    total = f"score {sum(t['score'] for t in shown):g} / {sum(t['max_score'] for t in shown):g}"
    if len(shown) < len(tests):  # the output is shown at once: it must not tell hidden results
        hidden = [t for t in tests if t["visibility"] != "visible"]
        total += (f" on the visible tests; this excludes {len(hidden)} hidden tests worth "
                  f"{sum(t['max_score'] for t in hidden):g} points, shown when grades are published")
    header = [f"{spec.id}: {spec.title}", total] + [f"note: {n}" for n in notes]
    return {"score": score, "execution_time": round(seconds, 2), "output": "\n".join(header),
            "output_format": "text", "visibility": "visible", "stdout_visibility": "hidden",
            "extra_data": {"assignment": spec.id, "max_score": float(sum(t["max_score"] for t in tests))},
            "tests": tests}


def summary(report: dict, *, show_hidden: bool = True) -> str:
    """A readable table of the results, failures with their messages; with ``show_hidden`` (the
    instructor's view) the total over every test comes first."""
    lines = [report["output"], ""]
    if show_hidden:
        lines[:0] = [f"score {report['score']:g} / {sum(t['max_score'] for t in report['tests']):g} (all tests)"]
    for t in report["tests"]:
        if t["visibility"] != "visible" and not show_hidden:
            continue
        mark = "PASS" if t["status"] == "passed" else "FAIL"
        hidden = "" if t["visibility"] == "visible" else "  (hidden)"
        lines.append(f"{mark} {t['score']:g}/{t['max_score']:g}  {t['name']}{hidden}")
        if t["status"] != "passed":
            lines.extend("       " + line for line in t["output"].splitlines()[:12])
    return "\n".join(lines)
