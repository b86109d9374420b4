"""Build an assignment: ``python -m minispanbert.coursework build A1 --out DIR`` writes

    DIR/student/          the project's git-tracked files, listed functions stubbed (stubs.py),
                          notebook solutions removed (notebooks.py), no graded tests, no assignment
                          files, no git history, no bytecode; plus ASSIGNMENT.md, coursework.json and
                          .coursework/ (the visible tests only, for `coursework check`: workflow.py)
    DIR/autograder/       setup.sh, run_autograder (Gradescope's entry points), requirements.txt
                          and requirements-ranges.txt (setup.sh's fallback), assignment.toml,
                          references.npz (outputs of the solution, fixed seeds),
                          grader/coursework_checks/ (the graded tests), base/minispanbert/ (the
                          student copy of the package, onto which a submission's files are laid;
                          its coursework kit is the one run_autograder grades with)
    DIR/autograder.zip    the same files at the zip's root, to upload to Gradescope

The references come from running every graded test on this checkout (the solution) in record mode,
which also runs their gradient and statistical checks, so a build fails when the solution does not
pass its own tests. Nothing in the autograder is solution code. DIR must be new or empty; the build
is staged next to it and renamed into place only when complete.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np

from minispanbert.coursework import assignment as assignments
from minispanbert.coursework.grade import failure_report
from minispanbert.coursework.notebooks import release_notebook
from minispanbert.coursework.stubs import stub_message, stub_source
from minispanbert.coursework.workflow import LOCAL_CHECKS, write_local_checks
from minispanbert.engine.runs.atomic import staged_folder

PACKAGE_DIR = Path(__file__).resolve().parent
# Instructor material that never reaches students: the graded tests, the assignment files (they
# name the hidden tests), the kit's own acceptance tests (they plant bugs into solution text) and CI.
EXCLUDED_PREFIXES = ("minispanbert/coursework/checks/", "minispanbert/coursework/assignments/",
                     "tests/coursework/", ".ci/")
REQUIREMENTS = ("numpy", "scipy", "tokenizers")
CHECKS_PACKAGE = "coursework_checks"


def project_root() -> Path:
    return PACKAGE_DIR.parent.parent


def tracked_files(root: Path) -> list[str]:
    """The git-tracked files of the checkout (the student copy starts from these, never from a
    folder walk, so build outputs, data and caches cannot leak in)."""
    try:
        listing = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        raise ValueError(f"{root} is not a git checkout of minispanbert: build copies the tracked files, "
                         "so run it from a clone (git clone ...; cd minispanbert)") from None
    return sorted(p for p in listing.stdout.decode().split("\0") if p)


def is_excluded(path: str) -> bool:
    return path.startswith(EXCLUDED_PREFIXES)


def record_references(spec) -> dict:
    """Run every graded test on this checkout in record mode -> {key: array}."""
    from minispanbert.coursework.checks.harness import Check, Fail  # instructor material: absent from student copies
    tests = importlib.import_module(f"{__package__}.checks.{spec.checks}").TESTS
    unknown = [t.name for t in spec.tests if t.name not in tests]
    if unknown:
        raise ValueError(f"assignment {spec.id} lists tests {unknown} that checks/{spec.checks}.py does not define")
    refs: dict = {}
    for t in spec.tests:
        try:
            tests[t.name](Check(t.name, refs, record=True))
        except NotImplementedError as exc:
            raise ValueError(f"graded test {t.name} hit a stub ({exc}): build from the instructor's "
                             "checkout, not from a student copy") from None
        except Fail as exc:
            raise ValueError(f"the solution fails its own graded test {t.name}: {exc}") from None
    return refs


def _student_guide(spec) -> str:
    lines = [f"# {spec.id}: {spec.title}", "", spec.summary, "", "## What to implement", ""]
    for f in spec.functions:
        lines.append(f"- `{f.path}`: `{f.function}` -- {f.task}")
    if spec.notebooks:
        lines += ["", "## Notebooks", "", "Work through these; their exercise cells say `# YOUR CODE HERE`:", ""]
        lines += [f"- `{nb}`" for nb in spec.notebooks]
    visible = [t for t in spec.tests if not t.hidden]
    hidden = [t for t in spec.tests if t.hidden]
    lines += ["", "## Check your work", "",
              "Every docstring gives the equation, the shapes and the derivative. Check each backward",
              "numerically with `minispanbert/gradcheck.py` (float64, tiny shapes) before you submit.", ""]
    if spec.student_tests:
        lines += ["```", f"PYTHONPATH=$PWD python -m pytest -q {' '.join(spec.student_tests)}", "```", ""]
    lines += ["Run the visible graded tests on your code (their code is in `" + LOCAL_CHECKS + "/`):", "", "```",
              "PYTHONPATH=$PWD python -m minispanbert.coursework check", "```", ""]
    lines += [f"The autograder runs {len(spec.tests)} tests worth {spec.max_score:g} points:", ""]
    lines += [f"- `{t.name}` ({t.points:g} pt)" for t in visible]
    if hidden:
        lines.append(f"- and {len(hidden)} hidden tests worth {sum(t.points for t in hidden):g} points, "
                     "shown after grades are published")
    lines += ["", "Only NumPy (and the package itself) may be used: importing torch, jax or autograd scores 0",
              "for the tests that touch that file.", "", "## Submit", "", "```",
              "python -m minispanbert.coursework submit", "```", "",
              f"writes `submission-{spec.id}.zip` with the files above; upload it to Gradescope.", ""]
    return "\n".join(lines)


def write_student(spec, root: Path, files: list[str], dest: Path) -> None:
    stubs: dict[str, dict[str, str]] = {}
    for f in spec.functions:
        stubs.setdefault(f.path, {})[f.function] = stub_message(f.name, f.task)
    missing = sorted(set(stubs) - set(files))
    if missing:
        raise ValueError(f"assignment {spec.id} lists functions in {missing[0]}, which git does not track")
    for rel in files:
        src = root / rel
        if is_excluded(rel) or not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in stubs:
            target.write_text(stub_source(src.read_text(encoding="utf-8"), stubs[rel], filename=rel), encoding="utf-8")
        elif rel.endswith(".ipynb"):
            target.write_text(release_notebook(src.read_text(encoding="utf-8"), where=rel)[0], encoding="utf-8")
        else:
            shutil.copyfile(src, target)
        shutil.copymode(src, target)
    (dest / "ASSIGNMENT.md").write_text(_student_guide(spec), encoding="utf-8")
    manifest = {"assignment": spec.id, "title": spec.title, "files": spec.files, "notebooks": list(spec.notebooks),
                "functions": {f.name: stub_message(f.name, f.task) for f in spec.functions}}
    (dest / "coursework.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


# The scripts' paths hang off AUTOGRADER_ROOT (Gradescope's /autograder unless set), so that the kit's
# tests can run them in a temporary folder laid out like Gradescope's.
SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image. It needs Python 3.10 or
# newer from apt: in the assignment's autograder settings choose the base image Ubuntu 22.04
# (Python 3.10) or Ubuntu 24.04 (Python 3.12). It makes the virtual environment ROOT/venv (Ubuntu
# 24.04's Python refuses system-wide pip installs, PEP 668) with the kit's requirements (tomli too on
# Python 3.10); the kit itself is this bundle's base/minispanbert, the copy it was built with.
# AUTOGRADER_ROOT (default /autograder) and AUTOGRADER_VENV_ARGS (more `python3 -m venv` arguments,
# e.g. --system-site-packages to install offline) let the kit's tests run it in a temporary folder.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
VENV="$ROOT/venv"
say() { echo "setup.sh: $*" >&2; }
apt_install() { apt-get update -q && apt-get install -y -q "$@"; }
if [ -e "$VENV" ]; then
    say "$VENV already exists: setup.sh runs once per image; remove that folder to set up again"
    exit 1
fi
command -v python3 >/dev/null || apt_install python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    say "the autograder needs Python 3.10 or newer and this image has $(python3 --version 2>&1):" \\
        "choose the base image Ubuntu 22.04 or newer in the autograder settings"
    exit 1
fi
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv  # apart from python3 on Ubuntu
STAGING=$(mktemp -d "$ROOT/.venv.new.XXXXXX")  # moved to ROOT/venv only once the kit starts in it
trap 'rm -rf "$STAGING"' EXIT
python3 -m venv ${AUTOGRADER_VENV_ARGS:-} "$STAGING"
PY="$STAGING/bin/python"
if ! "$PY" -m pip install --disable-pip-version-check -r "$SOURCE/requirements.txt"; then
    say "the versions that recorded the references (requirements.txt) do not install on" \\
        "$("$PY" --version); installing the newest that minispanbert accepts (requirements-ranges.txt)"
    "$PY" -m pip install --disable-pip-version-check -r "$SOURCE/requirements-ranges.txt"
fi
PYTHONPATH="$SOURCE/base" "$PY" -c '
import sys
from pathlib import Path
try:  # the kit imports and reads its assignment with this Python, or the image build stops here
    from minispanbert.coursework.assignment import load
    from minispanbert.coursework.grade import check_autograder
    check_autograder(Path(sys.argv[1]))
    load(Path(sys.argv[1]) / "assignment.toml")
except Exception as exc:
    sys.exit(f"setup.sh: the grading kit does not start with Python {sys.version.split()[0]}: "
             f"{type(exc).__name__}: {exc}")
' "$SOURCE"
mv -T "$STAGING" "$VENV"
trap - EXIT
say "ready: $VENV ($("$VENV/bin/python" --version))"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission (ROOT/submission, ROOT=AUTOGRADER_ROOT or /autograder).
# It grades with this bundle's kit (ROOT/source/base) in the environment setup.sh made, and always
# leaves a valid ROOT/results/results.json: when the kit cannot start, fails, or runs past
# AUTOGRADER_TIMEOUT_S (default 540 s, inside Gradescope's default limit of 10 minutes), one with
# score 0 and the reason.
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
PYTHON="$ROOT/venv/bin/python"
RESULTS="$ROOT/results/results.json"
LIMIT="${AUTOGRADER_TIMEOUT_S:-540}"
fail() {  # the reason kept to printable ASCII without quotes or backslashes: a valid JSON string
    local why
    why=$(printf '%s' "$1" | LC_ALL=C tr -cd ' -~' | tr -d '"\\\\')
    printf FAILURE_TEMPLATE "$why" >"$RESULTS.part" && mv -f "$RESULTS.part" "$RESULTS"
    echo "run_autograder: $why"
}
mkdir -p "$ROOT/results"
rm -f "$RESULTS"  # an earlier run's results must not stand for this one
if [ ! -x "$PYTHON" ]; then
    fail "its Python environment $ROOT/venv is missing (setup.sh did not finish): rebuild the autograder"
    exit 0
fi
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
PYTHONPATH="$SOURCE/base" timeout -k 10 "$LIMIT" "$PYTHON" -m minispanbert.coursework grade \\
    "$ROOT/submission" --autograder "$SOURCE" --out "$RESULTS" >"$LOG" 2>&1
status=$?
cat "$LOG"
if [ ! -f "$RESULTS" ]; then
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        fail "grading ran past $LIMIT s and was stopped"
    else
        fail "the grading kit failed (exit code $status): $(tail -n 1 "$LOG")"
    fi
fi
exit 0
"""
TOMLI = 'tomli>=1.1; python_version < "3.11"'  # tomllib's parser as a package, for Python 3.10


