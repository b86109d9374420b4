"""The one-shot GPU check script (.ci/gpu): its dry run on a machine without a GPU must start,
skip every GPU section with the reason, and write both reports; a failing or overrunning section
is recorded and does not stop the next."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from minispanbert.backend import get_backend

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_skips_the_gpu_sections_with_the_reason_and_writes_both_reports(tmp_path):
    try:
        get_backend("cupy")
        why = None
    except ValueError as exc:
        why = str(exc)
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    sections = {r["name"]: r for r in report["sections"]}
    assert set(sections) == {"environment", "parity", "parity-tests", "train-numpy", "train-cupy", "bench-small",
                             "bench-base"}
    assert sections["environment"]["status"] != "skipped"  # it runs (ok, unless a loaded machine overruns its budget)
    if sections["environment"]["status"] == "ok":
        assert report["facts"]["environment"]["git_commit"]
    for name, record in sections.items():
        if name != "environment":
            assert record["status"] == "skipped" and record["reason"].startswith("dry run: "), record
            if why is not None:
                assert why in record["reason"]
    assert "--backend cupy" in sections["bench-small"]["command"] and "--compare-torch" in sections["bench-base"]["command"]
    markdown = (tmp_path / "gpu-report.md").read_text()
    assert "| parity | skipped: dry run" in markdown
    assert sum(r["budget_s"] for r in report["sections"]) <= 8 * 60  # the whole check fits 8 minutes


def test_a_failing_or_overrunning_section_is_recorded_and_the_next_still_runs(tmp_path):
    gpu_check = load_script()
    sections = [dict(name="fails", budget=30, gpu=False, command=[sys.executable, "-c", "import sys; sys.exit(3)"]),
                dict(name="overruns", budget=1, gpu=False, command=[sys.executable, "-c", "import time; time.sleep(30)"]),
                dict(name="works", budget=30, gpu=False, command=[sys.executable, "-c", "print('fine')"])]
    records = [gpu_check.run_section(s, tmp_path, None) for s in sections]
    assert [r["status"] for r in records] == ["failed (exit 3)", "timed out after 1 s", "ok"]
    assert (tmp_path / "works.log").read_text().strip() == "fine"


def test_no_folder_is_a_one_line_error():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and done.stderr.strip().startswith("error: ") and "\n" not in done.stderr.strip()
