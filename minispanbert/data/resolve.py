"""Pick the pretraining corpus when the user names none: WikiText-2, else a download, else pydoc.

Order of preference (the first that works wins):

1. ``data_dir/wikitext-2-raw`` (raw text, no ``<unk>``; best for subword tokenizers), then
   ``data_dir/wikitext-2`` (the tokenised version): its train file for training and its valid file
   for validation.
2. Download ``wikitext-2-raw`` (4.7 MB) with a short timeout, when ``allow_download``.
3. The built-in ``pydoc_documents()`` corpus (Python's help topics), announced in one ``log`` line.
   It has no official validation split, so ``valid_docs`` is None: hold some documents out with
   ``split_documents``.

A missing network never raises: a failed or refused download only leads to step 3.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from minispanbert.data.corpus import Document, pydoc_documents, read_wikitext
from minispanbert.data.download import DownloadError, dataset_files, dataset_status, download

DEFAULT_CORPORA = ("wikitext-2-raw", "wikitext-2")
DOWNLOAD_TIMEOUT_S = 10.0


def _read_wikitext_splits(name: str, data_dir: Path) -> tuple[list[Document], list[Document], str]:
    files = dataset_files(name, data_dir)
    train, valid = read_wikitext(files["train"]), read_wikitext(files["valid"])
    description = (
        f"{name} from {files['train'].parent} "
        f"(train {len(train)} documents, valid {len(valid)} documents)"
    )
    return train, valid, description


def resolve_default_corpus(
    data_dir: str | os.PathLike = "data",
    *,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[list[Document], list[Document] | None, str]:
    """-> (train_docs, valid_docs or None, one-line description of what was chosen)."""
    data_dir = Path(data_dir)
    for name in DEFAULT_CORPORA:
        if dataset_status(name, data_dir) == "present":
            return _read_wikitext_splits(name, data_dir)

    if allow_download:
        try:
            # Quiet: the only line printed is the outcome (tqdm still draws a bar on a terminal).
            download(DEFAULT_CORPORA[0], data_dir, timeout=DOWNLOAD_TIMEOUT_S, log=lambda _msg: None)
        except (DownloadError, OSError) as exc:  # OSError: e.g. a read-only data folder
            why = f"downloading {DEFAULT_CORPORA[0]} failed: {exc}"
        else:
            log(f"downloaded {DEFAULT_CORPORA[0]} into {dataset_files(DEFAULT_CORPORA[0], data_dir)['train'].parent}")
            return _read_wikitext_splits(DEFAULT_CORPORA[0], data_dir)
    else:
        why = "downloads are off"

    documents = pydoc_documents()
    log(
        f"no WikiText-2 in {data_dir} and {why}; falling back to Python's built-in help topics "
        f"({len(documents)} documents) - get real data with: python -m minispanbert.data download wikitext-2-raw"
    )
    return documents, None, f"pydoc help topics (built-in fallback, {len(documents)} documents)"
