"""Attacks on the grader (issue 24, build item 1): a submission that tries to raise its score or
outlive its grading, one test per attack class. Each submission is the untouched student copy of A1
(every stub raises NotImplementedError, so an honest grading scores 0) with an attack pasted into a
graded file; each test checks that the score is not raised and that no process the attack started
is alive once ``grade`` returns. The grading is the real one (checks/runner.py + checks/sandbox.py).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework.build import project_root
from minispanbert.coursework.grade import grade

ROOT = project_root()
if subprocess.run(["git", "-C", str(ROOT), "ls-files", "--error-unmatch", "pyproject.toml"],
                  capture_output=True).returncode != 0:
    pytest.skip("the coursework kit builds from a git checkout; this is not one", allow_module_level=True)
if not Path("/proc/self/stat").exists():
    pytest.skip("the sandbox's process checks read Linux's /proc", allow_module_level=True)
LINEAR = "minispanbert/layers/linear.py"
HIDDEN = "layernorm_backward_3d"  # A1's hidden test; its code says offset=50.0
SPEC = assignments.load("A1")


@pytest.fixture(scope="module")
def a1(built):
    return built("A1")


@pytest.fixture
def marker():
    """A command-line argument no other process has: ``sleep MARKER`` is an attack's process."""
    return f"{random.randint(10**6, 10**7)}.5"


def alive(marker: str) -> list[str]:
    """Command lines of the living (not zombie) processes whose command line holds ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(cmdline)
    return found


def attacked(a1: Path, dest: Path, attack: str) -> Path:
    """The student copy of A1 with ``attack`` (Python, at module level) appended to linear.py."""
    shutil.copytree(a1 / "student", dest)
    with open(dest / LINEAR, "a", encoding="utf-8") as f:
        f.write("\n\n" + textwrap.dedent(attack))
    return dest


def grade_attack(a1, tmp_path, attack, marker="no-process-started"):
    report = grade(attacked(a1, tmp_path / "submission", attack), a1 / "autograder")
    assert report["score"] == 0, {t["name"]: t["output"] for t in report["tests"] if t["score"]}
    assert alive(marker) == []
    return {t["name"]: t for t in report["tests"]}


def test_forged_results_and_patched_checks_do_not_score(a1, tmp_path):
    """The submission patches, inside its own process, the JSON writer, every Check method and the
    Fail exception, and writes passing results and records wherever it can: the grader's verdict
    still comes from comparing values with references it never handed out."""
    tests = grade_attack(a1, tmp_path, """
        import json, os, sys
        _dumps = json.dumps
        def _forged(obj, *args, **kwargs):
            if isinstance(obj, dict):
                obj = {**obj, "passed": True, "stopped": None, "message": "passed", "score": 99}
            return _dumps(obj, *args, **kwargs)
        json.dumps = _forged
        harness = sys.modules.get("coursework_checks.harness")
        if harness is not None:
            for name in ("close", "equal", "gradient", "within", "expect"):
                setattr(harness.Check, name, lambda *args, **kwargs: None)
            harness.Fail = type("Fail", (Exception,), {})
        line = _dumps({"name": "linear_forward", "passed": True, "message": "passed", "output": ""}) + "\\n"
        for folder in {os.getcwd(), os.path.dirname(os.getcwd()), os.path.dirname(os.path.dirname(os.getcwd()))}:
            for target in ("results.jsonl", "results.json", "records.jsonl"):
                try:
                    with open(os.path.join(folder, target), "a") as out:
                        out.write(line)
                except OSError:
                    pass

        def linear_forward(x, weight, bias, *, xp=None):
            return None, None
        """)
    assert "no value for y" in tests["linear_forward"]["output"], tests["linear_forward"]["output"]


def test_references_are_not_in_the_childs_frames_memory_or_reach(a1, tmp_path):
    """The submission looks for the reference of linear_forward/y in the calling frames, in every
    object the garbage collector knows and every module's globals, and on disk next to the checks (PYTHONPATH names their
    folder): the child never held the references and cannot open the autograder's files."""
    tests = grade_attack(a1, tmp_path, """
        import gc, os, sys

        def _find_reference():
            key, found = "linear_forward/y", []
            frame = sys._getframe(1)
            while frame is not None:
                for value in frame.f_locals.values():
                    refs = getattr(value, "refs", None)
                    if isinstance(refs, dict) and key in refs:
                        found.append(refs[key])
                frame = frame.f_back
            # dicts of arrays only are not tracked by gc: look inside every module and tracked object too
            holders = gc.get_objects() + [vars(m) for m in list(sys.modules.values()) if hasattr(m, "__dict__")]
            for holder in holders:
                values = holder.values() if isinstance(holder, dict) else vars(holder).values() if hasattr(
                    holder, "__dict__") and isinstance(vars(holder), dict) else ()
                found += [v[key] for v in list(values) if isinstance(v, dict) and key in v]
            for folder in os.environ.get("PYTHONPATH", "").split(os.pathsep):
                try:
                    import numpy as np
                    with np.load(os.path.join(os.path.dirname(folder), "references.npz")) as data:
                        found.append(data[key])
                except (OSError, KeyError, ValueError) as exc:
                    print("disk:", type(exc).__name__)
            return found

        def linear_forward(x, weight, bias, *, xp=None):
            found = _find_reference()
            print("references found:", len(found))
            if found:
                return found[0], None
            raise NotImplementedError("nothing found")
        """)
    output = tests["linear_forward"]["output"]
    assert "references found: 0" in output and "disk: PermissionError" in output, output


