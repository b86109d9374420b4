"""SQuAD v1.1 extractive question answering, the data side (spec §6; authors' code `code/run_squad.py`).

Everything here is host-side NumPy and model-agnostic: the model only has to turn the arrays of
`features_to_arrays` into start/end logits of shape (N, T), which `decode_predictions` maps back to
answer strings cut from the ORIGINAL context, scored by the official SQuAD v1.1 metric.

    read_squad(path)                      -> list[SquadExample]     (v1.1 JSON; v2.0 rejected)
    parse_squad(dataset, source)          -> list[SquadExample]     (same, from a loaded dict)
    split_by_article(examples, fraction, seed) -> (train, heldout)  (whole articles, never questions)
    make_features(examples, tokenizer, *, max_seq_len, doc_stride, max_query_len, training)
                                          -> list[QAFeature]        (sliding windows, labels, max context)
    features_to_arrays(features)          -> dict of (N, T) / (N,) int32 arrays
    decode_predictions(examples, features, start_logits, end_logits, *, n_best, max_answer_len)
                                          -> {qid: answer text}
    write_predictions(preds, path) / read_predictions(path)     (official format {qid: text})
    normalize_answer, exact_match_score, f1_score, evaluate     (official evaluate-v1.1.py semantics)

Input layout (BERT/SpanBERT): ``[CLS] question [SEP] passage-window [SEP] [PAD]...``, token types 0 for
[CLS] + question + first [SEP], 1 for the passage window + last [SEP], attention mask 1 on real tokens.

Where we differ from the authors' `run_squad.py` (all in the direction of exactness, none changes
the recipe):
- Character -> token alignment comes from the tokenizer's character offsets, not from whitespace
  words plus `_improve_answer_span`; an answer's tokens are the passage tokens overlapping its
  characters.
- Answer text is `context[char_start(start token) : char_end(end token)]` of the original context,
  instead of `get_final_text`'s heuristic re-alignment of de-tokenised text to whitespace words.
- Decoding takes the top-n starts / ends among the VALID positions (passage tokens; starts also with
  maximal context), where the code takes the top-n over all T positions and filters afterwards
  (which can leave no candidate when the question tokens hold the largest logits).
"""
from __future__ import annotations

import json
import os
import re
import string
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np

from minispanbert.data.tokenizer import without_padding_or_truncation
from minispanbert.engine.runs.atomic import write_text_atomic

# The [CLS] + [SEP] + [SEP] that every window adds around question and passage.
SPECIALS_PER_WINDOW = 3
# Tie-breaker weight on window length in the maximal-context score (BERT `_check_is_max_context`).
MAX_CONTEXT_LENGTH_WEIGHT = 0.01


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SquadExample:
    """One question about one paragraph.

    ``answers`` holds every gold answer as (text, char_start), char_start as the file gives it (-1
    when absent). The official metric reads only the texts, so the reader accepts an offset that
    does not point at its text; training needs ``context[char_start:char_start + len(text)] == text``
    and keeps only such answers (:func:`answers_with_valid_offsets`). SQuAD v1.1 train has one
    answer per question, dev usually three; training labels use the first.
    """

    qid: str
    title: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]


def read_squad(path) -> list[SquadExample]:
    """Read an official SQuAD v1.1 JSON file into one `SquadExample` per question, in file order.

    Raises a one-line ValueError naming the file (and, for content errors, the article title and
    question id) for: an unreadable file, malformed JSON (with line and column), a missing or
    mistyped field, a repeated question id, and SQuAD v2.0 unanswerable questions
    (`is_impossible: true`), which are not supported. Like the official evaluate-v1.1.py it does not
    require ``answer_start`` to point at the answer text (see :func:`answers_with_valid_offsets`).
    """
    path = os.fspath(path)
    return parse_squad(_read_json(path, "SQuAD file", "; expected the official SQuAD v1.1 format"), source=path)


