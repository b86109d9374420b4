"""Fetch the public data sets from their official addresses, verified by sha256, written atomically.

Layout under the data folder (default ``data/`` at the repository root, git-ignored):

    data/wikitext-2-raw/wiki.{train,valid,test}.raw       from wikitext-2-raw-v1.zip
    data/wikitext-2/wiki.{train,valid,test}.tokens        from wikitext-2-v1.zip
    data/wikitext-103-raw/wiki.{train,valid,test}.raw     from wikitext-103-raw-v1.zip
    data/squad-v1.1/{train,dev}-v1.1.json                 the two official JSON files
    data/sst2/{train,dev,test}.tsv                        from GLUE's SST-2.zip
    data/wnut17/{wnut17train.conll, emerging.dev.conll, emerging.test.annotated}   the official files

The WikiText and SST-2 folders are the official zips' single top folder, moved into place whole.
GLUE publishes no checksum for SST-2.zip: its files are checked instead by reading them with the
SST-2 reader and comparing the row counts with GLUE's (67,349 / 872 / 1,821).

Safety rules, so that an interrupted or failed run never leaves a file that looks valid:

* a download streams into a temporary file next to its destination while hashing it; only when
  the sha256 matches the table below is it moved into place with ``os.replace`` (atomic on one
  file system). Any failure deletes the temporary file.
* a zip is unpacked into a temporary folder inside the data folder, checked, and then renamed to
  ``data/NAME`` in one step, so a WikiText folder is either complete or absent.
* SQuAD's two files are independent: each one is placed atomically, and a folder with only one of
  them is reported as "partial".

``install_from`` does the same from a local copy (``--from PATH``): the official archive or file
(checked by sha256), or an already extracted folder (checked for the expected file names).

``resolve_default_corpus`` picks the pretraining corpus when the user names none: WikiText-2 from
the data folder (raw first), else a download of wikitext-2-raw with a short timeout, else Python's
built-in help topics (``data.pydoc_documents``), announced in one line. A missing network never
raises: a failed or refused download only leads to the fallback.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from minispanbert.data.corpus import Document, pydoc_documents, read_wikitext
from minispanbert.engine.runs.atomic import CHUNK_BYTES, copy_atomic, temp_dir, temp_file

DEFAULT_DATA_DIR = "data"
DEFAULT_TIMEOUT_S = 60.0


class DownloadError(RuntimeError):
    """The network fetch failed or delivered bytes with the wrong sha256 (nothing was written)."""


@dataclass(frozen=True)
class Remote:
    """One official file: its address, sha256 (None when none is published: the data set's
    ``check`` then verifies the unpacked files) and size in bytes."""

    url: str
    sha256: str | None
    size: int


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set comes from and which files it puts in ``data/NAME/``.

    ``files`` maps a split name to a file name. The files come either from one zip ``archive``
    (member ``archive_root/FILE`` for each file) or one by one from ``remotes`` (FILE -> Remote).
    ``check`` (optional) is called with the folder of unpacked files before they are moved into
    place and raises ValueError when they are not the data set's.
    """

    description: str
    files: dict[str, str]
    archive: Remote | None = None
    archive_root: str = ""
    remotes: dict[str, Remote] = field(default_factory=dict)
    check: Callable[[Path], None] | None = None


_WIKITEXT = "https://wikitext.smerity.com/"
_SQUAD = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
_WNUT17 = "https://raw.githubusercontent.com/leondz/emerging_entities_17/e52a2d2a71ac1a051ca2d532eef28653c5c02603/"
SST2_ROWS = {"train.tsv": 67_349, "dev.tsv": 872, "test.tsv": 1_821}  # GLUE's published SST-2 sizes


def _check_sst2(folder: Path) -> None:
    """Each SST-2 file parses (`tasks.sst2.read_sst2`) and has GLUE's number of rows."""
    from minispanbert.finetune.sst2 import read_sst2

    for fname, rows in SST2_ROWS.items():
        found = len(read_sst2(folder / fname))
        if found != rows:
            raise ValueError(f"{fname} has {found} sentences, GLUE's SST-2 has {rows}: it is not the official "
                             "file; download SST-2.zip again")

