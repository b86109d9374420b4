"""The build-time leak check: no stubbed function's solution may be reachable from the student copy.

A solution can reach a student in three ways, and each has its own test here, applied to every
function (nested ones too), every module's top level and every notebook code cell of the student
tree, the stubs themselves excepted:

1. a drop-in second implementation: a function with the name of a listed function in another
   module (the engine's numba and CUDA kernels are exactly that, whatever their code looks like);
2. a copy: the same body, or one of the body's arithmetic statements (at least MIN_ARITHMETIC
   operators: maths, not the wiring ``dx, dw, db = linear_backward(dy, cache, xp=xp)`` that every
   layer shares), after renaming every local variable and argument (``dx = rstd * (g - ...)``
   matches ``grad = s * (u - ...)``; global names, attributes and constants must agree);
3. a paraphrase: the same sequence of operations (calls by name, arithmetic operators), kept or
   reordered a little (difflib ratio >= NEAR_DUPLICATE_RATIO over at least MIN_OPERATIONS
   operations), such as a test's oracle transcribing the official SQuAD F1.

The check is static on purpose: it reads the whole tree in well under a second, needs none of the
optional packages a kernel would (numba, CuPy, torch), and finds code a student could copy even
when nothing calls it. What it cannot see, an implementation written in a different style, the
build rules out by construction: the student copy holds only the import closure of the learning
core, the assignment's files, tests and notebooks (build.py), with the kernels' package replaced by
a stand-in that installs nothing.
"""
from __future__ import annotations

import ast
import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from minispanbert.coursework.workflow import LOCAL_CHECKS

MIN_ARITHMETIC = 2  # one operator (``T - 1``, ``a if a is None else a + b``) is an idiom, not an answer
MIN_OPERATIONS = 8
NEAR_DUPLICATE_RATIO = 0.8
SIMPLE_STATEMENTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _local_names(unit) -> set[str]:
    """Arguments and every name the unit stores to (its locals: renamed when fingerprinting)."""
    names = set()
    for node in ast.walk(unit):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
    return names


def fingerprint(nodes, local: set[str]) -> str:
    """The nodes' syntax with the unit's locals renamed in order of appearance (no positions)."""
    names: dict[str, str] = {}

    def dump(node) -> str:
        if isinstance(node, list):
            return "[" + ",".join(dump(item) for item in node) + "]"
        if not isinstance(node, ast.AST):
            return repr(node)
        if isinstance(node, ast.Name) and node.id in local:
            return "Name:" + names.setdefault(node.id, f"_{len(names)}")
        if isinstance(node, ast.arg):
            return "arg:" + names.setdefault(node.arg, f"_{len(names)}")
        if isinstance(node, ast.expr_context):
            return ""
        return type(node).__name__ + "(" + ",".join(dump(getattr(node, f, None)) for f in node._fields) + ")"
    return "\n".join(dump(n) for n in nodes)


def _arithmetic(node) -> int:
    return sum(isinstance(n, (ast.BinOp, ast.AugAssign)) for n in ast.walk(node))


def _statements(body):
    for top in body:
        for node in ast.walk(top):
            if isinstance(node, SIMPLE_STATEMENTS) and node.value is not None:
                yield node


def operations(body) -> list[str]:
    """The body's calls (by function or method name) and arithmetic operators, in source order."""
    out = []
    for top in body:
        for node in ast.walk(top):
            if isinstance(node, ast.Call):
                func = node.func
                out.append(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "call"))
            elif isinstance(node, (ast.BinOp, ast.AugAssign)):
                out.append(type(node.op).__name__)
    return out


def _without_docstring(body):
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


@dataclass
class Solution:
    """What the leak check looks for, taken from one listed function's solution source."""
    name: str  # "package.module:function"
    path: str
    body: str
    statements: dict  # fingerprint -> the statement's source
    operations: list


def solutions(spec, root: Path) -> list[Solution]:
    found = []
    for f in spec.functions:
        tree = ast.parse((root / f.path).read_text(encoding="utf-8"), filename=f.path)
        node = next(n for n in tree.body if isinstance(n, FUNCTIONS) and n.name == f.function)
        body, local = _without_docstring(node.body), _local_names(node)
        statements = {fingerprint([s], local): ast.unparse(s) for s in _statements(body)
                      if _arithmetic(s) >= MIN_ARITHMETIC}
        found.append(Solution(f.name, f.path, fingerprint(body, local), statements, operations(body)))
    return found


