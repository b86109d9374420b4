"""Corpus readers: text files -> documents, each a list of non-empty lines (sentences).

SpanBERT trains on single sequences (paper §3.3, following RoBERTa): each block holds *consecutive
whole sentences of one document* and never crosses a document boundary. Every reader here
therefore keeps the document structure:

    Document = list[str]          # non-empty lines of one document, in order

Readers:

* ``read_wikitext`` — WikiText ``.raw`` / ``.tokens`` (Merity et al. 2016). A line ``" = Title = "``
  (exactly one "=" on each side) starts a new document. Section headings ``" = = Section = = "``
  (two or more "=") are dropped, as in BERT's Wikipedia preprocessing: they are not sentences.
  Blank lines are skipped. WikiText escapes separators inside numbers and compounds as " @-@ ",
  " @,@ " and " @.@ "; we restore "-", "," and "." ("1 @,@ 000" -> "1,000"), so the text reads like
  the SQuAD passages used for fine-tuning and "@" does not cost two extra words each time. Each
  paragraph line is then split into sentences after a free-standing ". ", "? " or "! " token
  (WikiText is Moses-tokenised, so "H. americanus" and "0.7" are not split), which lets blocks pack
  whole sentences as in the paper.
  Caveat: a few table legends look like titles (" = Played , W = "), so WikiText-2 train gives 629
  documents for its 600 articles; such a legend only splits an article in two, which is harmless.
* ``read_text`` — a UTF-8 text file, or a directory of ``*.txt`` files (sorted by name, not
  recursive): a blank line ends a document (so does the end of a file); each other line is one
  line, stripped.
* ``read_corpus`` — dispatches on the path: directory -> ``read_text``; ``.raw``/``.tokens`` ->
  ``read_wikitext``; anything else -> ``read_text``.
* ``pydoc_documents`` — the offline fallback: Python's own help topics (``pydoc_data.topics``,
  about 80 documents and 70k words in every CPython), one document per topic, one line per paragraph.

Every problem is a one-line ValueError naming the file: missing path, undecodable bytes (with the
byte offset), a directory without ``.txt`` files, or a corpus with no text at all.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

Document = list[str]

WIKITEXT_SUFFIXES = (".raw", ".tokens")
_SENTENCE_END = re.compile(r"(?<=\s[.!?])\s+")
_WIKITEXT_ESCAPE = re.compile(r" @([-,.])@ ")
# A paragraph-underline line in the pydoc topics ("*****", "=====", "-----").
_RULE_LINE = re.compile(r"^[*=\-~^#+]{3,}$")


def _read_utf8(path: Path) -> str:
    """The text of ``path``; ValueError naming the file and byte offset if it is not UTF-8."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path}: not valid UTF-8 at byte offset {exc.start} (byte 0x{data[exc.start]:02x}); "
            "convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not text


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise ValueError(
            f"corpus path {path} does not exist: pass a text file, a WikiText file or a folder of .txt files"
        )


def _check_nonempty(documents: list[Document], path: Path) -> list[Document]:
    if not documents:
        raise ValueError(f"corpus {path} contains no text: pass a file with at least one non-blank line")
    return documents


def _is_wikitext_title(stripped: str) -> bool:
    """``= Title =`` with exactly one "=" on each side."""
    one_each_side = stripped.startswith("= ") and stripped.endswith(" =")
    return one_each_side and not stripped.startswith("= =") and not stripped.endswith("= =")


def _is_wikitext_heading(stripped: str) -> bool:
    """``= = Section = =`` (or deeper)."""
    return stripped.startswith("= =") and stripped.endswith("= =")


def wikitext_sentences(paragraph: str) -> list[str]:
    """Un-escape `` @-@ ``-style separators, then split one WikiText paragraph into sentences
    after each free-standing ``.``, ``?`` and ``!``."""
    text = _WIKITEXT_ESCAPE.sub(r"\1", paragraph.strip())
    return [s for s in _SENTENCE_END.split(text) if s]


def read_wikitext(path: str | os.PathLike) -> list[Document]:
    """Documents of a WikiText ``.raw`` or ``.tokens`` file (rules in the module docstring)."""
    path = Path(path)
    _check_exists(path)
    documents: list[Document] = []
    current: Document = []
    for line in _read_utf8(path).split("\n"):
        stripped = line.strip()
        if not stripped:
            continue
        if _is_wikitext_title(stripped):
            if current:
                documents.append(current)
            current = []
        elif not _is_wikitext_heading(stripped):
            current.extend(wikitext_sentences(stripped))
    if current:
        documents.append(current)
    return _check_nonempty(documents, path)


def _text_documents(text: str) -> list[Document]:
    documents: list[Document] = []
    current: Document = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped:
            current.append(stripped)
        elif current:
            documents.append(current)
            current = []
    if current:
        documents.append(current)
    return documents


def read_text(path: str | os.PathLike) -> list[Document]:
    """Documents of a plain UTF-8 file, or of every ``*.txt`` in a directory (sorted by name)."""
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".txt" and p.is_file())
        if not files:
            raise ValueError(f"corpus folder {path} has no .txt files: put UTF-8 .txt files in it")
    else:
        files = [path]
    documents = [doc for f in files for doc in _text_documents(_read_utf8(f))]
    return _check_nonempty(documents, path)


def read_corpus(path: str | os.PathLike) -> list[Document]:
    """Read a corpus, choosing the reader from the path (folder, WikiText suffix, or plain text)."""
    path = Path(path)
    _check_exists(path)
    if path.is_file() and path.suffix in WIKITEXT_SUFFIXES:
        return read_wikitext(path)
    return read_text(path)


def pydoc_documents() -> list[Document]:
    """The built-in fallback corpus: one document per ``pydoc_data.topics`` help topic.

    Paragraphs (blank-line separated) become single lines with whitespace collapsed; underline
    rules such as ``*****`` are dropped. Topics are taken in sorted order, so the corpus is the
    same on every run of one Python version.
    """
    from pydoc_data.topics import topics

    documents = []
    for name in sorted(topics):
        doc = []
        for paragraph in re.split(r"\n\s*\n", topics[name]):
            kept = [line for line in paragraph.splitlines() if not _RULE_LINE.match(line.strip())]
            words = " ".join(kept).split()
            if words:
                doc.append(" ".join(words))
        if doc:
            documents.append(doc)
    return documents


def split_documents(
    documents: list[Document], valid_fraction: float, rng_seed: int
) -> tuple[list[Document], list[Document]]:
    """Deterministic held-out split by whole documents -> (train_docs, valid_docs).

    ``round(valid_fraction * n)`` documents (at least 1 when the fraction is > 0, and never all of
    them) are drawn with ``numpy.random.default_rng(rng_seed)``; both parts keep the input order.
    ``valid_fraction = 0`` gives an empty validation list.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    n = len(documents)
    if valid_fraction == 0.0:
        return list(documents), []
    if n < 2:
        raise ValueError(
            f"cannot hold out documents from a corpus of {n} document(s): use valid_fraction=0 or more text"
        )
    n_valid = min(max(1, round(valid_fraction * n)), n - 1)
    valid_idx = set(np.random.default_rng(rng_seed).permutation(n)[:n_valid].tolist())
    train = [doc for i, doc in enumerate(documents) if i not in valid_idx]
    valid = [doc for i, doc in enumerate(documents) if i in valid_idx]
    return train, valid
