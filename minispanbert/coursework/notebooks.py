"""nbgrader-compatible notebook release: remove what lies between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` (the markers on lines of their own, as nbgrader's ClearSolutions), leaving
nbgrader's stub ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` at the marker's indentation,
and clear every output. In the prose, a sentence that names a stubbed function and states code of
it (``This is the last line of `layernorm_backward`: `dx = ...`.``) goes too: it is the answer.
The exercise cells carry nbgrader's cell metadata (``solution: true``), so
``nbgrader generate_assignment`` accepts the same notebooks.
"""
from __future__ import annotations

import json
import re

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


SENTENCE = re.compile(r"[^.!?\n]*(?:`[^`\n]*`[^.!?\n`]*)+[.!?]?[ \t]*")
INLINE_ASSIGNMENT = re.compile(r"`[^`\n]*[^=!<>]=[^=][^`\n]*`")


def strip_stated_code(source: str, stubbed) -> tuple[str, int]:
    """Markdown ``source`` without the sentences that name one of ``stubbed`` in inline code and
    hold an inline-code assignment -> (new source, sentences removed)."""
    names = tuple(f"`{name}`" for name in stubbed)
    removed = 0

    def drop(match):
        nonlocal removed
        sentence = match.group(0)
        if any(name in sentence for name in names) and INLINE_ASSIGNMENT.search(sentence):
            removed += 1
            return ""
        return sentence
    return SENTENCE.sub(drop, source), removed


def release_notebook(text: str, *, where: str, stubbed=()) -> tuple[str, int]:
    """A notebook's JSON text -> (student version's JSON text, solution regions and stated-code
    sentences removed); ``stubbed`` names the functions the student copy stubs."""
    notebook = json.loads(text)
    total = 0
    for index, cell in enumerate(notebook.get("cells", [])):
        source = "".join(cell.get("source", []))
        if cell["cell_type"] == "markdown" and stubbed:
            source, sentences = strip_stated_code(source, stubbed)
            if sentences:
                total += sentences
                cell["source"] = source.splitlines(keepends=True)
        stripped, regions = strip_solution_region(source, code=cell["cell_type"] == "code",
                                                  where=f"{where} cell {index}")
        total += regions
        if regions:
            cell["source"] = stripped.splitlines(keepends=True)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", total
