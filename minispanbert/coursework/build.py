"""Build an assignment: ``python -m minispanbert.coursework build A1 --out DIR`` writes

    DIR/student/          the reference path only (student_files): the git-tracked files of the
                          learning core and of whatever the assignment's files, tests, notebooks and
                          `python -m minispanbert.train` import, listed functions stubbed (stubs.py,
                          docstrings as --hints says), the assignment's notebooks without their
                          solutions (notebooks.py), its tests without solution-bearing ones, the
                          kernels replaced by a stand-in; no graded tests, no assignment files, no
                          git history, no bytecode; plus ASSIGNMENT.md, coursework.json and
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
pass its own tests. Nothing in the autograder is solution code. The build also fails when the
student copy still holds a stubbed function's solution or an equivalent implementation (leaks.py).
DIR must be new or empty; the build
is staged next to it and renamed into place only when complete.
"""
from __future__ import annotations

import ast
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
from minispanbert.coursework.leaks import check_student_tree, file_leaks, find_leaks, solutions
from minispanbert.coursework.notebook_grading import released_grade_cells, write_grade_cells
from minispanbert.coursework.notebooks import release_notebook
from minispanbert.coursework.stubs import HINTS, stub_message, stub_source
from minispanbert.coursework.workflow import LOCAL_CHECKS, write_local_checks
from minispanbert.engine.runs.atomic import staged_folder

PACKAGE_DIR = Path(__file__).resolve().parent
# Instructor material that never reaches students: the graded tests, the assignment files (they
# name the hidden tests), the kit's own acceptance tests (they plant bugs into solution text) and CI.
EXCLUDED_PREFIXES = ("minispanbert/coursework/checks/", "minispanbert/coursework/assignments/",
                     "tests/coursework/", ".ci/")
# Second implementations of the core's graded maths: the numba and CUDA kernels (their package is
# replaced by KERNELS_STAND_IN), the PyTorch twin and what runs it, the tests' stored torch values.
ALTERNATIVE_IMPLEMENTATIONS = ("minispanbert/engine/kernels/", "minispanbert/engine/bench/", "minispanbert/bench.py",
                               "benchmarks/", "tests/fixtures/")
KERNELS_PACKAGE = "minispanbert/engine/kernels/__init__.py"
KERNELS_STAND_IN = '''"""The student copy's stand-in for the engine's kernels: the command-line tools run the core's
reference ops as they are (the kernels, second implementations of graded maths, stay with the
instructor)."""
import contextlib


@contextlib.contextmanager
def installed():
    """Install nothing: the reference ops stay in place."""
    yield
'''
# The learning core (README, "The core"; tests/core/test_import_graph.py): always in the student copy.
CORE = ("minispanbert/__init__.py", "minispanbert/backend.py", "minispanbert/config.py", "minispanbert/gradcheck.py",
        "minispanbert/keyed_random.py", "minispanbert/masking.py", "minispanbert/optim.py", "minispanbert/train.py",
        "minispanbert/layers/", "minispanbert/model/", "minispanbert/data/", "minispanbert/coursework/")
REQUIREMENTS = ("numpy", "scipy", "tokenizers")
NOTEBOOK_REQUIREMENTS = ("nbclient", "ipykernel", "matplotlib")  # running graded notebooks (notebook_grading.py)
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


def _module_file(name: str, files: set[str], search: tuple[str, ...]) -> str | None:
    for base in search:
        stem = f"{base}{name.replace('.', '/')}"
        for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
            if candidate in files:
                return candidate
    return None


def imported_files(tree, rel: str, files: set[str]) -> set[str]:
    """The tracked files that the parsed file ``rel`` imports anywhere in it (package __init__s
    included; a test's sibling helpers such as ``conftest`` resolved in its folder and tests/)."""
    package = rel.rsplit("/", 1)[0].replace("/", ".") if "/" in rel else ""
    search = ("",) if rel.startswith("minispanbert/") else ("", f"{package.replace('.', '/')}/", "tests/")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                path = _module_file(".".join(parts[:i]), files, search)
                if path:
                    found.add(path)
    return found


def _parsed(root: Path, rel: str):
    if rel.endswith(".ipynb"):
        from minispanbert.coursework.leaks import notebook_cells
        return [tree for _, tree in notebook_cells((root / rel).read_text(encoding="utf-8"))]
    return [ast.parse((root / rel).read_text(encoding="utf-8"), filename=rel)]


