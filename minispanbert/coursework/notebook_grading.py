"""Points for notebook cells: nbgrader's autograded test cells, graded like nbgrader's ``autograde``.

A notebook listed in an assignment's ``graded_notebooks`` carries its tests in code cells whose
nbgrader metadata reads ``"grade": true, "solution": false, "grade_id": ..., "points": N``. The
build keeps these cells, as the instructor wrote them, in the autograder's ``grade_cells.json``
(:func:`write_grade_cells`). Grading (:func:`grade_notebooks`, after the graded functions' tests)
takes the submitted notebook, puts the instructor's version of every grade cell back in place of the
student's (found by grade_id, as nbgrader does, so editing a test cannot pass it), and runs the whole
notebook top to bottom in a fresh kernel with the submission's package importable. A grade cell
scores its points when it ran without an error, else 0 with the error's last line.

The kernel runs student code, so it is confined like the sandbox's children (checks/sandbox.py):
this module's ``python -m`` entry point, the *notebook runner*, starts in a session of its own under
a hard time limit and is a child subreaper; it starts the kernel (nbclient, ``allow_errors``, the
notebook's time limit across all its cells) with limits on CPU time, address space and file size,
killed when the runner dies, and with Landlock where the kernel has it (reads beneath the Python
installation, the system folders and the submission copy, writes beneath its own scratch folder,
no TCP: the kernel talks over Unix sockets in that folder). When the notebook ends or its time is
up, the runner kills the kernel and every process left under it, and only then writes the outcome.
What student code may still do, as under nbgrader: an earlier cell runs in the same kernel as the
tests and can change what they see (monkeypatch NumPy, say), so keep notebook points a small share.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from minispanbert.coursework import grade as grading
from minispanbert.engine.runs.atomic import write_text_atomic

GRADE_CELLS = "grade_cells.json"  # in the autograder: {notebook path: [{grade_id, points, source}, ...]}
KERNEL_START_S = 30.0  # the kernel's start, on top of the notebook's time limit
RUNNER_SLACK_S = 15.0  # the runner's own start (nbclient's imports) and its clean-up
ERROR_CHARS = 500


def nbgrader_meta(cell: dict) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_grade_cell(cell: dict) -> bool:
    """An autograded test cell: code, ``grade: true`` and ``solution: false`` (nbgrader's "autograder tests")."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and meta.get("grade") is True and not meta.get("solution")


def grade_cells(text: str, where: str) -> list[dict]:
    """The autograded test cells of a notebook's JSON text -> [{grade_id, points, source}]; ValueError
    in one line when there are none or one lacks a grade_id or positive points."""
    try:
        cells = json.loads(text)["cells"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{where} is not a notebook ({type(exc).__name__}: {exc})") from None
    found = []
    for index, cell in enumerate(cells):
        if not is_grade_cell(cell):
            continue
        meta = nbgrader_meta(cell)
        grade_id, points = meta.get("grade_id"), meta.get("points")
        if not isinstance(grade_id, str) or not grade_id:
            raise ValueError(f"{where} cell {index} is a grade cell without a grade_id: add nbgrader's \"grade_id\"")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not points > 0:
            raise ValueError(f"{where} cell {index} ({grade_id}) needs \"points\" > 0 in its nbgrader metadata")
        if any(c["grade_id"] == grade_id for c in found):
            raise ValueError(f"{where}: two grade cells share the grade_id {grade_id!r}; give each its own")
        found.append({"grade_id": grade_id, "points": float(points), "source": "".join(cell.get("source", []))})
    if not found:
        raise ValueError(f"{where} is listed in graded_notebooks but has no autograded test cell (nbgrader metadata "
                         '"grade": true, "solution": false, "points": N): add one or unlist the notebook')
    return found


def released_grade_cells(spec, student: Path) -> dict[str, list[dict]]:
    """{graded notebook: its grade cells}, read from the released notebooks of the student copy
    ``student`` (the grade cells are there as the instructor wrote them)."""
    return {rel: grade_cells((student / rel).read_text(encoding="utf-8"), rel) for rel in spec.graded_notebooks}


def write_grade_cells(spec, student: Path, dest: Path) -> None:
    """Write the autograder ``dest``'s ``grade_cells.json`` (when ``spec`` grades notebooks)."""
    if spec.graded_notebooks:
        text = json.dumps(released_grade_cells(spec, student), indent=1) + "\n"
        (dest / GRADE_CELLS).write_text(text, encoding="utf-8")


def process_limit(spec) -> float:
    """Seconds the grading of one notebook may take, the kernel's start and the runner's included."""
    return spec.notebook_time_limit + KERNEL_START_S + RUNNER_SLACK_S


# --- the grading process's side --------------------------------------------------------------------

def restore_grade_cells(notebook: dict, cells: list[dict]) -> tuple[dict[int, str], dict[str, str]]:
    """Put the instructor's ``cells`` back into ``notebook`` (in place), matched by grade_id ->
    ({cell index: grade_id}, {grade_id: why it cannot be graded}) for missing or duplicated cells."""
    at: dict[str, list[int]] = {}
    for index, cell in enumerate(notebook["cells"]):
        grade_id = nbgrader_meta(cell).get("grade_id") if isinstance(cell, dict) else None
        if isinstance(grade_id, str):
            at.setdefault(grade_id, []).append(index)
    graded, problems = {}, {}
    for cell in cells:
        indices = at.get(cell["grade_id"], [])
        if len(indices) != 1:
            problems[cell["grade_id"]] = (
                f"the notebook has {'no' if not indices else len(indices)} cells with grade_id {cell['grade_id']!r} "
                "(the test cell was deleted, copied or its metadata edited): restore it from your assignment copy")
            continue
        index = indices[0]
        old = notebook["cells"][index]
        cell_id = old.get("id") if isinstance(old.get("id"), str) else f"grade-{index}"
        notebook["cells"][index] = {"cell_type": "code", "execution_count": None, "outputs": [], "id": cell_id,
                                    "metadata": {"nbgrader": {"grade": True, "solution": False,
                                                              "grade_id": cell["grade_id"], "points": cell["points"],
                                                              "locked": True, "schema_version": 3}},
                                    "source": cell["source"]}
        graded[index] = cell["grade_id"]
    return graded, problems


def run_notebook(notebook: dict, rel: str, spec, *, project: Path, autograder: Path, folder: Path) -> dict:
    """Run ``notebook`` (restored) as ``project/rel`` in the notebook runner -> its outcome
    ({"errors": {cell index: error or None}, "stopped": why it stopped early or None}); a runner that
    failed or ran past its limit -> an outcome saying so."""
    folder.mkdir(parents=True)
    scratch = folder / "kernel"  # the only folder the kernel may write to
    scratch.mkdir()
    (folder / "notebook.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    (project / rel).parent.mkdir(parents=True, exist_ok=True)
    kit = Path(__file__).resolve().parents[2]  # this kit's root (the autograder's base/), never the submission's
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(kit), str(autograder / "grader")])}
    out = folder / "outcome.json"
    command = [sys.executable, "-m", __name__, "--notebook", str(folder / "notebook.ipynb"),
               "--cwd", str((project / rel).parent), "--project", str(project), "--scratch", str(scratch),
               "--private", str(autograder), "--time-limit", str(spec.notebook_time_limit), "--out", str(out)]
    limit = process_limit(spec)
    with open(folder / "runner.log", "wb") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            pass
        finally:  # the runner's group, whatever it left (its kernel dies with it)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            process.wait()
    if process.returncode == 0 and out.is_file():
        return json.loads(out.read_text(encoding="utf-8"))
    tail = (folder / "runner.log").read_bytes()[-300:].decode("utf-8", "replace").strip().splitlines()
    why = f"ran past {limit:g} s" if process.returncode == -signal.SIGKILL else f"failed ({tail[-1] if tail else ''})"
    return {"errors": {}, "stopped": f"the notebook runner {why}"}