# The one table of official addresses and checksums.
DATASETS: dict[str, DatasetSpec] = {
    "wikitext-2-raw": DatasetSpec(
        "WikiText-2, raw text (Merity et al. 2016; CC BY-SA)",
        {"train": "wiki.train.raw", "valid": "wiki.valid.raw", "test": "wiki.test.raw"},
        archive=Remote(_WIKITEXT + "wikitext-2-raw-v1.zip",
                       "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11", 4_721_645),
        archive_root="wikitext-2-raw",
    ),
    "wikitext-2": DatasetSpec(
        "WikiText-2, tokenised with <unk> (Merity et al. 2016; CC BY-SA)",
        {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
        archive=Remote(_WIKITEXT + "wikitext-2-v1.zip",
                       "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c", 4_475_746),
        archive_root="wikitext-2",
    ),
    "wikitext-103-raw": DatasetSpec(
        "WikiText-103, raw text, ~540 MB unpacked (Merity et al. 2016; CC BY-SA)",
        {"train": "wiki.train.raw", "valid": "wiki.valid.raw", "test": "wiki.test.raw"},
        archive=Remote(_WIKITEXT + "wikitext-103-raw-v1.zip",
                       "91c00ae287f0d699e18605c84afc9e45c192bc6b7797ff8837e5474655a33794", 191_984_949),
        archive_root="wikitext-103-raw",
    ),
    "squad-v1.1": DatasetSpec(
        "SQuAD 1.1 train + dev (Rajpurkar et al. 2016; CC BY-SA 4.0)",
        {"train": "train-v1.1.json", "dev": "dev-v1.1.json"},
        remotes={
            "train-v1.1.json": Remote(_SQUAD + "train-v1.1.json",
                                      "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955", 30_288_272),
            "dev-v1.1.json": Remote(_SQUAD + "dev-v1.1.json",
                                    "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9", 4_854_279),
        },
    ),
    "sst2": DatasetSpec(
        "GLUE SST-2 binary sentiment (Socher et al. 2013; research use, as distributed by GLUE)",
        {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        # no published checksum (see _check_sst2); the size, about 7.4 MB, only feeds the progress bar
        archive=Remote("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip", None, 7_400_000),
        archive_root="SST-2",
        check=_check_sst2,
    ),
    "wnut17": DatasetSpec(
        "WNUT-17 emerging and rare entities, English NER (Derczynski et al. 2017; CC BY 4.0)",
        {"train": "wnut17train.conll", "dev": "emerging.dev.conll", "test": "emerging.test.annotated"},
        remotes={
            "wnut17train.conll": Remote(_WNUT17 + "wnut17train.conll",
                                        "731820e13f71af324c6b55a1575ec2ce59fbaa2a0806f8f0400b98d56cd6a7a5", 493_781),
            "emerging.dev.conll": Remote(_WNUT17 + "emerging.dev.conll",
                                         "e053b752b8155113ca66e7db08af5f2f5f43ab993694e4774f1ec5bad42312d8", 114_749),
            "emerging.test.annotated": Remote(_WNUT17 + "emerging.test.annotated",
                                              "2aa79b764e56ec9264a1b30fdd9b70195bd00ff400b62edd8f399d5f13c178f0", 192_425),
        },
    ),
}


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_dir(name: str, data_dir: str | os.PathLike = DEFAULT_DATA_DIR) -> Path:
    """The folder ``data_dir/NAME`` that holds data set ``name``."""
    _spec(name)
    return Path(data_dir) / name


def dataset_files(name: str, data_dir: str | os.PathLike = DEFAULT_DATA_DIR) -> dict[str, Path]:
    """Split name -> file path for data set ``name`` (whether or not the files exist yet).

    WikiText: {"train", "valid", "test"}; SQuAD: {"train", "dev"}.
    """
    folder = dataset_dir(name, data_dir)
    return {split: folder / fname for split, fname in _spec(name).files.items()}


def dataset_status(name: str, data_dir: str | os.PathLike = DEFAULT_DATA_DIR) -> str:
    """"present" (every file there), "partial" (some) or "missing" (none)."""
    have = [p.is_file() for p in dataset_files(name, data_dir).values()]
    return "present" if all(have) else "partial" if any(have) else "missing"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    """A short human reason for a network failure ("HTTP Error 404: Not Found", "timed out")."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else Exception(exc.reason)
    return str(exc) or type(exc).__name__


def fetch_verified(remote: Remote, directory: Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Stream ``remote.url`` into a temporary file in ``directory`` and check its sha256.

    Returns the temporary file's path (the caller moves it into place). On a network error or a
    checksum mismatch the temporary file is deleted and DownloadError is raised.
    """
    fd, tmp = temp_file(directory, Path(remote.url).name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(remote.url, timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or remote.size)
                    # disable=None: a progress bar on a terminal, silence in logs and tests.
                    bar = tqdm(total=total, unit="B", unit_scale=True, desc=Path(remote.url).name, disable=None)
                    with bar:
                        while chunk := response.read(CHUNK_BYTES):
                            digest.update(chunk)
                            out.write(chunk)
                            bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets are OSErrors
                raise DownloadError(
                    f"could not download {remote.url} ({_reason(exc)}): check the network, "
                    "or fetch the file elsewhere and install it with --from PATH"
                ) from None
        if remote.sha256 is not None and digest.hexdigest() != remote.sha256:
            raise DownloadError(
                f"{remote.url} gave sha256 {digest.hexdigest()}, expected {remote.sha256} "
                "(a proxy or captive portal page?): nothing was kept; retry or use --from PATH"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _install_archive(name: str, archive: Path, data_dir: Path) -> Path:
    """Unpack the expected members of a verified zip into ``data_dir/NAME`` (temp folder, rename)."""
    spec = _spec(name)
    staging = temp_dir(data_dir, name)
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                members = set(zf.namelist())
                for fname in spec.files.values():
                    member = f"{spec.archive_root}/{fname}"
                    if member not in members:
                        raise ValueError(
                            f"{archive} has no member {member}: it is not the official {name} archive"
                        )
                    with zf.open(member) as src, open(staging / fname, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
        except zipfile.BadZipFile:
            raise ValueError(f"{archive} is not a readable zip archive: download it again") from None
        _check(spec, staging, archive)
        return _move_into_place(staging, dataset_dir(name, data_dir))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check(spec: DatasetSpec, staging: Path, source: Path) -> None:
    """Run the data set's own check on the unpacked files, naming ``source`` in the error."""
    if spec.check is not None:
        try:
            spec.check(staging)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None


def _move_into_place(staging: Path, final: Path) -> Path:
    """Rename the complete ``staging`` folder to ``final``, replacing an older copy if any."""
    if final.exists():
        old = temp_dir(final.parent, f"{final.name}.old")
        os.replace(final, old / final.name)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    return final


def download(
    name: str,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    *,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
    log: Callable[[str], None] = print,
) -> Path:
    """Download data set ``name`` into ``data_dir/NAME`` (skipped when already present) -> that folder.

    Raises DownloadError when the network fails or the bytes do not match the pinned sha256;
    nothing partial is left behind in either case.
    """
    spec = _spec(name)
    data_dir = Path(data_dir)
    folder = dataset_dir(name, data_dir)
    if not force and dataset_status(name, data_dir) == "present":
        log(f"{name}: already present in {folder} (use --force to download again)")
        return folder
    data_dir.mkdir(parents=True, exist_ok=True)
    if spec.archive is not None:
        log(f"{name}: downloading {spec.archive.url} ({spec.archive.size / 1e6:.1f} MB)")
        archive = fetch_verified(spec.archive, data_dir, timeout=timeout)
        try:
            _install_archive(name, archive, data_dir)
        finally:
            archive.unlink(missing_ok=True)
    else:
        created = not folder.exists()
        folder.mkdir(exist_ok=True)
        try:
            for fname, remote in spec.remotes.items():
                if force or not (folder / fname).is_file():
                    log(f"{name}: downloading {remote.url} ({remote.size / 1e6:.1f} MB)")
                    os.replace(fetch_verified(remote, folder, timeout=timeout), folder / fname)
        finally:
            if created and not any(folder.iterdir()):
                folder.rmdir()
    log(f"{name}: ready in {folder}")
    return folder


def install_from(
    name: str,
    source: str | os.PathLike,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    *,
    log: Callable[[str], None] = print,
) -> Path:
    """Install data set ``name`` from a local copy ``source`` -> ``data_dir/NAME``.

    ``source`` may be the official archive (WikiText zip) or official file (a SQuAD JSON), both
    checked by sha256, or a folder holding the already extracted files (the WikiText files directly
    or inside the archive's top folder; for SQuAD, whichever of the two files it contains, each
    checked by sha256). An existing installation is replaced.
    """
    spec = _spec(name)
    source = Path(source)
    data_dir = Path(data_dir)
    if not source.exists():
        raise ValueError(f"--from {source}: no such file or folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    folder = dataset_dir(name, data_dir)

    if spec.archive is not None:
        if source.is_file():
            digest = sha256_file(source)
            if spec.archive.sha256 is not None and digest != spec.archive.sha256:
                raise ValueError(
                    f"--from {source}: sha256 {digest} is not that of the official "
                    f"{Path(spec.archive.url).name} ({spec.archive.sha256}); "
                    "pass that archive or an extracted folder"
                )
            _install_archive(name, source, data_dir)
        else:
            inner = source / spec.archive_root
            root = inner if inner.is_dir() else source
            missing = [f for f in spec.files.values() if not (root / f).is_file()]
            if missing:
                raise ValueError(
                    f"--from {source}: missing {', '.join(missing)}; "
                    f"a {name} folder needs all of {', '.join(spec.files.values())}"
                )
            staging = temp_dir(data_dir, name)
            try:
                for fname in spec.files.values():
                    shutil.copyfile(root / fname, staging / fname)
                _check(spec, staging, source)
                _move_into_place(staging, folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    else:
        by_sha = {remote.sha256: fname for fname, remote in spec.remotes.items()}
        if source.is_file():
            digest = sha256_file(source)
            if digest not in by_sha:
                raise ValueError(
                    f"--from {source}: sha256 {digest} matches none of the official files "
                    f"{', '.join(spec.remotes)}; pass one of them or a folder holding them"
                )
            chosen = {by_sha[digest]: source}
        else:
            chosen = {f: source / f for f in spec.remotes if (source / f).is_file()}
            if not chosen:
                raise ValueError(f"--from {source}: the folder holds none of {', '.join(spec.remotes)}")
            for fname, path in chosen.items():
                digest = sha256_file(path)
                if digest != spec.remotes[fname].sha256:
                    raise ValueError(
                        f"--from {path}: sha256 {digest} differs from the official {fname} "
                        f"({spec.remotes[fname].sha256}); nothing was installed"
                    )
        folder.mkdir(exist_ok=True)
        for fname, path in chosen.items():
            copy_atomic(path, folder / fname)
    status = dataset_status(name, data_dir)
    log(f"{name}: installed from {source} into {folder} ({status})")
    return folder


# --------------------------------------------------------------------------- the default corpus

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