def student_files(spec, root: Path, files: list[str]) -> list[str]:
    """The tracked files of the student copy: the import closure of the learning core, the
    assignment's files, student tests and notebooks, and the coursework kit (the autograder grades
    with the student copy's kit), never entering ALTERNATIVE_IMPLEMENTATIONS (the kernels' package
    is replaced by its stand-in); plus the project's prose and settings (README, docs/, pyproject)."""
    tracked = set(files)
    listed = [*spec.student_tests, *spec.notebooks, *spec.files]
    missing = [rel for rel in listed if rel not in tracked]
    if missing:
        raise ValueError(f"assignment {spec.id} lists {missing[0]}, which git does not track")
    todo = [rel for rel in files if rel.startswith(CORE) and rel.endswith(".py") and not is_excluded(rel)] + listed
    chosen: set[str] = set()
    while todo:
        rel = todo.pop()
        left_out = rel.startswith(ALTERNATIVE_IMPLEMENTATIONS) and rel != KERNELS_PACKAGE
        if rel in chosen or is_excluded(rel) or left_out:
            continue
        chosen.add(rel)
        if rel != KERNELS_PACKAGE and rel.endswith((".py", ".ipynb")):
            for tree in _parsed(root, rel):
                todo.extend(imported_files(tree, rel, tracked))
    chosen -= _leaking_and_dependent(spec, root, tracked, chosen, required={*listed, *(
        rel for rel in chosen if rel.startswith(CORE))})
    prose = [rel for rel in files if not rel.endswith((".py", ".ipynb")) and not is_excluded(rel)
             and not rel.startswith(("tests/", *ALTERNATIVE_IMPLEMENTATIONS))]
    return sorted(chosen | set(prose))


def _leaking_and_dependent(spec, root: Path, tracked: set[str], chosen: set[str], required: set[str]) -> set[str]:
    """The package modules of ``chosen`` to leave out: those holding a solution of ``spec`` outside
    the stubs (a sister model's loss with a listed function's name and signature, ...) and those
    importing them, transitively. A required file among them is left to the leak check to report."""
    sols = solutions(spec, root)
    stubbed = {f.path for f in spec.functions}
    out = {rel for rel in chosen if rel.startswith("minispanbert/") and rel.endswith(".py") and rel not in stubbed
           and rel not in required and file_leaks((root / rel).read_text(encoding="utf-8"), rel, sols)}
    while out:
        more = {rel for rel in chosen - out - required if rel.startswith("minispanbert/") and rel.endswith(".py")
                and imported_files(ast.parse((root / rel).read_text(encoding="utf-8")), rel, tracked) & out}
        if not more:
            break
        out |= more
    return out


def strip_tests(source: str, rel: str, tracked: set[str], shipped: set[str], sols) -> str:
    """A shipped test file without the top-level statements that would hand out an answer (leaks.py
    finds a solution in them) or that need a file the student copy leaves out, nor those that use
    what these define (a helper's callers, a parameter list's tests), whole source lines removed."""
    tree = ast.parse(source, filename=rel)
    removed_names: set[str] = set()
    removed = set()
    leaking = {label.split(" (line")[0] for label, _ in find_leaks(tree, rel, sols)}
    for index, node in enumerate(tree.body):
        needs_missing = isinstance(node, (ast.Import, ast.ImportFrom)) and any(
            path not in shipped for path in imported_files(ast.Module([node], []), rel, tracked))
        if needs_missing or getattr(node, "name", None) in leaking:
            removed.add(index)
    while True:  # what uses a removed definition goes too
        for index in removed:
            removed_names |= _bound_names(tree.body[index])
        more = {i for i, node in enumerate(tree.body) if i not in removed
                and any(isinstance(n, ast.Name) and n.id in removed_names for n in ast.walk(node))}
        if not more:
            break
        removed |= more
    lines = source.splitlines(keepends=True)
    for index in sorted(removed, reverse=True):
        node = tree.body[index]
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        lines[first - 1:node.end_lineno] = []
    return "".join(lines)


def _bound_names(node) -> set[str]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def record_references(spec) -> dict:
    """Run every graded test on this checkout in record mode, then with each known wrong variant standing
    in (checks/misconceptions.py) -> {key: array}."""
    from minispanbert.coursework.checks.harness import Check, Fail  # instructor material: absent from student copies
    from minispanbert.coursework.checks.misconceptions import record_variants
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
    record_variants(spec.checks, tests, refs)
    return refs