def test_hidden_tests_code_never_reaches_a_visible_tests_output(a1, tmp_path):
    """The submission prints what it can find of the hidden test -- the checks module in memory, its
    functions and their code, the source file on disk -- into every visible test's output."""
    tests = grade_attack(a1, tmp_path, f"""
        import gc, inspect, os, sys, types

        def _leak():
            text = []
            for module in list(sys.modules.values()):
                tests = getattr(module, "TESTS", None)
                if isinstance(tests, dict):
                    text.append("registry: " + " ".join(tests))
            for obj in gc.get_objects():
                if isinstance(obj, types.FunctionType) and obj.__name__ == "{HIDDEN}":
                    text.append("function: " + repr(obj.__code__.co_consts))
            for folder in os.environ.get("PYTHONPATH", "").split(os.pathsep):
                path = os.path.join(folder, "coursework_checks", "a1.py")
                try:
                    with open(path) as f:
                        text.append("file: " + f.read())
                except OSError as exc:
                    text.append("file: " + type(exc).__name__)
            return "\\n".join(text)

        def linear_forward(x, weight, bias, *, xp=None):
            print(_leak())
            raise NotImplementedError("printed")
        """)
    visible = [t for t in SPEC.tests if not t.hidden]
    output = tests["linear_forward"]["output"]
    assert "registry: linear_forward" in output and "file: PermissionError" in output, output
    for t in visible:
        assert HIDDEN not in tests[t.name]["output"] and "offset=50.0" not in tests[t.name]["output"], t.name


def test_no_process_started_by_a_submission_outlives_grading(a1, tmp_path, marker):
    """The submission starts a process in its own group, one in a new session, and a double-forked
    daemon that calls setsid, each sleeping a minute, then fails the test: none is alive when
    grading returns (the sandbox kills the test's group, then every orphan adopted by its zygote)."""
    grade_attack(a1, tmp_path, f"""
        import os, subprocess

        def linear_forward(x, weight, bias, *, xp=None):
            subprocess.Popen(["sleep", "{marker}"])
            subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execvp("sleep", ["sleep", "{marker}"])
                os._exit(0)
            raise NotImplementedError("left three sleepers")
        """, marker)


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode() + oct(path.stat().st_mode).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_the_autograder_and_later_gradings_are_out_of_reach(a1, tmp_path):
    """The submission rewrites what a later grading would use -- the autograder's judge, references,
    pristine gradcheck, and the submission copy's gradcheck -- and reports what it managed: nothing;
    the autograder is byte for byte unchanged and the untouched stubs still score 0 after it."""
    before = tree_digest(a1 / "autograder")
    tests = grade_attack(a1, tmp_path, """
        import os

        def _tamper():
            done = []
            grader = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p.endswith("grader")]
            project = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if not p.endswith("grader")]
            targets = [os.path.join(g, "coursework_checks", name) for g in grader
                       for name in ("harness.py", "runner.py")]
            targets += [os.path.join(os.path.dirname(g), rel) for g in grader
                        for rel in ("references.npz", "base/minispanbert/gradcheck.py", "assignment.toml")]
            targets += [os.path.join(p, "minispanbert", "gradcheck.py") for p in project]
            for target in targets:
                try:
                    with open(target, "a") as f:
                        f.write("\\ndef judge(*args):\\n    return None\\n")
                    done.append(target)
                except OSError as exc:
                    print("refused:", type(exc).__name__)
            return done

        def linear_forward(x, weight, bias, *, xp=None):
            print("tampered:", len(_tamper()))
            raise NotImplementedError("tampered")
        """)
    assert "tampered: 0" in tests["linear_forward"]["output"], tests["linear_forward"]["output"]
    assert tree_digest(a1 / "autograder") == before
    assert grade(a1 / "student", a1 / "autograder")["score"] == 0


def test_the_visible_total_does_not_reveal_hidden_failures(a1, tmp_path):
    """Two submissions that differ only on the hidden test (a LayerNorm backward that fails on 3-D
    inputs, which only the hidden test uses) get the same output text, which says that it excludes
    the hidden tests; only the per-test entries Gradescope hides until publication differ."""
    def solution(dest, old=None, new=None):
        for rel in SPEC.files:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, dest / rel)
        if old:
            path = dest / "minispanbert/layers/layernorm.py"
            text = path.read_text()
            assert text.count(old) == 1
            path.write_text(text.replace(old, new))
        return dest
    anchor = "    xhat, rstd, gamma = cache\n"
    full = grade(solution(tmp_path / "full"), a1 / "autograder")
    only_3d = "    if dy.ndim == 3:\n        raise ValueError('3-D')\n" + anchor
    broken = grade(solution(tmp_path / "broken", anchor, only_3d), a1 / "autograder")
    assert [t["name"] for t in broken["tests"] if t["status"] != "passed" and "notebook" not in t["tags"]] == [HIDDEN]
    hidden_count = sum(t.hidden for t in SPEC.tests)
    assert full["output"] == broken["output"] and f"excludes {hidden_count} hidden tests" in full["output"]
    hidden = next(t for t in broken["tests"] if t["name"] == HIDDEN)
    assert hidden["visibility"] == "after_published" and broken["score"] == full["score"] - hidden["max_score"]
