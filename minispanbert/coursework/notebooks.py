"""nbgrader-compatible notebook release: remove what lies between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` (the markers on lines of their own, as nbgrader's ClearSolutions), leaving
nbgrader's stub ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` at the marker's indentation,
and clear every output. The exercise cells carry nbgrader's cell metadata (``solution: true``), so
``nbgrader generate_assignment`` accepts the same notebooks.
"""
from __future__ import annotations

import json

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"


def strip_solution_region(source: str, *, code: bool, where: str) -> tuple[str, int]:
    """``source`` with every solution region replaced by the stub -> (new source, regions removed)."""
    out, inside, regions = [], False, 0
    for line in source.splitlines(keepends=True):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}: {BEGIN} inside a solution region")
            inside, regions = True, regions + 1
            indent = line[:len(line) - len(line.lstrip())]
            stub = CODE_STUB if code else (MARKDOWN_STUB,)
            out.extend(f"{indent}{text}\n" for text in stub)
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} is never closed by {END}")
    return "".join(out), regions


def release_notebook(text: str, *, where: str) -> tuple[str, int]:
    """A notebook's JSON text -> (student version's JSON text, solution regions removed)."""
    notebook = json.loads(text)
    total = 0
    for index, cell in enumerate(notebook.get("cells", [])):
        source = "".join(cell.get("source", []))
        stripped, regions = strip_solution_region(source, code=cell["cell_type"] == "code",
                                                  where=f"{where} cell {index}")
        total += regions
        if regions:
            cell["source"] = stripped.splitlines(keepends=True)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", total