def cell_message(index: int, rel: str, outcome: dict) -> str | None:
    """None when grade cell ``index`` ran without an error, else why it scores 0."""
    errors = outcome["errors"]
    if str(index) not in errors:
        return f"not run: {outcome['stopped'] or 'the notebook stopped before this cell'}"
    error = errors[str(index)]
    if error is None:
        return None
    message = f"the test cell (cell {index} of {rel}) failed: {error}"
    first = next(((int(i), e) for i, e in sorted(errors.items(), key=lambda item: int(item[0]))
                  if e is not None and int(i) < index), None)
    if first:
        message += f"\nthe first error in the notebook came earlier, in cell {first[0]}: {first[1]}"
    return message


def grade_notebooks(spec, submission: Path, *, autograder: Path, project: Path, work: Path) -> list[dict]:
    """Grade the grade cells of ``spec``'s graded notebooks in ``submission`` -> Gradescope test
    dicts (without their "number"), one per grade cell; [] when the assignment grades no notebook."""
    if not spec.graded_notebooks:
        return []
    all_cells = json.loads((autograder / GRADE_CELLS).read_text(encoding="utf-8"))
    found, _ = grading.read_submission(submission, list(spec.graded_notebooks))
    tests = []
    for number, rel in enumerate(spec.graded_notebooks):
        cells = all_cells[rel]
        messages: dict[str, str | None] = {}
        if rel not in found:
            messages = {c["grade_id"]: f"{rel} is not in the submission: submit it with your code "
                                       "(`python -m minispanbert.coursework submit` includes it)" for c in cells}
        else:
            try:
                notebook = json.loads(found[rel])
                if not isinstance(notebook.get("cells"), list):
                    raise ValueError("no list of cells")
            except (UnicodeDecodeError, ValueError, AttributeError) as exc:
                notebook, why = None, f"{rel} is not a readable notebook ({exc}): resubmit it as Jupyter saved it"
                messages = {c["grade_id"]: why for c in cells}
            if notebook is not None:
                graded, messages = restore_grade_cells(notebook, cells)
                if graded:
                    outcome = run_notebook(notebook, rel, spec, project=project, autograder=autograder,
                                           folder=work / "notebooks" / str(number))
                    messages.update({grade_id: cell_message(index, rel, outcome) for index, grade_id in graded.items()})
        for cell in cells:
            message = messages[cell["grade_id"]]
            tests.append({"name": f"{Path(rel).name}: {cell['grade_id']}", "score": 0.0 if message else cell["points"],
                          "max_score": cell["points"], "status": "failed" if message else "passed",
                          "output": message or "passed: the test cell ran without an error", "output_format": "text",
                          "visibility": "visible", "tags": ["notebook"]})
    return tests


