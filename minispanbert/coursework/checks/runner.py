"""The trusted grading process: run an assignment's graded tests on a submission in the sandbox
(checks/sandbox.py), judge what each returns against the references, and write one JSON line per
test (``{"name", "passed", "fraction", "message", "output"}``: ``fraction`` is the share of the test's
points earned, harness.judge) once every test process is gone.

    python -m coursework_checks.runner --module a1 --refs AUTOGRADER/references.npz \\
        --root SUBMISSION_COPY --work DIR --time-limit 10 --tests '["test_a", "test_b"]'

``minispanbert/coursework/grade.py`` starts it with the submission copy first on PYTHONPATH and
reads ``DIR/results.jsonl``. This process never runs the submission: it starts the sandbox's zygote
(a fresh interpreter, before any reference is read), then for each test writes the test's code
(shared helpers and that test alone) into a new scratch folder ``DIR/sandbox/<n>``, asks the
zygote to run it there, and judges the records the child left (harness.judge): a child decides
nothing but its own failure, and cannot write another test's result. Judging imports
``minispanbert.gradcheck`` from the autograder's pristine ``base/``, never from the submission copy.

Run as root (Gradescope), each child becomes the unprivileged user COURSEWORK_SANDBOX_USER (default
``nobody``) when that user can run this Python; the autograder folder is then made readable to root
only. Without that (and without Landlock, see sandbox.py) a child runs as the grader's own user and
could read what that user can read.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import os
import pwd
import re
import select
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

from . import sandbox
from .harness import judge

CHILD_SLACK_S = 5.0  # on top of a test's time limit, for its child's start and imports
ZYGOTE_REPLY_S = 60.0  # beyond a test's limit: the zygote's own start (NumPy import)
LOG_TAIL_BYTES = 2000
MAX_RECORDS = 1000  # records a test may leave; more is a failure
RECORDS_BYTES = 16 << 20
ARRAY_FILE = re.compile(r"\d+\.(value|analytic|numeric)\.npy")


class Zygote:
    """The sandbox's zygote (checks/sandbox.py): one fresh interpreter serving one test at a time."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.process = subprocess.Popen([sys.executable, "-m", f"{__package__}.sandbox"], cwd=cwd,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, request: dict) -> dict | None:
        """The zygote's reply for ``request``, None when the zygote itself ended or stopped answering
        (it is then killed, and everything under it)."""
        line = ""
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            ready, _, _ = select.select([self.process.stdout], [], [], request["limit"] + ZYGOTE_REPLY_S)
            line = self.process.stdout.readline() if ready else ""
        except OSError:
            pass
        if not line:
            self.close(kill=True)
            return None
        return json.loads(line)

    def close(self, *, kill: bool = False) -> None:
        """End the zygote and every process left under this one (only a killed zygote leaves any)."""
        if kill:
            self.process.kill()
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdout.close()
        sandbox.kill_descendants()


def test_sources(module_path: Path, names) -> dict[str, str]:
    """{test: the checks module's source with every other graded test blanked out (line numbers kept)}."""
    source = module_path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    spans = {node.name: (min([node.lineno] + [d.lineno for d in node.decorator_list]), node.end_lineno)
             for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name in names}
    reduced = {}
    for name in names:
        kept = list(lines)
        for other, (first, last) in spans.items():
            if other != name:
                kept[first - 1:last] = ["\n"] * (last - first + 1)
        reduced[name] = "".join(kept)
    return reduced


def _read_own_file(path: Path, limit: int, *, tail: bool = False) -> bytes:
    """At most ``limit`` bytes of a regular file a child wrote (never through a link it planted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        if tail and size > limit:
            f.seek(size - limit)
        return f.read(limit)


def _load_array(scratch: Path, name: str):
    import numpy as np

    if not isinstance(name, str) or not ARRAY_FILE.fullmatch(name):
        raise ValueError(name)
    fd = os.open(scratch / name, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(name)
        return np.load(f, allow_pickle=False)


class Arrays(dict):
    """A record's arrays, each read from the child's scratch folder only when judging asks for it."""

    def __init__(self, scratch: Path, files):
        super().__init__()
        self.scratch, self.files = scratch, files if isinstance(files, dict) else {}

    def __missing__(self, role):
        return _load_array(self.scratch, self.files[role])


def read_records(scratch: Path):
    """(records, ended, stopped, output) from a child's ``records.jsonl``; ``ended`` is False when
    the child never wrote its end line (it crashed or was killed)."""
    records, ended, stopped, output = [], False, None, ""
    for line in _read_own_file(scratch / "records.jsonl", RECORDS_BYTES).decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if "end" in record:
            stopped = None if record.get("stopped") is None else str(record["stopped"])
            ended, output = True, str(record.get("output", ""))[:sandbox.OUTPUT_CAP + 100]
            break
        if len(records) == MAX_RECORDS:
            return records, True, f"the test process returned more than {MAX_RECORDS} values", ""
        options = record.get("options") if isinstance(record.get("options"), dict) else {}
        records.append((record.get("kind"), str(record.get("what")), Arrays(scratch, record.get("files")), options))
    return records, ended, stopped, output


def sandbox_user() -> tuple[str, int, int] | None:
    """(name, uid, gid) of the user a child runs as, when this process is root and that user can run
    this Python (every folder above it searchable by others); None: children keep this user."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("COURSEWORK_SANDBOX_USER", "nobody")
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        print(f"runner: no user {name!r} to run submissions as; they run as root", file=sys.stderr)
        return None
    for path in (os.path.realpath(sys.executable), sysconfig.get_paths()["stdlib"], os.path.dirname(sandbox.__file__)):
        path = os.path.dirname(path)
        while path != os.sep:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                print(f"runner: {name} cannot reach {path} (this Python's installation); submissions run as root",
                      file=sys.stderr)
                return None
            path = os.path.dirname(path)
    return name, user.pw_uid, user.pw_gid