def _read_json(path: str, what: str, hint: str = ""):
    """Load a JSON file, turning unreadable files and malformed JSON into one-line ValueErrors."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read {what} ({e}); check the path") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg}){hint}") from None


def parse_squad(dataset, source: str = "<dataset>") -> list[SquadExample]:
    """Turn a loaded SQuAD v1.1 dict ``{"version", "data": [...]}`` into SquadExamples.

    ``source`` names the data in error messages (the file path when called by `read_squad`). The
    ``version`` field is not required; the per-question checks are those listed in `read_squad`.
    """
    data = _field(dataset, "data", list, source)
    examples: list[SquadExample] = []
    first_seen: dict[str, str] = {}
    for a, article in enumerate(data):
        title = _field(article, "title", str, f"{source}: article {a}")
        where_article = f"{source}: article {a} ({title!r})"
        for p, paragraph in enumerate(_field(article, "paragraphs", list, where_article)):
            where_paragraph = f"{where_article}, paragraph {p}"
            context = _field(paragraph, "context", str, where_paragraph)
            for q, qa in enumerate(_field(paragraph, "qas", list, where_paragraph)):
                qid = _field(qa, "id", str, f"{where_paragraph}, question {q}")
                where = f"{where_paragraph}, question {qid!r}"
                if qa.get("is_impossible", False):
                    raise ValueError(
                        f"{where}: is_impossible=true marks a SQuAD v2.0 unanswerable question; "
                        "SQuAD v2.0 is not supported, use a SQuAD v1.1 file"
                    )
                if qid in first_seen:
                    raise ValueError(
                        f"{where}: question id repeated (first seen in {first_seen[qid]}); ids must be unique"
                    )
                first_seen[qid] = where_paragraph
                question = _field(qa, "question", str, where)
                answers = []
                raw_answers = _field(qa, "answers", list, where)
                if not raw_answers:
                    raise ValueError(f"{where}: no answers; every SQuAD v1.1 question needs at least one")
                for k, answer in enumerate(raw_answers):
                    where_answer = f"{where}, answer {k}"
                    answer_text = _field(answer, "text", str, where_answer)
                    char_start = _field(answer, "answer_start", int, where_answer) if "answer_start" in answer else -1
                    answers.append((answer_text, char_start))
                examples.append(SquadExample(qid, title, question, context, tuple(answers)))
    return examples


def _field(record, key: str, kind: type, where: str):
    """record[key], checked to exist and be of type ``kind`` (bool is not accepted as int)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise ValueError(f"{where}: missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}: field {key!r} should be {kind.__name__}, got {type(value).__name__}")
    return value


def offset_is_valid(context: str, text: str, char_start: int) -> bool:
    return 0 <= char_start and context[char_start:char_start + len(text)] == text


def answers_with_valid_offsets(examples) -> tuple[list[SquadExample], int]:
    """Training needs each answer's character offset: keep the answers whose ``answer_start``
    points at their text, drop questions left with none -> (examples, number of answers dropped)."""
    kept, dropped = [], 0
    for ex in examples:
        good = tuple(a for a in ex.answers if offset_is_valid(ex.context, *a))
        dropped += len(ex.answers) - len(good)
        if good:
            kept.append(SquadExample(ex.qid, ex.title, ex.question, ex.context, good))
    return kept, dropped