def _student_guide(spec, grade_cells: dict) -> str:
    lines = [f"# {spec.id}: {spec.title}", "", spec.summary, "", "## What to implement", ""]
    for f in spec.functions:
        lines.append(f"- `{f.path}`: `{f.function}` -- {f.task}")
    if spec.notebooks:
        lines += ["", "## Notebooks", "", "Work through these; their exercise cells say `# YOUR CODE HERE`:", ""]
        lines += [f"- `{nb}`" for nb in spec.notebooks]
    for rel, cells in grade_cells.items():
        lines += ["", f"`{rel}` earns points too: its autograded test cells "
                  f"({', '.join(c['grade_id'] for c in cells)}; {sum(c['points'] for c in cells):g} points)",
                  "must run without an error when the autograder runs the notebook from top to bottom. Submit it",
                  "with your code; edits to a test cell change nothing (the autograder runs its own copy)."]
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


def write_student(spec, root: Path, files: list[str], dest: Path, hints: str = "derivations") -> None:
    stubs: dict[str, dict[str, str]] = {}
    for f in spec.functions:
        stubs.setdefault(f.path, {})[f.function] = stub_message(f.name, f.task)
    shipped = student_files(spec, root, files)
    sols = solutions(spec, root)
    for rel in shipped:
        src = root / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in stubs:
            target.write_text(stub_source(src.read_text(encoding="utf-8"), stubs[rel], filename=rel, hints=hints),
                              encoding="utf-8")
        elif rel == KERNELS_PACKAGE:
            target.write_text(KERNELS_STAND_IN, encoding="utf-8")
        elif rel.endswith(".ipynb"):
            text, _ = release_notebook(src.read_text(encoding="utf-8"), where=rel,
                                       stubbed=[f.function for f in spec.functions])
            target.write_text(text, encoding="utf-8")
        elif rel.startswith("tests/") and rel.endswith(".py"):
            target.write_text(strip_tests(src.read_text(encoding="utf-8"), rel, set(files), set(shipped), sols),
                              encoding="utf-8")
        else:
            shutil.copyfile(src, target)
        shutil.copymode(src, target)
    (dest / "ASSIGNMENT.md").write_text(_student_guide(spec, released_grade_cells(spec, dest)), encoding="utf-8")
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


def requirements(spec) -> tuple[str, str]:
    """requirements.txt (the versions that recorded the references) and requirements-ranges.txt (the
    versions pyproject.toml accepts: setup.sh's fallback where the recorded ones do not install,
    e.g. NumPy 2.4 on Python 3.10); with what runs notebooks when ``spec`` grades some."""
    project = assignments.read_toml(project_root() / "pyproject.toml", "project file").get("project", {})
    declared = {re.match(r"[A-Za-z0-9._-]+", dep).group().lower(): dep for dep in
                project.get("dependencies", []) + project.get("optional-dependencies", {}).get("notebooks", [])}
    pinned, ranges = [], []
    for name in REQUIREMENTS + (NOTEBOOK_REQUIREMENTS if spec.graded_notebooks else ()):
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
    write_grade_cells(spec, student, dest)
    pinned, ranges = requirements(spec)
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


def build(assignment_id: str, out, *, hints: str = "derivations") -> Path:
    """Build ``assignment_id`` (a shipped id, or the path of an assignment file) into the new or
    empty folder ``out``; returns ``out``. ``hints`` (stubs.HINTS) is how much of each stubbed
    function's documentation the student copy keeps."""
    if hints not in HINTS:
        raise ValueError(f"unknown hints level {hints!r}: choose one of {', '.join(HINTS)}")
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
        write_student(spec, root, files, staging / "student", hints)
        check_student_tree(spec, root, staging / "student", absent=[
            rel for rel in files if rel.startswith(ALTERNATIVE_IMPLEMENTATIONS) and rel != KERNELS_PACKAGE])
        # after the leak check, whose first rule flags the visible tests: they are named after the graded functions
        write_local_checks(spec, PACKAGE_DIR / "checks", refs, staging / "student")
        write_autograder(spec, toml_path, staging / "student", staging / "autograder", refs)
        zip_folder(staging / "autograder", staging / "autograder.zip")
    return out
