"""Turn listed functions into stubs: keep the signature, decorators and docstring (equation,
shapes, derivative), replace the body by ``raise NotImplementedError("<module:function>: implement
...")``. ``hints`` sets how much of the documentation stays, in the stubbed functions' docstrings
and in the docstring of the module holding them (where the layers derive their backward passes):
"derivations" all of it, "equations" all but the derivative (from a line starting "Backward" or
naming a derivative, gradient or Jacobian, to the end of its paragraph), "none" the first line. The library's own source carries no markers: the positions come from ``ast``, and the
rewrite replaces whole source lines, so everything outside the listed bodies stays byte-identical.
"""
from __future__ import annotations

import ast
import re

HINTS = ("derivations", "equations", "none")
DERIVATIVE_LINE = re.compile(r"^\s*Backward|derivative|gradient|jacobian|\w'\(", re.IGNORECASE)


def reduce_docstring(text: str, hints: str) -> str:
    """A docstring's text with as much as ``hints`` keeps (see the module docstring)."""
    if hints == "derivations":
        return text
    if hints == "none":
        return text.strip().splitlines()[0]
    kept, dropping = [], False
    for line in text.splitlines():
        if not line.strip():
            dropping = False
        elif DERIVATIVE_LINE.search(line):
            dropping = True
        if not dropping:
            kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n") + ("\n" if "\n" in text.strip() else "")


def _docstring_lines(node, hints: str, indent: str) -> str:
    text = reduce_docstring(ast.get_docstring(node, clean=False), hints).replace('"""', '\\"\\"\\"')
    closing = indent if text.endswith("\n") else ""
    return f'{indent}"""{text}{closing}"""\n'


def stub_message(name: str, task: str) -> str:
    return f"{name}: implement {task} (see its docstring)"


def _listed_functions(tree, wanted):
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in wanted:
            found[node.name] = node
    return found


def stub_source(source: str, messages: dict[str, str], *, filename: str = "<source>",
                hints: str = "derivations") -> str:
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
        if hints != "derivations":
            lines[docstring.lineno - 1:docstring.end_lineno] = [_docstring_lines(node, hints, indent)]
    module_doc = tree.body[0] if ast.get_docstring(tree, clean=False) is not None else None
    if hints != "derivations" and module_doc is not None:
        lines[module_doc.lineno - 1:module_doc.end_lineno] = [_docstring_lines(tree, hints, "")]
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
