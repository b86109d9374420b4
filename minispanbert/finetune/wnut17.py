"""WNUT-17 emerging and rare entities (Derczynski et al. 2017): English named-entity recognition on
tweets, Reddit, YouTube and StackExchange text, six types, BIO tags.

Files (``wnut17train.conll``, ``emerging.dev.conll``, ``emerging.test.annotated``): CoNLL style, one
``word<TAB>tag`` per line, a blank line between sentences, UTF-8. Tags: ``O`` or ``B-T`` / ``I-T``
for T in TYPES.

Word pieces: BERT tags each word through its FIRST word piece (BERT §5.3); the other pieces,
[CLS], [SEP] and padding get IGNORE_INDEX (-100), so neither the loss nor the decoding sees them.
A word whose pieces fall beyond ``max_seq_len``, or that the tokenizer turns into no piece at all
(e.g. a lone zero-width character), gets no prediction: it is decoded as ``O``, and still counts
in the evaluation, which always runs on the file's own words and tags.

Every problem with a file (missing, empty, wrong column count, unknown tag, no sentences) is one
ValueError naming the file and line; a sentence whose words and tags differ in number is one too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minispanbert.data.tokenizer import without_padding_or_truncation
from minispanbert.engine.runs.atomic import write_text_atomic
from minispanbert.finetune.features import pack_sequences
from minispanbert.finetune.sst2 import read_lines
from minispanbert.layers.cross_entropy import IGNORE_INDEX

TYPES = ("corporation", "creative-work", "group", "location", "person", "product")
# Tag ids in the order of the Hugging Face ``wnut_17`` data set: O, then B-/I- per type.
TAGS = ("O", *(f"{bio}-{t}" for t in TYPES for bio in ("B", "I")))
TAG_IDS = {tag: i for i, tag in enumerate(TAGS)}


@dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]

    def __post_init__(self):
        if len(self.words) != len(self.tags):
            raise ValueError(f"a sentence has {len(self.words)} words but {len(self.tags)} tags: "
                             "give exactly one tag per word")


def read_conll(path) -> list[TaggedSentence]:
    """Read a WNUT-17 CoNLL file into sentences of (words, tags)."""
    sentences, words, tags = [], [], []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            if words:
                sentences.append(TaggedSentence(tuple(words), tuple(tags)))
                words, tags = [], []
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise ValueError(f"{path}:{number}: expected 2 tab-separated columns (word<TAB>tag), found "
                             f"{len(columns)}: fix the line (a blank line separates sentences)")
        word, tag = columns[0], columns[1].strip()
        if tag not in TAG_IDS:
            raise ValueError(f"{path}:{number}: unknown tag {tag!r}: WNUT-17 tags are O and B-/I- with one of "
                             f"{', '.join(TYPES)}")
        if not word.strip():
            raise ValueError(f"{path}:{number}: the word is empty: fix the line")
        words.append(word)
        tags.append(tag)
    if words:
        sentences.append(TaggedSentence(tuple(words), tuple(tags)))
    if not sentences:
        raise ValueError(f"{path}: no tagged words: pass a CoNLL file with one word<TAB>tag per line")
    return sentences


def tagged_arrays(sentences: list[TaggedSentence], tokenizer, max_seq_len: int) -> tuple[dict, np.ndarray, int]:
    """-> (host arrays input_ids, token_type_ids, attention_mask, labels (N, T), word_positions,
    number of words left without a piece).

    ``labels[n, p]`` is the tag id of the word whose first piece sits at position p (after [CLS]),
    IGNORE_INDEX elsewhere; ``word_positions[n]`` (an object array of int arrays) gives each word's
    first-piece position, or -1 for a word without one (cut off, or no piece at all).
    """
    encodings = without_padding_or_truncation(tokenizer).encode_batch([list(s.words) for s in sentences],
                                                                      is_pretokenized=True, add_special_tokens=False)
    arrays, _ = pack_sequences([enc.ids for enc in encodings], tokenizer, max_seq_len)
    N, T = arrays["input_ids"].shape
    labels = np.full((N, T), IGNORE_INDEX, dtype=np.int64)
    word_positions = np.empty(N, dtype=object)
    lost = 0
    for n, (sentence, enc) in enumerate(zip(sentences, encodings)):
        positions = np.full(len(sentence.words), -1, dtype=np.int64)
        kept = int(arrays["attention_mask"][n].sum()) - 2  # pieces between [CLS] and [SEP]
        for piece, word in enumerate(enc.word_ids[:kept]):
            if word is not None and positions[word] < 0:
                positions[word] = piece + 1  # after [CLS]
                labels[n, piece + 1] = TAG_IDS[sentence.tags[word]]
        word_positions[n] = positions
        lost += int(np.sum(positions < 0))
    arrays["labels"] = labels
    return arrays, word_positions, lost


def decode_tags(logits: np.ndarray, word_positions) -> list[list[str]]:
    """Host logits (N, T, C) -> per sentence, each word's predicted tag (its first piece's argmax;
    ``O`` for a word without a piece). No BIO repair: the metric reads I- without B- as conlleval."""
    best = logits.argmax(axis=-1)
    return [[TAGS[best[n, p]] if p >= 0 else "O" for p in positions] for n, positions in enumerate(word_positions)]


def write_conll_predictions(sentences: list[TaggedSentence], predicted: list[list[str]], path) -> None:
    """``word<TAB>gold<TAB>predicted`` per line, a blank line between sentences: the input format of
    conlleval and of WNUT-17's wnuteval.py, so the official scripts can re-score the file."""
    blocks = []
    for sentence, tags in zip(sentences, predicted, strict=True):
        TaggedSentence(sentence.words, tuple(tags))  # one tag per word, or a one-line error
        blocks.append("".join(f"{w}\t{g}\t{p}\n" for w, g, p in zip(sentence.words, sentence.tags, tags)))
    write_text_atomic(path, "\n".join(blocks))
