"""What a run leaves behind besides its checkpoint: ``metrics.jsonl`` (one JSON record per line,
each with a ``split`` and a ``step``) and PNG plots, shared by pretraining and fine-tuning."""
from __future__ import annotations

import json
from pathlib import Path

from minispanbert.engine.runs.atomic import atomic_path, write_text_atomic


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path: Path, *, repair_tail: bool = False) -> list[dict]:
    """The records of a metrics.jsonl. With ``repair_tail`` a last line that is not valid JSON (torn by
    a crash or a full disk while it was appended) is dropped; any other bad line is a ValueError."""
    path = Path(path)
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text: move it away or start a fresh run") from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if repair_tail and number == len(lines):
                break
            raise ValueError(f"{path} line {number} is not a JSON record: fix or remove that line") from None
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the records up to ``last_step``: a fresh run starts an empty log, and a resumed run
    drops what the interrupted run logged after its last checkpoint (it will log those steps again),
    and a torn last line (a crash or a full disk mid-append)."""
    if Path(path).exists():
        kept = [r for r in read_metrics(path, repair_tail=True) if r.get("step", 0) <= last_step]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def new_figure(ncols: int, figsize):
    """A matplotlib figure on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=figsize)


def save_figure(fig, path: Path) -> None:
    """Save as PNG atomically (a reader never sees a half-written plot) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