# --- the notebook runner (a process of its own; it runs the student's notebook in a kernel) -------

def _error_line(cell) -> str | None:
    """The last line of the first error a cell's outputs hold (``AssertionError: ...``), or None."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"[:ERROR_CHARS]
    return None


def stop_reason(exc: Exception, time_limit: float) -> str:
    """Why a notebook stopped before its end, for the student."""
    if isinstance(exc, ImportError):
        return f"the autograder cannot run notebooks ({exc}): its environment needs nbclient and ipykernel"
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    if isinstance(exc, CellTimeoutError):
        return f"the notebook ran past its time limit of {time_limit:g} s (an endless loop, or a cell awaiting input?)"
    if isinstance(exc, DeadKernelError):
        return "the kernel died (did a cell call os._exit(), crash the interpreter or exhaust the memory?)"
    return f"the notebook could not run: {type(exc).__name__}: {str(exc)[:ERROR_CHARS]}"


async def execute(args) -> dict:
    """Run the notebook in a confined kernel (module docstring) -> {"errors", "stopped"}."""
    from coursework_checks import sandbox  # the autograder's, as the graded tests use
    from jupyter_client.manager import AsyncKernelManager

    scratch = os.path.abspath(args.scratch)
    request = {"time_limit": KERNEL_START_S + args.time_limit, "root": os.path.abspath(args.project),
               "private": [os.path.abspath(p) for p in args.private] + [os.path.dirname(scratch)],
               "scratch": scratch, "user": None}

    def confine_kernel():  # in the kernel's process, between fork and exec
        sandbox._prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)
        sandbox.confine(request)

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": scratch, "TMPDIR": scratch,
           "IPYTHONDIR": os.path.join(scratch, ".ipython"), "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.path.abspath(args.project), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    manager = AsyncKernelManager(kernel_name="python3", transport="ipc",
                                 connection_file=os.path.join(scratch, "kernel.json"))
    deadline: list[float] = []  # set when the first cell starts: the limit is the cells' time, not the kernel's start

    def seconds_left(cell) -> float:
        if not deadline:
            deadline.append(time.monotonic() + args.time_limit)
        return max(0.1, deadline[0] - time.monotonic())

    replies: dict[int, str] = {}
    notebook, stopped = None, None
    try:
        await manager.start_kernel(cwd=os.path.abspath(args.cwd), env=env, preexec_fn=confine_kernel)
        import nbformat  # while the kernel starts: nbformat's schema validation takes seconds to import
        from nbclient import NotebookClient

        notebook = nbformat.reads(Path(args.notebook).read_text(encoding="utf-8"), as_version=4)
        client = NotebookClient(notebook, km=manager, allow_errors=True, startup_timeout=int(KERNEL_START_S),
                                timeout_func=seconds_left,
                                on_cell_executed=lambda cell, cell_index, execute_reply: replies.__setitem__(
                                    cell_index, execute_reply["content"].get("status")))
        await client.async_execute()
    except Exception as exc:  # noqa: BLE001 -- whatever stops the run becomes the reason
        stopped = stop_reason(exc, args.time_limit)
    finally:
        try:
            await manager.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001 -- the kill below ends it all the same
            pass
        sandbox.kill_descendants()
    errors = {}
    for index, status in replies.items():
        errors[str(index)] = _error_line(notebook.cells[index]) or (None if status == "ok" else
                                                                    f"the kernel replied {status!r}")
    return {"errors": errors, "stopped": stopped}


def main(argv=None) -> int:
    """The notebook runner: run one notebook, write its outcome once every process under it is gone."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    for name in ("--notebook", "--cwd", "--project", "--scratch", "--out"):
        parser.add_argument(name, required=True)
    parser.add_argument("--private", action="append", default=[])
    parser.add_argument("--time-limit", type=float, required=True)
    args = parser.parse_args(argv)
    from coursework_checks import sandbox

    sandbox.become_subreaper()
    outcome = asyncio.run(execute(args))
    write_text_atomic(Path(args.out), json.dumps(outcome) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