def examples_to_squad(examples) -> dict:
    """The SQuAD v1.1 JSON of ``examples`` (articles and paragraphs in first-seen order), e.g. the
    held-out articles of a dev split, so that ``evaluate_qa`` can score predictions on exactly them."""
    articles: dict[str, dict[str, list]] = {}
    for ex in examples:
        paragraphs = articles.setdefault(ex.title, {})
        paragraphs.setdefault(ex.context, []).append(
            {"id": ex.qid, "question": ex.question,
             "answers": [{"text": text, "answer_start": start} for text, start in ex.answers]})
    return {"version": "1.1", "data": [
        {"title": title, "paragraphs": [{"context": context, "qas": qas} for context, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()]}


def split_by_article(examples, fraction: float, seed: int) -> tuple[list[SquadExample], list[SquadExample]]:
    """Split examples into (train, heldout) by whole articles, holding out ``fraction`` of the titles.

    Questions about one article share its paragraphs, so splitting by question would leak passages
    into the held-out set. The distinct titles are sorted (so the split does not depend on example
    order), permuted by ``numpy.random.default_rng(seed)``, and the first
    ``round(fraction * n_articles)`` (at least 1, at most n_articles - 1) are held out. Each side
    keeps the input order of its examples.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    titles = sorted({ex.title for ex in examples})
    if len(titles) < 2:
        raise ValueError(
            f"split_by_article needs at least 2 articles, got {len(titles)}; hold out data another way"
        )
    n_heldout = min(len(titles) - 1, max(1, round(fraction * len(titles))))
    order = np.random.default_rng(seed).permutation(len(titles))
    heldout_titles = {titles[i] for i in order[:n_heldout]}
    train = [ex for ex in examples if ex.title not in heldout_titles]
    heldout = [ex for ex in examples if ex.title in heldout_titles]
    return train, heldout


# ------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class QAFeature:
    """One input window of one example (T = max_seq_len, P = passage tokens in this window).

    Sequence position ``passage_start + j`` holds passage token j of this window (j < P);
    ``passage_start = 2 + len(question tokens)``. ``token_offsets[j]`` is that token's character
    span [start, end) in the original context, and ``token_is_max_context[j]`` says whether this
    window gives it the most context of all windows containing it. ``start_position`` /
    ``end_position`` are sequence positions of the first gold answer (0, i.e. [CLS], when the answer
    is not fully inside the window), or None for features built with ``training=False``.
    The offset and max-context arrays are read-only views shared between windows.
    """

    example_index: int
    window_index: int
    doc_start: int  # index of the window's first token in the whole passage's tokenization
    input_ids: np.ndarray  # (T,) int32
    token_type_ids: np.ndarray  # (T,) int32
    attention_mask: np.ndarray  # (T,) int32
    passage_start: int
    token_offsets: np.ndarray  # (P, 2) int32
    token_is_max_context: np.ndarray  # (P,) bool
    start_position: int | None
    end_position: int | None


def make_features(
    examples,
    tokenizer,
    *,
    max_seq_len: int = 384,
    doc_stride: int = 128,
    max_query_len: int = 64,
    training: bool,
) -> list[QAFeature]:
    """Tokenize examples into fixed-length QA windows (spec §6; `convert_examples_to_features`).

    The question is encoded without special tokens and cut to ``max_query_len`` tokens. The passage
    (encoded once per distinct context) is covered by windows of
    ``max_seq_len - len(question) - 3`` tokens starting every ``doc_stride`` tokens, the last window
    ending at the passage end (a passage with no tokens gets no window, so decoding predicts "").
    With ``training=True`` each window is labelled with the first gold
    answer's token span, or (0, 0) = [CLS] when the answer is not fully inside it (also when no
    passage token overlaps the answer's characters). ``tokenizer`` is a BERT WordPiece
    `tokenizers.Tokenizer`: minispanbert's own (`minispanbert.data.tokenizer`, [CLS]=2, [SEP]=3,
    [PAD]=0) or a Hugging Face checkpoint's (`minispanbert.interop.tokenizer`, [CLS]=101 ...); the
    special ids are read from it, and its truncation and padding settings are ignored.

    Maximal context (BERT `_check_is_max_context`): a token in several windows belongs to the window
    maximising min(tokens left of it, tokens right of it) + 0.01 * window length; the first such
    window wins ties. Decoding only starts answers at tokens with maximal context.
    """
    if max_query_len < 1 or doc_stride < 1:
        raise ValueError(f"max_query_len and doc_stride must be >= 1, got {max_query_len} and {doc_stride}")
    min_window = max_seq_len - max_query_len - SPECIALS_PER_WINDOW
    if min_window < 1:
        raise ValueError(
            f"max_seq_len={max_seq_len} leaves no room for a passage token after a {max_query_len}-token "
            f"question and {SPECIALS_PER_WINDOW} special tokens; raise max_seq_len to at least "
            f"{max_query_len + SPECIALS_PER_WINDOW + 1} or lower max_query_len"
        )
    if doc_stride > min_window:
        raise ValueError(
            f"doc_stride={doc_stride} is larger than the smallest passage window ({min_window} tokens = "
            f"max_seq_len - max_query_len - {SPECIALS_PER_WINDOW}): windows could not step by it; lower doc_stride"
        )
    tokenizer = without_padding_or_truncation(tokenizer)  # windows cut and pad
    cls_id, sep_id, pad_id = _window_special_ids(tokenizer)

    # Many questions share a paragraph: tokenize each distinct context once.
    contexts = list(dict.fromkeys(ex.context for ex in examples))
    context_index = {context: i for i, context in enumerate(contexts)}
    context_ids, context_offsets = [], []
    for encoding in tokenizer.encode_batch(contexts, add_special_tokens=False):
        ids = np.asarray(encoding.ids, dtype=np.int32)
        offsets = np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2)
        offsets.setflags(write=False)
        context_ids.append(ids)
        context_offsets.append(offsets)
    questions = tokenizer.encode_batch([ex.question for ex in examples], add_special_tokens=False)

    windows_cache: dict[tuple[int, int], tuple[list[tuple[int, int]], np.ndarray]] = {}
    features: list[QAFeature] = []
    for example_index, (example, question) in enumerate(zip(examples, questions)):
        query_ids = question.ids[:max_query_len]
        passage_start = len(query_ids) + 2
        window_len = max_seq_len - len(query_ids) - SPECIALS_PER_WINDOW
        c = context_index[example.context]
        ids, offsets = context_ids[c], context_offsets[c]
        if (c, window_len) not in windows_cache:
            windows = _doc_windows(len(ids), window_len, doc_stride)
            windows_cache[c, window_len] = (windows, _max_context_window(windows, len(ids)))
        windows, best_window = windows_cache[c, window_len]
        answer_tokens = _answer_token_span(example, offsets) if training else None

        for window_index, (doc_start, length) in enumerate(windows):
            input_ids = np.full(max_seq_len, pad_id, dtype=np.int32)
            input_ids[0] = cls_id
            input_ids[1:passage_start - 1] = query_ids
            input_ids[passage_start - 1] = sep_id
            input_ids[passage_start:passage_start + length] = ids[doc_start:doc_start + length]
            input_ids[passage_start + length] = sep_id
            token_type_ids = np.zeros(max_seq_len, dtype=np.int32)
            token_type_ids[passage_start:passage_start + length + 1] = 1
            attention_mask = np.zeros(max_seq_len, dtype=np.int32)
            attention_mask[:passage_start + length + 1] = 1
            is_max_context = best_window[doc_start:doc_start + length] == window_index
            is_max_context.setflags(write=False)

            start_position = end_position = None
            if training:
                start_position = end_position = 0
                if answer_tokens is not None:
                    first, last = answer_tokens
                    if doc_start <= first and last < doc_start + length:
                        start_position = passage_start + first - doc_start
                        end_position = passage_start + last - doc_start
            features.append(QAFeature(
                example_index, window_index, doc_start, input_ids, token_type_ids, attention_mask,
                passage_start, offsets[doc_start:doc_start + length], is_max_context,
                start_position, end_position,
            ))
    return features


def _window_special_ids(tokenizer) -> tuple[int, int, int]:
    """The tokenizer's [CLS], [SEP] and [PAD] ids, or a one-line ValueError when one is missing."""
    ids = tuple(tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]", "[PAD]"))
    if None in ids:
        raise ValueError("make_features tokenizer lacks [CLS], [SEP] or [PAD]: pass a BERT WordPiece tokenizer")
    return ids


def _doc_windows(n_tokens: int, window_len: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the windows covering n_tokens tokens, as in BERT's `doc_spans` loop."""
    windows = []
    start = 0
    while start < n_tokens:
        length = min(window_len, n_tokens - start)
        windows.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, doc_stride)
    return windows


def _max_context_window(windows: list[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """(n_tokens,) index of the window in which each passage token has maximal context."""
    best_score = np.full(n_tokens, -np.inf)
    best_window = np.zeros(n_tokens, dtype=np.int32)
    for window_index, (start, length) in enumerate(windows):
        left = np.arange(length)
        score = np.minimum(left, length - 1 - left) + MAX_CONTEXT_LENGTH_WEIGHT * length
        better = score > best_score[start:start + length]  # strict: earlier window wins ties
        best_score[start:start + length][better] = score[better]
        best_window[start:start + length][better] = window_index
    return best_window


def _answer_token_span(example: SquadExample, offsets: np.ndarray) -> tuple[int, int] | None:
    """(first, last) passage token overlapping the first gold answer's characters, or None if none does."""
    text, char_start = example.answers[0]
    if not offset_is_valid(example.context, text, char_start):
        raise ValueError(f"question {example.qid!r}: answer_start={char_start} does not point at the answer text "
                         f"{text!r}; training needs valid offsets: filter with answers_with_valid_offsets")
    char_end = char_start + len(text)
    first = int(np.searchsorted(offsets[:, 1], char_start, side="right"))  # first token ending after start
    last = int(np.searchsorted(offsets[:, 0], char_end, side="left")) - 1  # last token starting before end
    if first > last:
        return None
    return first, last


def features_to_arrays(features) -> dict[str, np.ndarray]:
    """Stack features into model inputs: input_ids, token_type_ids, attention_mask (N, T) int32,
    plus start_positions, end_positions (N,) int32 when the features carry training labels."""
    if not features:
        raise ValueError("features_to_arrays got no features; check that make_features had examples")
    arrays = {
        "input_ids": np.stack([f.input_ids for f in features]),
        "token_type_ids": np.stack([f.token_type_ids for f in features]),
        "attention_mask": np.stack([f.attention_mask for f in features]),
    }
    labelled = {f.start_position is not None for f in features}
    if labelled == {True}:
        arrays["start_positions"] = np.array([f.start_position for f in features], dtype=np.int32)
        arrays["end_positions"] = np.array([f.end_position for f in features], dtype=np.int32)
    elif len(labelled) == 2:
        raise ValueError("features mix training=True and training=False; build them in one make_features call")
    return arrays


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------


def decode_predictions(
    examples,
    features,
    start_logits,
    end_logits,
    *,
    n_best: int = 20,
    max_answer_len: int = 30,
) -> dict[str, str]:
    """Best answer span per example from start/end logits (N, T) aligned with ``features``.

    Per window: the ``n_best`` highest start logits among passage tokens with maximal context in
    this window, times the ``n_best`` highest end logits among passage tokens, keeping end >= start
    and end - start + 1 <= max_answer_len; score = start logit + end logit. The best span over all
    windows of an example wins (first window / earlier candidate on ties) and its text is
    ``context[char_start(start) : char_end(end)]`` of the original context, so spacing and
    punctuation are exactly the source's. An example without any valid span predicts "".
    """
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    if start_logits.shape != end_logits.shape or start_logits.ndim != 2 or start_logits.shape[0] != len(features):
        raise ValueError(
            f"start/end logits must both be (N, T) with N = {len(features)} features, got "
            f"{start_logits.shape} and {end_logits.shape}"
        )
    if features and start_logits.shape[1] != len(features[0].input_ids):
        raise ValueError(
            f"logits have T={start_logits.shape[1]} positions but features have "
            f"max_seq_len={len(features[0].input_ids)}"
        )
    if n_best < 1 or max_answer_len < 1:
        raise ValueError(f"n_best and max_answer_len must be >= 1, got {n_best} and {max_answer_len}")

    best: dict[int, tuple[float, int, int, int]] = {}  # example -> (score, feature, start token, end token)
    for feature_index, feature in enumerate(features):
        if not 0 <= feature.example_index < len(examples):
            raise ValueError(
                f"feature {feature_index} refers to example {feature.example_index} but only {len(examples)} "
                "examples were given; pass the same examples that make_features got"
            )
        passage = slice(feature.passage_start, feature.passage_start + len(feature.token_offsets))
        starts = start_logits[feature_index, passage]
        ends = end_logits[feature_index, passage]
        start_candidates = np.flatnonzero(feature.token_is_max_context)
        start_candidates = start_candidates[np.argsort(-starts[start_candidates], kind="stable")[:n_best]]
        end_candidates = np.argsort(-ends, kind="stable")[:n_best]
        length = end_candidates[None, :] - start_candidates[:, None] + 1
        valid = np.flatnonzero((length >= 1) & (length <= max_answer_len))
        if valid.size == 0:
            continue
        score = (starts[start_candidates][:, None] + ends[end_candidates][None, :]).ravel()
        k = valid[np.argmax(score[valid])]
        i, j = divmod(int(k), len(end_candidates))
        previous = best.get(feature.example_index)
        if previous is None or score[k] > previous[0]:
            best[feature.example_index] = (
                float(score[k]), feature_index, int(start_candidates[i]), int(end_candidates[j])
            )

    predictions = {example.qid: "" for example in examples}
    for example_index, (_, feature_index, start, end) in best.items():
        offsets = features[feature_index].token_offsets
        example = examples[example_index]
        predictions[example.qid] = example.context[offsets[start, 0]:offsets[end, 1]]
    return predictions


def write_predictions(predictions: dict[str, str], path) -> None:
    """Write ``{qid: answer text}`` as JSON atomically (temporary file in the same folder, then rename)."""
    _check_predictions(predictions, "predictions")
    write_text_atomic(path, json.dumps(predictions, ensure_ascii=False))


def read_predictions(path) -> dict[str, str]:
    """Read an official-format predictions file ``{qid: answer text}``, with one-line ValueErrors."""
    path = os.fspath(path)
    predictions = _read_json(path, "predictions file")
    _check_predictions(predictions, path)
    return predictions


def _check_predictions(predictions, where: str) -> None:
    if not isinstance(predictions, dict):
        raise ValueError(
            f"{where}: predictions must be a JSON object {{question id: answer text}}, "
            f"got {type(predictions).__name__}"
        )
    for qid, text in predictions.items():
        if not isinstance(qid, str) or not isinstance(text, str):
            raise ValueError(
                f"{where}: prediction for {qid!r} must map a string id to a string answer, got {type(text).__name__}"
            )


# ------------------------------------------------------------------------------------------------
# The official SQuAD v1.1 metric (evaluate-v1.1.py)
# ------------------------------------------------------------------------------------------------

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop string.punctuation characters, drop the whole words a/an/the, collapse whitespace.

    Same order as the official script, so punctuation goes before articles ("the-end" -> "theend" keeps
    its "the").
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """True when the two normalised strings are equal."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
    """Harmonic mean of precision and recall of the normalised token bags (Counter intersection).

    0 when no token is shared (also when either side normalises to nothing), as in the official script.
    """
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def evaluate(examples_or_dataset, predictions: dict[str, str]) -> dict[str, float]:
    """Official SQuAD v1.1 scores: {"exact_match": 100 * mean EM, "f1": 100 * mean F1}.

    Each question scores the max over its gold answers; the mean runs over ALL questions of the data
    (a list of SquadExample, a loaded SQuAD dict, or its "data" list). A question missing from
    ``predictions`` scores 0, and their count is reported in a one-line warning on stderr; predictions
    for unknown ids are ignored, as in the official script.
    """
    examples = _as_examples(examples_or_dataset)
    if not examples:
        raise ValueError("evaluate got no questions; check the data file")
    _check_predictions(predictions, "predictions")
    exact_match = f1 = 0.0
    missing = 0
    for example in examples:
        if example.qid not in predictions:
            missing += 1
            continue
        prediction = predictions[example.qid]
        exact_match += max(exact_match_score(prediction, text) for text, _ in example.answers)
        f1 += max(f1_score(prediction, text) for text, _ in example.answers)
    if missing:
        print(f"warning: {missing} of {len(examples)} questions have no prediction and score 0", file=sys.stderr)
    return {"exact_match": 100.0 * exact_match / len(examples), "f1": 100.0 * f1 / len(examples)}


def _as_examples(examples_or_dataset) -> list[SquadExample]:
    if isinstance(examples_or_dataset, dict):
        return parse_squad(examples_or_dataset)
    examples_or_dataset = list(examples_or_dataset)
    if all(isinstance(item, SquadExample) for item in examples_or_dataset):
        return examples_or_dataset
    return parse_squad({"data": examples_or_dataset})