def run_autograder_script() -> str:
    """RUN_AUTOGRADER with grade.failure_report's results.json as the printf format of its fallback."""
    template = json.dumps(failure_report("@MESSAGE@")).replace("\\", "\\\\").replace("%", "%%")
    return RUN_AUTOGRADER.replace("FAILURE_TEMPLATE", shlex.quote(template.replace("@MESSAGE@", "%s") + "\\n"))


def requirements() -> tuple[str, str]:
    """requirements.txt (the versions that recorded the references) and requirements-ranges.txt (the
    versions pyproject.toml accepts: setup.sh's fallback where the recorded ones do not install,
    e.g. NumPy 2.4 on Python 3.10)."""
    project = assignments.read_toml(project_root() / "pyproject.toml", "project file")
    declared = {re.match(r"[A-Za-z0-9._-]+", dep).group().lower(): dep
                for dep in project.get("project", {}).get("dependencies", [])}
    pinned, ranges = [], []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(name)
        ranges.append(declared.get(name, name))
    return "\n".join(pinned + [TOMLI]) + "\n", "\n".join(ranges + [TOMLI]) + "\n"


def write_autograder(spec, toml_path: Path, student: Path, dest: Path, refs: dict) -> None:
    shutil.copytree(student / "minispanbert", dest / "base" / "minispanbert")
    checks = dest / "grader" / CHECKS_PACKAGE
    checks.mkdir(parents=True)
    for source in sorted((PACKAGE_DIR / "checks").glob("*.py")):
        shutil.copyfile(source, checks / source.name)
    shutil.copyfile(toml_path, dest / "assignment.toml")
    np.savez(dest / "references.npz", **refs)
    pinned, ranges = requirements()
    (dest / "requirements.txt").write_text(pinned, encoding="utf-8")
    (dest / "requirements-ranges.txt").write_text(ranges, encoding="utf-8")
    for name, text in (("run_autograder", run_autograder_script()), ("setup.sh", SETUP_SH)):
        (dest / name).write_text(text, encoding="utf-8")
        (dest / name).chmod(0o755)


def zip_folder(folder: Path, zip_path: Path) -> None:
    """Zip ``folder``'s contents at the archive's root (Gradescope looks for setup.sh there)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(str(path.relative_to(folder)), date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())


def build(assignment_id: str, out) -> Path:
    """Build ``assignment_id`` (a shipped id, or the path of an assignment file) into the new or
    empty folder ``out``; returns ``out``."""
    spec = assignments.load(assignment_id)
    toml_path = Path(assignment_id) if Path(assignment_id).suffix == ".toml" else \
        assignments.ASSIGNMENTS_DIR / f"{spec.id}.toml"
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not an empty folder: pick a new --out (build never overwrites)")
    root = project_root()
    files = tracked_files(root)
    refs = record_references(spec)
    with staged_folder(out) as staging:  # appears complete or not at all
        write_student(spec, root, files, staging / "student")
        write_local_checks(spec, PACKAGE_DIR / "checks", refs, staging / "student")
        write_autograder(spec, toml_path, staging / "student", staging / "autograder", refs)
        zip_folder(staging / "autograder", staging / "autograder.zip")
    return out
