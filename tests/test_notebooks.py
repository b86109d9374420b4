"""The teaching notebooks run from top to bottom, the way a reader runs them, and show what they claim.

Each notebook in notebooks/ is executed with nbclient in a fresh ``python3`` kernel whose working
directory is notebooks/ (as under ``jupyter lab notebooks/``) and without PYTHONPATH, so the
notebook's own first cell must make ``minispanbert`` importable. ``MINISPANBERT_FAST=1`` shrinks the
training loops. A notebook passes when no cell raises (every exercise, and most numerical checks, end in
an ``assert``), at least one figure is rendered, and a gradient or numerical check printed a
relative error. The committed files must carry no outputs (the policy in notebooks/README.md).

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
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ("01_attention", "02_layernorm_gelu_ffn", "03_span_masking", "04_span_boundary_objective",
            "05_pretraining", "06_qa_finetuning")
CELL_TIMEOUT_S = 180
# "relative error ... 3.2e-10" on one line: a check printed its score (the expected "~1e-9" has no
# decimals, so it alone does not match).
RELATIVE_ERROR_LINE = re.compile(r"relative error[^\n]*\d\.\d+e[-+]\d+")


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
            "jupyter nbconvert --clear-output --inplace notebooks/*.ipynb"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_its_checks(path, monkeypatch):
    monkeypatch.setenv("MINISPANBERT_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails
    print(f"{path.name} executed in {time.perf_counter() - started:.1f} s")

    outputs = [output for cell in code_cells(notebook) for output in cell.outputs]
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
    assert images, f"{path.name} rendered no figure"
    printed = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert RELATIVE_ERROR_LINE.search(printed), f"{path.name} printed no 'relative error ... <number>' line"
