"""The teaching notebooks run from top to bottom, the way a reader runs them, and show what they claim.

Each notebook in notebooks/ is executed with nbclient in a fresh ``python3`` kernel whose working
directory is notebooks/ (as under ``jupyter lab notebooks/``) and without PYTHONPATH, so the
notebook's own first cell must make ``minispanbert`` importable. ``MINISPANBERT_FAST=1`` shrinks the
training loops. A notebook passes when no cell raises (every exercise, and most numerical checks, end in
an ``assert``), at least one figure is rendered, it printed at least one relative error, and EVERY
printed relative error meets the expectation printed beside it (``check_relative_errors``). The
committed files must carry no outputs (the policy in notebooks/README.md). A notebook whose metadata
lists ``minispanbert.requires`` modules (13 needs the released weights) skips without them.

The expectation a notebook prints with each relative error is its threshold, read as an order of
magnitude (the same reading a student gives "~1e-9"):

    relative error ... 3.2e-10 ... (you should see ~1e-9 or smaller)    passes when value < 10 * 1e-9
    relative error ... 4.0e-17 ... (you should see ~1e-16 or exactly 0)  the same
    relative error ... 2.1e-01 ... (a wrong backward: ~1e-1 or worse)   passes when value > 1e-1 / 10
    relative error ... 2.9e-03 ... (you should see ~3e-03, the sampling noise)   value < 10 * 3e-3
    relative error ... 1.2e-16 ... (you should see ~1e-16)                value < 10 * 1e-16
    relative error over 52 tensors, worst 5 (you should see ~1e-7 or smaller):
    2.3e-09  name                                                       each following "<number>  name" line

A relative error line without such an expectation, a "nan" or "inf", or a number on the wrong side
of its threshold fails the test with the line quoted. (Assertions inside the notebooks use their own,
looser bounds; the printed numbers are what a reader compares with the text.)

This is the slowest test file (a kernel per notebook; about a minute for the set on two cores).
"""
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted((p for p in NOTEBOOK_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts),
                   key=lambda p: p.name)
EXPECTED = ("01_attention", "02_layernorm_gelu_ffn", "03_span_masking", "04_span_boundary_objective",
            "05_pretraining", "06_qa_finetuning", "08_real_weights", "12_data_parallel")
CELL_TIMEOUT_S = 180
NUMBER = r"(?:[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:e[-+]?\d+)?|[-+]?nan|[-+]?inf)"
# the score: a number with a decimal point or an exponent, or nan/inf (the expectation "~1e-9" follows
# a "~" and is excluded by the lookbehind)
SCORE = re.compile(r"(?<![~\w.])(\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+|[-+]?nan|[-+]?inf)(?![\w.])", re.IGNORECASE)
EXPECTATION = re.compile(r"~\s*(" + NUMBER + r")\s*(or smaller|or exactly 0|or worse|,|\))", re.IGNORECASE)
TABLE_ROW = re.compile(r"^\s*(" + NUMBER + r")\s{2,}\S", re.IGNORECASE)
ORDER_OF_MAGNITUDE = 10.0


def _meets(value: float, threshold: float, kind: str) -> bool:
    """``not`` of the failing comparison would let a NaN through; these comparisons are False for NaN."""
    if kind.lower() == "or worse":
        return value > threshold / ORDER_OF_MAGNITUDE
    return value < threshold * ORDER_OF_MAGNITUDE


def check_relative_errors(printed: str) -> tuple[int, list[str]]:
    """(how many relative errors were checked, a message per line that fails its stated threshold).

    Each line mentioning "relative error" must state an expectation ``~T or smaller``, ``~T or
    exactly 0``, ``~T or worse``, ``~T, ...`` or ``~T)``; its score is the number before the expectation (or,
    for a header ending in ':', every ``<number>  <name>`` line that follows)."""
    checked, problems = 0, []
    lines = printed.splitlines()
    for index, line in enumerate(lines):
        if "relative error" not in line.lower():
            continue
        expectation = EXPECTATION.search(line)
        if expectation is None:
            problems.append(f"no expectation ('you should see ~1e-9 or smaller') printed with: {line.strip()!r}")
            continue
        threshold, kind = float(expectation.group(1)), expectation.group(2)
        scores = [float(m.group(1)) for m in SCORE.finditer(line[:expectation.start()].split("relative error", 1)[-1])]
        if not scores and line.rstrip().endswith(":"):
            for row in lines[index + 1:]:
                match = TABLE_ROW.match(row)
                if match is None:
                    break
                scores.append(float(match.group(1)))
        if not scores:
            problems.append(f"no number printed with: {line.strip()!r}")
        for value in scores:
            checked += 1
            if not _meets(value, threshold, kind):
                problems.append(f"{value:.1e} does not meet '~{expectation.group(1)} {kind}': {line.strip()!r}")
    return checked, problems


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_every_notebook_is_present():
    assert set(EXPECTED) <= {path.stem for path in NOTEBOOKS}, f"missing notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(code_cells(notebook)):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{path.name} code cell {index} has outputs: strip them with "
            "jupyter nbconvert --clear-output --inplace notebooks/*/*.ipynb"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_its_checks(path, monkeypatch):
    monkeypatch.setenv("MINISPANBERT_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    notebook = nbformat.read(path, as_version=4)
    for module in notebook.metadata.get("minispanbert", {}).get("requires", []):  # e.g. the real weights of 13
        pytest.importorskip(module, reason=f"{path.name} needs {module}")
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails
    print(f"{path.name} executed in {time.perf_counter() - started:.1f} s")

    outputs = [output for cell in code_cells(notebook) for output in cell.outputs]
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
    assert images, f"{path.name} rendered no figure"
    printed = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    checked, problems = check_relative_errors(printed)
    assert checked, f"{path.name} printed no 'relative error ... <number> (you should see ~T or smaller)' line"
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("printed, checked, failures", [
    ("relative error 3.2e-10   (you should see ~1e-9 or smaller)", 1, 0),
    ("relative error 3.2e-08   (you should see ~1e-9 or smaller)", 1, 1),
    ("  wq  relative error nan   (you should see ~1e-9 or smaller)", 1, 1),
    ("relative error, a vs b: 0.0e+00   (you should see ~1e-16 or exactly 0)", 1, 0),
    ("relative error, bug vs package:   2.1e-01   (a wrong backward: ~1e-1 or worse)", 1, 0),
    ("relative error, bug vs package:   1.0e-06   (a wrong backward: ~1e-1 or worse)", 1, 1),
    ("relative error, Monte-Carlo mean (50000 draws) vs pmf: 2.0e-03   (you should see ~3e-03, the sampling noise)", 1, 0),
    ("relative error over 5 tensors, worst 5 (you should see ~1e-7 or smaller):\n2.0e-09  a.weight\nnan  b.bias\ndone",
     2, 1),
    ("relative error, derived dW vs package: 6.9e-17   (you should see ~1e-16)", 1, 0),
    ("relative error, derived dW vs package: 6.9e-12   (you should see ~1e-16)", 1, 1),
    ("relative error 3.2e-10", 0, 1),
], ids=["ok", "too-large", "nan", "exact-zero", "bug-large", "bug-too-small", "sampling-noise", "table", "bare-ok",
        "bare-too-large", "no-threshold"])
def test_check_relative_errors_parses_numbers_and_thresholds(printed, checked, failures):
    got_checked, problems = check_relative_errors(printed)
    assert (got_checked, len(problems)) == (checked, failures), problems
