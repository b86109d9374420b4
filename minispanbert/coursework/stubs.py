"""Turn listed functions into stubs: keep the signature, decorators and docstring (equation,
shapes, derivative), replace the body by ``raise NotImplementedError("<module:function>: implement
...")``. The library's own source carries no markers: the positions come from ``ast``, and the
rewrite replaces whole source lines, so everything outside the listed bodies stays byte-identical.
"""
from __future__ import annotations

import ast


def stub_message(name: str, task: str) -> str:
    return f"{name}: implement {task} (see its docstring)"


def _listed_functions(tree, wanted):
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in wanted:
            found[node.name] = node
    return found


def stub_source(source: str, messages: dict[str, str], *, filename: str = "<source>") -> str:
    """``source`` with each top-level function named in ``messages`` (name -> NotImplementedError
    message) reduced to its docstring and a raise. ValueError for a listed function that is missing,
    has no docstring, or shares a line with other code."""
    tree = ast.parse(source, filename=filename)
    found = _listed_functions(tree, messages)
    missing = sorted(set(messages) - set(found))
    if missing:
        raise ValueError(f"{filename}: no top-level function {missing[0]!r} to stub")
    lines = source.splitlines(keepends=True)
    # Rewrite from the bottom up so earlier line numbers stay valid.
    for name, node in sorted(found.items(), key=lambda kv: -kv[1].lineno):
        if ast.get_docstring(node, clean=False) is None or len(node.body) < 2:
            raise ValueError(f"{filename}: {name} needs a docstring and a body to be stubbed "
                             "(students read the equation and shapes from the docstring)")
        docstring = node.body[0]
        if node.body[1].lineno <= docstring.end_lineno:
            raise ValueError(f"{filename}: {name}'s body starts on its docstring's line; put it on a line of its own")
        indent = " " * docstring.col_offset
        stub = f"{indent}raise NotImplementedError(\n{indent}    {messages[name]!r})\n"
        lines[docstring.end_lineno:node.end_lineno] = [stub]
    result = "".join(lines)
    check = _listed_functions(ast.parse(result, filename=filename), messages)
    for name, node in check.items():  # the rewrite must leave exactly docstring + raise
        assert len(node.body) == 2 and isinstance(node.body[1], ast.Raise), name
    return result


def function_body(source: str, name: str) -> str:
    """The source lines of a top-level function's body after its docstring (what a stub removes)."""
    tree = ast.parse(source)
    node = _listed_functions(tree, {name})[name]
    lines = source.splitlines(keepends=True)
    return "".join(lines[node.body[0].end_lineno:node.end_lineno])
