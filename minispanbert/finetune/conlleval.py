"""Entity-level NER scores exactly as ``conlleval`` (the CoNLL-2000 shared-task script, used by
CoNLL-2003 and WNUT-17) computes them, plus WNUT-17's surface-form scores. All in percent.

Entities (chunks) from BIO tags, conlleval's rules, reading the tags left to right with an ``O``
before the first and after the last word of each sentence (a sentence boundary ends every chunk):
    a chunk ENDS before word i when  tag[i-1] is B or I  and  tag[i] is B or O,
                                 or  tag[i-1] is not O  and  type[i-1] != type[i]
    a chunk STARTS at word i when    tag[i] is B,
                                 or  tag[i-1] is O  and  tag[i] is I      (I- without B- starts one)
                                 or  tag[i] is not O  and  type[i-1] != type[i]   (B-x I-y: y starts)
An entity is (sentence, first word, last word + 1, type). A predicted entity is correct when the
same tuple is gold: exact span AND type, no partial credit.
    precision = correct / predicted,  recall = correct / gold,  F1 = 2 P R / (P + R)  (0 when undefined)
micro-averaged over all entities, and per type (every type that occurs in gold or prediction).

Surface forms (WNUT-17, ``wnuteval.py`` in the organisers' repository ``leondz/emerging_entities_17``):
the same entities, but each counted once per distinct (words, type):
    gold_sf = {(words, type) of gold entities},  predicted_sf = {... of predicted entities},
    correct_sf = {(words, type) of CORRECT entities}   (found at least once at a gold position)
    precision = |correct_sf| / |predicted_sf|,  recall = |correct_sf| / |gold_sf|
so finding a rare entity is worth as much as finding a frequent one, which is the point of WNUT-17.
"""
from __future__ import annotations

from collections.abc import Sequence


def split_tag(tag: str) -> tuple[str, str]:
    """"B-person" -> ("B", "person"); "O" -> ("O", "")."""
    bio, _, entity_type = tag.partition("-")
    return bio, entity_type


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """One sentence's BIO tags -> its entities (type, start, end), end exclusive, by conlleval's rules."""
    found, start = [], None
    prev_bio, prev_type = "O", ""
    for i, tag in enumerate([*tags, "O"]):
        bio, entity_type = split_tag(tag)
        ends = (prev_bio in ("B", "I") and bio in ("B", "O")) or (prev_bio != "O" and prev_type != entity_type)
        # conlleval's "O then I starts a chunk" rule is contained in the type-change rule ("" != type)
        starts = bio == "B" or (bio != "O" and prev_type != entity_type)
        if ends and start is not None:
            found.append((prev_type, start, i))
            start = None
        if starts:
            start = i
        prev_bio, prev_type = bio, entity_type
    return found


def _prf(correct: int, predicted: int, gold: int) -> dict:
    precision = 100.0 * correct / predicted if predicted else 0.0
    recall = 100.0 * correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold": gold, "predicted": predicted,
            "correct": correct}


def ner_scores(words: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]],
               predicted_tags: Sequence[Sequence[str]]) -> dict:
    """Per-sentence words and gold / predicted tags -> {precision, recall, f1, gold, predicted,
    correct (micro, all types), per_type: {type: the same}, surface_form: the same}."""
    if not len(words) == len(gold_tags) == len(predicted_tags):
        raise ValueError(f"{len(words)} sentences of words but {len(gold_tags)} gold and {len(predicted_tags)} "
                         "predicted tag sequences: give one per sentence")
    gold, predicted = set(), set()
    for n, (sentence, g, p) in enumerate(zip(words, gold_tags, predicted_tags)):
        if not len(sentence) == len(g) == len(p):
            raise ValueError(f"sentence {n} has {len(sentence)} words, {len(g)} gold and {len(p)} predicted tags: "
                             "give one tag per word")
        gold.update((n, *e) for e in entities(g))
        predicted.update((n, *e) for e in entities(p))
    correct = gold & predicted
    scores = _prf(len(correct), len(predicted), len(gold))
    types = sorted({e[1] for e in gold | predicted})
    scores["per_type"] = {t: _prf(*(sum(e[1] == t for e in group) for group in (correct, predicted, gold)))
                          for t in types}

    def surface(group):
        return {(tuple(words[n][start:end]), entity_type) for n, entity_type, start, end in group}

    scores["surface_form"] = _prf(len(surface(correct)), len(surface(predicted)), len(surface(gold)))
    return scores