def _units(tree):
    """(label, name, body, locals) for the module's top level and every function in it."""
    top = [n for n in tree.body if not isinstance(n, (*FUNCTIONS, ast.ClassDef))]
    yield "top level", None, top, _local_names(ast.Module(body=top, type_ignores=[]))
    for node in ast.walk(tree):
        if isinstance(node, FUNCTIONS):
            yield f"{node.name} (line {node.lineno})", node.name, _without_docstring(node.body), _local_names(node)


def _similar(a: list, b: list) -> bool:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return all(ratio() >= NEAR_DUPLICATE_RATIO for ratio in (matcher.real_quick_ratio, matcher.quick_ratio,
                                                               matcher.ratio))  # cheap bounds first


def find_leaks(tree, where: str, sols: list[Solution], *, skip: frozenset = frozenset()) -> list[tuple[str, str]]:
    """[(label of the leaking unit, one-line reason)] for a parsed module or notebook cell; ``skip``
    holds the names of functions not to examine (the stubs of the file itself)."""
    names = {sol.name.split(":")[1]: sol for sol in sols}
    leaks = []
    for label, name, body, local in _units(tree):
        if name in skip or not body:
            continue
        if name in names:
            leaks.append((label, f"{where}: {label} is a second implementation of {names[name].name} (same name)"))
            continue
        statements = {fingerprint([s], local) for s in _statements(body) if _arithmetic(s) >= MIN_ARITHMETIC}
        ops = operations(body)
        for sol in sols:
            copied = statements & sol.statements.keys()
            if ops == sol.operations and fingerprint(body, local) == sol.body:  # equal bodies: equal operations first
                leaks.append((label, f"{where}: {label} has the body of {sol.name}"))
            elif copied:
                leaks.append((label, f"{where}: {label} holds {sol.name}'s statement `{sol.statements[min(copied)]}`"))
            elif min(len(ops), len(sol.operations)) >= MIN_OPERATIONS and _similar(ops, sol.operations):
                leaks.append((label, f"{where}: {label} computes {sol.name} with the same sequence of operations"))
            else:
                continue
            break
    return leaks


_FILE_LEAKS: dict = {}  # one build scans the checkout's modules and then their copies: mostly the same text


def file_leaks(source: str, where: str, sols: list[Solution], *, skip: frozenset = frozenset()) -> list:
    """:func:`find_leaks` of a module's source, remembered for the rest of the process."""
    key = (where, source, tuple((sol.name, sol.body) for sol in sols), skip)
    if key not in _FILE_LEAKS:
        _FILE_LEAKS[key] = find_leaks(ast.parse(source, filename=where), where, sols, skip=skip)
    return _FILE_LEAKS[key]


def notebook_cells(text: str):
    """(cell index, parsed code) of a notebook's code cells that parse (IPython magics dropped)."""
    for index, cell in enumerate(json.loads(text).get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(line for line in "".join(cell.get("source", [])).splitlines(keepends=True)
                         if not line.lstrip().startswith(("%", "!")))
        try:
            yield index, ast.parse(source)
        except SyntaxError:
            continue


def check_student_tree(spec, solution_root: Path, student: Path, absent=()) -> None:
    """ValueError naming the first leak: a path of ``absent`` (known second implementations) present
    in ``student``, or a unit of a .py file or notebook matching a listed function's solution. The
    visible graded tests under ``.coursework/`` (``coursework check``) are not scanned: they are named
    after the graded functions and hold calls and inputs, no solution."""
    for rel in absent:
        if (student / rel).exists():
            raise ValueError(f"leak check: {rel} (a second implementation of graded maths) is in the student copy")
    sols = solutions(spec, solution_root)
    stubbed: dict[str, frozenset] = {}
    for f in spec.functions:
        stubbed[f.path] = stubbed.get(f.path, frozenset()) | {f.function}
    for path in sorted(student.rglob("*")):
        rel = path.relative_to(student).as_posix()
        if rel.startswith(f"{LOCAL_CHECKS}/"):
            continue
        if path.suffix == ".py":
            leaks = file_leaks(path.read_text(encoding="utf-8"), rel, sols, skip=stubbed.get(rel, frozenset()))
        elif path.suffix == ".ipynb":
            leaks = [leak for index, tree in notebook_cells(path.read_text(encoding="utf-8"))
                     for leak in find_leaks(tree, f"{rel} cell {index}", sols)]
        else:
            continue
        if leaks:
            raise ValueError(f"leak check: {leaks[0][1]}: leave it out of the student copy or rewrite it")
