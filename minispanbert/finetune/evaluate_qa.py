"""Score SQuAD v1.1 predictions with the official metric (a drop-in for evaluate-v1.1.py).

    python -m minispanbert.evaluate_qa DATA.json PREDICTIONS.json
    {"exact_match": 81.2, "f1": 88.6}

DATA.json is an official SQuAD v1.1 file, PREDICTIONS.json is ``{question id: answer text}`` (as
written by `minispanbert.squad.write_predictions`). Questions without a prediction score 0 and are
counted in a warning on stderr. As in the official script only the answer texts are read, so a file
whose ``answer_start`` offsets are wrong scores the same. To rescore a ``finetune_qa
--split-dev-by-article`` run, pass the ``gold.json`` it wrote beside its predictions (the held-out
questions). Bad input ends with a one-line ``error: ...``.
"""
from __future__ import annotations

import json

from minispanbert.engine.cli import Parser
from minispanbert.finetune.squad import evaluate, read_predictions, read_squad


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Parse arguments, print the scores as one JSON line and return them."""
    parser = Parser("python -m minispanbert.evaluate_qa", "Official SQuAD v1.1 exact match and F1 of a predictions file.")
    parser.add_argument("data", help="SQuAD v1.1 JSON file (e.g. dev-v1.1.json)")
    parser.add_argument("predictions", help="JSON object {question id: answer text}")
    args = parser.parse_args(argv)
    try:
        scores = evaluate(read_squad(args.data), read_predictions(args.predictions))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(scores))
    return scores


if __name__ == "__main__":
    main()
