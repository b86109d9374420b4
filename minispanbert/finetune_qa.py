"""``python -m minispanbert.finetune_qa ...`` is ``python -m minispanbert.finetune squad ...``: kept
as an alias for the SQuAD v1.1 commands written before the loop was shared by every task."""
from __future__ import annotations

from minispanbert.finetune.loop import main as finetune_main


def main(argv=None) -> dict:
    return finetune_main(argv, task="squad")


if __name__ == "__main__":
    main()
