"""The grading process: run an assignment's graded tests on a submission, one forked child per
graded function, and write one JSON line per test (``{"name", "passed", "message", "output"}``).

    python -m coursework_checks.runner --module a1 --refs references.npz --root SUBMISSION_COPY \\
        --work DIR --time-limit 10 --groups '[["test_a", "test_b"], ["test_c"]]'

``minispanbert/coursework/grade.py`` starts it with the submission copy first on PYTHONPATH and
reads ``DIR/results.jsonl``. This process imports NumPy once and never the submission; each child
imports the submission afresh (a fork costs milliseconds, a new interpreter with NumPy about a
second). In a child: imports of torch / jax / autograd raise an ImportError that says why; each test
runs under a SIGALRM time limit; what a test prints is kept up to a cap, and the child's own output
file is capped too; every exception becomes a message. A child that dies or hangs is killed and its
current test fails with the reason; the rest of its tests rerun in a new child.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import json
import os
import resource
import signal
import sys
import time
import traceback

from .harness import FORBIDDEN_MODULES, Check, Fail

OUTPUT_CAP = 4000  # characters of a test's printed output kept for the student
OUTPUT_FILE_LIMIT = 1 << 20  # bytes a child may write to its stdout/stderr file (print at C level)
LOG_TAIL_BYTES = 2000
CHILD_SLACK_S = 10.0  # on top of the per-test limits, for a child's imports


class ForbiddenImport(importlib.abc.MetaPathFinder):
    """Refuses torch, jax and autograd: the assignments are about writing the backward by hand."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in FORBIDDEN_MODULES:
            raise ImportError(f"import of {fullname!r} is not allowed in this assignment: write the "
                              "forward and backward passes with NumPy (xp) only")
        return None


class CappedText:
    """A text stream that keeps the first ``cap`` characters and counts the rest."""

    def __init__(self, cap: int):
        self.cap, self.parts, self.kept, self.dropped = cap, [], 0, 0

    def write(self, text):
        room = self.cap - self.kept
        if room > 0:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def flush(self):
        pass

    def getvalue(self) -> str:
        text = "".join(self.parts)
        if self.dropped:
            text += f"\n... ({self.dropped} more characters of output cut)"
        return text


class TimeLimit(BaseException):
    """Raised by SIGALRM inside a test that ran past its limit (BaseException: a student's
    ``except Exception`` cannot swallow it)."""


def _on_alarm(signum, frame):
    raise TimeLimit()