def grade_test(zygote_box: list, index: int, name: str, source: str, *, args, refs, user, private) -> dict:
    """Run one test in the sandbox and judge it -> its result line."""
    scratch = Path(args.work) / "sandbox" / str(index)
    scratch.mkdir(parents=True)
    (scratch / "test.py").write_text(source, encoding="utf-8")
    limit = args.time_limit + CHILD_SLACK_S
    request = {"test": name, "module": args.module, "scratch": str(scratch), "root": args.root,
               "time_limit": args.time_limit, "limit": limit, "user": user and user[0], "private": private}
    reply = zygote_box[0].run(request)
    if reply is None:  # the zygote is gone (killed by the test?): a new one for the next test
        zygote_box[0] = Zygote(Path(args.work) / "sandbox")
    records, ended, stopped, output = read_records(scratch)
    if not ended:
        output = _read_own_file(scratch / "output.log", LOG_TAIL_BYTES, tail=True).decode("utf-8", "replace")
        if reply and reply["timed_out"]:
            reason = f"the test process was stopped after {limit:g} s (a hang outside Python code?)"
        else:
            reason = f"the test process ended unexpectedly (status {reply['status'] if reply else 'unknown'})"
        stopped = (f"{reason}: did your code call os._exit(), crash the interpreter or exhaust the memory? "
                   "Output before it ended is shown below.")
    verdict = judge(name, records, refs, stopped)
    shutil.rmtree(scratch, ignore_errors=True)  # a child may have left folders it made unwritable
    return {"name": name, "passed": verdict.message is None, "fraction": verdict.fraction,
            "message": verdict.message or "passed", "output": output}


def main(argv=None) -> int:
    """Start the sandbox, then read the references; grade each test; write ``--work/results.jsonl``."""
    parser = argparse.ArgumentParser(prog="coursework_checks.runner")
    parser.add_argument("--module", required=True)
    parser.add_argument("--refs", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--time-limit", type=float, required=True)
    parser.add_argument("--tests", required=True, help="JSON list of test names")
    args = parser.parse_args(argv)
    autograder = Path(args.refs).resolve().parent
    sys.path.insert(0, str(autograder / "base"))  # judging's minispanbert.gradcheck: the pristine copy
    args.root = os.path.abspath(args.root)
    names = json.loads(args.tests)
    sandbox.become_subreaper()  # a test's orphans come here if its zygote is killed
    user = sandbox_user()
    if user:  # the child's user may read the submission copy, never the autograder
        os.chmod(args.work, 0o711)
        os.chmod(autograder, 0o700)
    (Path(args.work) / "sandbox").mkdir()
    zygote_box = [Zygote(Path(args.work) / "sandbox")]  # before any reference is in this process

    import numpy as np

    with np.load(args.refs, allow_pickle=False) as data:
        refs = {key: data[key] for key in data.files}
    tests = importlib.import_module(f"{__package__}.{args.module}").TESTS
    sources = test_sources(Path(__file__).with_name(f"{args.module}.py"), tests)
    private = [str(autograder), args.work]
    results = []
    try:
        for index, name in enumerate(names):
            if name not in tests:
                results.append({"name": name, "passed": False, "output": "",
                                "message": f"the autograder has no test {name!r}: rebuild it"})
                continue
            results.append(grade_test(zygote_box, index, name, sources[name], args=args, refs=refs, user=user,
                                      private=private))
    finally:
        zygote_box[0].close()  # and every process left: the results are written after they are gone
    with open(os.path.join(args.work, "results.jsonl"), "w", encoding="utf-8") as out:
        out.writelines(json.dumps(record) + "\n" for record in results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
