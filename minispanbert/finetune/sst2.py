"""GLUE SST-2 (Socher et al. 2013; Wang et al. 2019): binary sentiment of movie-review sentences.

Files (tab-separated, one header line, UTF-8):
    train.tsv, dev.tsv   ``sentence<TAB>label``, label 0 (negative) or 1 (positive)
    test.tsv             ``index<TAB>sentence``, no labels (GLUE keeps them private)
The sentences are lower-cased and PTB-tokenised already; BERT reads each one as a single segment
``[CLS] sentence [SEP]`` and classifies the [CLS] state through the pooler
(`model.sequence_classification`). Dev accuracy is the number GLUE reports for SST-2.

Every problem with a file (missing, empty, unknown header, wrong column count, unknown label, no
rows) is one ValueError naming the file and, for a row, its line number.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minispanbert.data.tokenizer import without_padding_or_truncation
from minispanbert.finetune.features import pack_sequences

LABELS = ("negative", "positive")  # label ids 0 and 1, as in the files
LABELLED_HEADER = ["sentence", "label"]
UNLABELLED_HEADER = ["index", "sentence"]


@dataclass(frozen=True)
class Sentence:
    text: str
    label: int | None  # None for the unlabelled test file


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file (line ends stripped); one-line ValueError when unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file: pass the path of the data file (python -m minispanbert.data list)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}): pass the original data file") from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty: download it again (python -m minispanbert.data download ...)")
    return text.splitlines()


def read_sst2(path) -> list[Sentence]:
    """Read an SST-2 ``train.tsv``/``dev.tsv`` (labelled) or ``test.tsv`` (unlabelled)."""
    lines = read_lines(path)
    header = lines[0].rstrip().split("\t")
    if header not in (LABELLED_HEADER, UNLABELLED_HEADER):
        raise ValueError(f"{path}:1: header {lines[0]!r} is neither 'sentence<TAB>label' nor 'index<TAB>sentence': "
                         "pass a GLUE SST-2 .tsv file")
    labelled = header == LABELLED_HEADER
    examples = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 2:
            raise ValueError(f"{path}:{number}: expected 2 tab-separated columns ({'<TAB>'.join(header)}), "
                             f"found {len(columns)}: fix or remove the line")
        if labelled:
            text, label = columns[0].strip(), columns[1].strip()
            if label not in ("0", "1"):
                raise ValueError(f"{path}:{number}: unknown label {label!r}: SST-2 labels are 0 (negative) "
                                 "and 1 (positive)")
            examples.append(Sentence(text, int(label)))
        else:
            examples.append(Sentence(columns[1].strip(), None))
        if not examples[-1].text:
            raise ValueError(f"{path}:{number}: the sentence is empty: fix or remove the line")
    if not examples:
        raise ValueError(f"{path}: a header but no sentences: download the file again")
    return examples


def sentence_arrays(examples: list[Sentence], tokenizer, max_seq_len: int) -> tuple[dict, int]:
    """-> (host arrays input_ids, token_type_ids, attention_mask (N, T) and labels (N,) when
    labelled, number of sentences cut to ``max_seq_len``)."""
    plain = without_padding_or_truncation(tokenizer)
    encodings = plain.encode_batch([e.text for e in examples], add_special_tokens=False)
    arrays, cut = pack_sequences([enc.ids for enc in encodings], tokenizer, max_seq_len)
    if all(e.label is not None for e in examples):
        arrays["labels"] = np.array([e.label for e in examples], dtype=np.int64)
    return arrays, cut