def _student_traceback(exc, root: str) -> str:
    """The frames of ``exc`` that lie in the submission, innermost last, paths relative to it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.abspath(f.filename).startswith(root)]
    lines = [f"  {os.path.relpath(f.filename, root)}, line {f.lineno}, in {f.name}: {(f.line or '').strip()}"
             for f in frames[-4:]]
    return ("\n" + "\n".join(lines)) if lines else ""


def run_test(fn, name: str, refs: dict, *, root: str, time_limit: float) -> dict:
    captured = CappedText(OUTPUT_CAP)
    passed, message = False, ""
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            fn(Check(name, refs, record=False))
        passed, message = True, "passed"
    except TimeLimit:
        message = (f"time limit of {time_limit:g} s exceeded: an endless loop, or a Python loop over "
                   "every element where one array operation would do?")
    except Fail as exc:
        message = str(exc)
    except NotImplementedError as exc:
        message = f"NotImplementedError: {exc}"
    except ImportError as exc:
        message = f"ImportError: {exc}{_student_traceback(exc, root)}"
    except BaseException as exc:  # noqa: BLE001 -- everything a submission raises becomes a message
        message = (f"your code raised {type(exc).__name__}: {str(exc)[:500]}{_student_traceback(exc, root)}\n"
                   "(a shape or type mistake? run the function on the docstring's shapes)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"name": name, "passed": passed, "message": message, "output": captured.getvalue()}


def run_tests(names, *, module: str, refs: dict, root: str, results: str, time_limit: float) -> None:
    """Run the named tests in this process, appending a start line and a result line for each."""
    tests = importlib.import_module(f"{__package__}.{module}").TESTS
    with open(results, "a", encoding="utf-8") as out:
        for name in names:
            out.write(json.dumps({"start": name}) + "\n")  # so the pool knows whom a crash belongs to
            out.flush()
            result = run_test(tests[name], name, refs, root=root, time_limit=time_limit)
            out.write(json.dumps(result) + "\n")
            out.flush()


def _read_lines(path):
    started, finished = [], {}
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "start" in record:
                    started.append(record["start"])
                elif "name" in record:
                    finished[record["name"]] = record
    return started, finished


def run_group(names, *, args, refs, attempt_id: str) -> dict:
    """Run one graded function's tests in forked children until each has a result: a child that
    dies or hangs inside a test has that test failed, and the tests after it rerun in a new child."""
    results, pending, attempt = {}, list(names), 0
    while pending:
        attempt += 1
        lines = os.path.join(args.work, f"{attempt_id}.{attempt}.jsonl")
        log = os.path.join(args.work, f"{attempt_id}.{attempt}.log")
        limit = args.time_limit * len(pending) + CHILD_SLACK_S
        pid = os.fork()
        if pid == 0:  # the child: fresh imports of the submission, its output to a capped file
            code = 1
            try:
                resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_FILE_LIMIT, OUTPUT_FILE_LIMIT))
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                run_tests(pending, module=args.module, refs=refs, root=args.root, results=lines,
                          time_limit=args.time_limit)
                code = 0
            finally:
                os._exit(code)
        deadline, status, timed_out = time.monotonic() + limit, None, False
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                status, timed_out = os.waitpid(pid, 0)[1], True
            else:
                time.sleep(0.005)
        started, finished = _read_lines(lines)
        results.update({name: finished[name] for name in pending if name in finished})
        pending = [name for name in pending if name not in results]
        if pending:
            with open(log, "rb") as f:
                tail = f.read()[-LOG_TAIL_BYTES:].decode("utf-8", errors="replace")
            reason = (f"the test process was stopped after {limit:g} s (a hang outside Python code?)" if timed_out
                      else f"the test process ended unexpectedly (status {status})")
            # A crash inside a test is that test's; one before any test started is every pending test's.
            blamed = [started[-1]] if started and started[-1] in pending else list(pending)
            for name in blamed:
                results[name] = {"name": name, "passed": False, "output": tail,
                                 "message": f"{reason}: did your code call os._exit(), crash the interpreter or "
                                            "exhaust the memory? Output before it ended is shown below."}
            pending = [name for name in pending if name not in results]
    return results


def main(argv=None) -> int:
    """The pool: import NumPy once (never the submission), then fork one child per group of tests
    (the tests of one graded function) and write every result to ``--work/results.jsonl``."""
    parser = argparse.ArgumentParser(prog="coursework_checks.runner")
    parser.add_argument("--module", required=True)
    parser.add_argument("--refs", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--time-limit", type=float, required=True)
    parser.add_argument("--groups", required=True, help="JSON list of lists of test names")
    args = parser.parse_args(argv)

    sys.meta_path.insert(0, ForbiddenImport())
    signal.signal(signal.SIGALRM, _on_alarm)
    import numpy as np
    try:  # third-party modules the children would each import again: load them once here
        import scipy.special  # noqa: F401
    except ImportError:
        pass

    importlib.import_module(f"{__package__}.{args.module}")  # the graded tests, not the submission
    with np.load(args.refs, allow_pickle=False) as data:
        refs = {key: data[key] for key in data.files}
    args.root = os.path.abspath(args.root) + os.sep
    with open(os.path.join(args.work, "results.jsonl"), "a", encoding="utf-8") as out:
        for index, names in enumerate(json.loads(args.groups)):
            for record in run_group(names, args=args, refs=refs, attempt_id=f"group{index}").values():
                out.write(json.dumps(record) + "\n")
                out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
