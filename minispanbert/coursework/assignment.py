"""An assignment as data: one TOML file in ``minispanbert/coursework/assignments/`` (or in a built
autograder) listing what students write and how it is graded.

    id, title, summary        shown to students (ASSIGNMENT.md) and in the grading summary
    checks                    the module of minispanbert/coursework/checks/ holding the graded tests
    time_limit                seconds per graded test (default 10)
    notebooks                 notebooks whose exercises belong to this assignment (listed for students)
    graded_notebooks          those of ``notebooks`` whose autograded test cells (nbgrader metadata
                              ``grade: true``, ``points: N``) score points (notebook_grading.py)
    notebook_time_limit       seconds for running each graded notebook, all its cells (default 60)
    student_tests             public tests students can run on their copy
    [[functions]]             name = "package.module:function", task = what to implement (the stub's message)
    [[tests]]                 name (a test in the checks module), points, covers = listed functions it
                              calls (the first is the one it grades), visibility = Gradescope's
                              "visible" (default), "after_due_date", "after_published" or "hidden"

A test whose visibility is not "visible" is hidden: its code and references exist only in the
autograder, and students see it after the due date or after grades are published.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, as the tomli package
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

ASSIGNMENTS_DIR = Path(__file__).resolve().parent / "assignments"
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")


@dataclass(frozen=True)
class Function:
    name: str  # "package.module:function"
    task: str

    @property
    def module(self) -> str:
        return self.name.split(":")[0]

    @property
    def function(self) -> str:
        return self.name.split(":")[1]

    @property
    def path(self) -> str:
        """The source file, relative to the project root."""
        return self.module.replace(".", "/") + ".py"


@dataclass(frozen=True)
class Test:
    name: str
    points: float
    covers: tuple[str, ...]
    visibility: str

    @property
    def hidden(self) -> bool:
        return self.visibility != "visible"


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    summary: str
    checks: str
    time_limit: float
    notebooks: tuple[str, ...]
    graded_notebooks: tuple[str, ...]
    notebook_time_limit: float
    student_tests: tuple[str, ...]
    functions: tuple[Function, ...]
    tests: tuple[Test, ...]

    @property
    def files(self) -> list[str]:
        """The source files a submission must contain, in order of first listing."""
        return list(dict.fromkeys(f.path for f in self.functions))

    @property
    def max_score(self) -> float:
        return float(sum(t.points for t in self.tests))


def available() -> list[str]:
    return sorted(p.stem for p in ASSIGNMENTS_DIR.glob("*.toml"))


def read_toml(path: Path, what: str) -> dict:
    """The TOML file ``path`` as a dict; ValueError naming ``what`` and the problem."""
    if tomllib is None:
        raise ValueError(f"reading the {what} {path} needs Python 3.11+ or the tomli package: pip install tomli")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc}") from None


def load(name_or_path) -> Assignment:
    """An assignment by id (``"A1"``, from the shipped ones) or from a TOML path; ValueError on a
    missing or malformed file, naming the problem."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = ASSIGNMENTS_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            choices = ", ".join(available()) or "none: this is a student copy"
            raise ValueError(f"unknown assignment {name_or_path!r}: choose one of {choices}")
    data = read_toml(path, "assignment file")
    where = f"assignment file {path}"
    try:
        functions = tuple(Function(f["name"], f["task"]) for f in data["functions"])
        tests = tuple(Test(t["name"], float(t["points"]), tuple(t["covers"]), t.get("visibility", "visible"))
                      for t in data["tests"])
        assignment = Assignment(
            id=data["id"], title=data["title"], summary=data.get("summary", "").strip(), checks=data["checks"],
            time_limit=float(data.get("time_limit", 10)), notebooks=tuple(data.get("notebooks", ())),
            graded_notebooks=tuple(data.get("graded_notebooks", ())),
            notebook_time_limit=float(data.get("notebook_time_limit", 60)),
            student_tests=tuple(data.get("student_tests", ())), functions=functions, tests=tests)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: missing or malformed field {exc}") from None
    names = {f.name for f in functions}
    for f in functions:
        if f.name.count(":") != 1:
            raise ValueError(f"{where}: function {f.name!r} must be written 'package.module:function'")
    for t in tests:
        if t.visibility not in VISIBILITIES:
            raise ValueError(f"{where}: test {t.name!r} has visibility {t.visibility!r}; use one of {VISIBILITIES}")
        unknown = [c for c in t.covers if c not in names]
        if not t.covers or unknown:
            raise ValueError(f"{where}: test {t.name!r} must cover listed functions; unknown {unknown}")
        if t.points <= 0:
            raise ValueError(f"{where}: test {t.name!r} must be worth > 0 points")
    if not isinstance(data.get("graded_notebooks", []), list):
        raise ValueError(f"{where}: graded_notebooks must be a list of notebook paths, e.g. [\"notebooks/a.ipynb\"]")
    for rel in assignment.graded_notebooks:
        if rel not in assignment.notebooks:
            raise ValueError(f"{where}: graded notebook {rel!r} is not in notebooks; list it there too")
    if assignment.graded_notebooks and not assignment.notebook_time_limit > 0:
        raise ValueError(f"{where}: notebook_time_limit must be > 0 seconds")
    if len({t.name for t in tests}) != len(tests):
        raise ValueError(f"{where}: two tests share a name")
    return assignment
