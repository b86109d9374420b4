"""Tests for minispanbert.data downloads, --from installs, the CLI and default corpus resolution.

No test touches the network: the data-set table is monkeypatched to point at small fake archives
and files in tmp_path (file:// URLs) whose sha256 the test computes itself.
"""
import hashlib
import urllib.error
import zipfile

import pytest

from minispanbert.data import __main__ as cli
from minispanbert.engine import datasets as resolve
from minispanbert.engine.datasets import (
    DATASETS,
    DatasetSpec,
    DownloadError,
    Remote,
    dataset_files,
    dataset_status,
    download,
    install_from,
)

TRAIN = " = Alpha = \n \n Alpha is a letter . It comes first . \n = Beta = \n Beta follows . \n"
VALID = " = Gamma = \n Gamma is third . \n"
TEST = " = Delta = \n Delta is fourth . \n"
FILES = {"train": "wiki.train.raw", "valid": "wiki.valid.raw", "test": "wiki.test.raw"}
CONTENTS = {"wiki.train.raw": TRAIN, "wiki.valid.raw": VALID, "wiki.test.raw": TEST}


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def fake_zip(tmp_path):
    """A WikiText-style zip: one top folder holding the three split files (plus a stray member)."""
    path = tmp_path / "src" / "fake-wikitext.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        for fname, text in CONTENTS.items():
            zf.writestr(f"wikitext-2-raw/{fname}", text)
        zf.writestr("wikitext-2-raw/README", "not extracted")
    return path


def use_zip_spec(monkeypatch, archive, sha=None):
    spec = DatasetSpec(
        "fake WikiText-2 raw", FILES,
        archive=Remote(archive.as_uri(), sha or sha256(archive), archive.stat().st_size),
        archive_root="wikitext-2-raw",
    )
    monkeypatch.setitem(DATASETS, "wikitext-2-raw", spec)


@pytest.fixture
def fake_squad(tmp_path, monkeypatch):
    src = tmp_path / "squad-src"
    src.mkdir()
    (src / "train-v1.1.json").write_text('{"data": [], "version": "1.1", "split": "train"}')
    (src / "dev-v1.1.json").write_text('{"data": [], "version": "1.1", "split": "dev"}')
    remotes = {f: Remote((src / f).as_uri(), sha256(src / f), (src / f).stat().st_size) for f in ("train-v1.1.json", "dev-v1.1.json")}
    monkeypatch.setitem(DATASETS, "squad-v1.1", DatasetSpec("fake SQuAD", {"train": "train-v1.1.json", "dev": "dev-v1.1.json"}, remotes=remotes))
    return src


# ---------------------------------------------------------------------------------------- download


def test_download_zip_over_file_url(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip)
    data = tmp_path / "data"
    lines = []
    folder = download("wikitext-2-raw", data, log=lines.append)
    assert folder == data / "wikitext-2-raw"
    assert all_files(data) == ["wikitext-2-raw/wiki.test.raw", "wikitext-2-raw/wiki.train.raw", "wikitext-2-raw/wiki.valid.raw"]
    assert (folder / "wiki.train.raw").read_text() == TRAIN
    assert dataset_status("wikitext-2-raw", data) == "present"
    assert dataset_files("wikitext-2-raw", data)["valid"] == folder / "wiki.valid.raw"
    # Present now: a second call downloads nothing (the URL could be gone).
    use_zip_spec(monkeypatch, fake_zip, sha="0" * 64)
    download("wikitext-2-raw", data, log=lines.append)
    assert "already present" in lines[-1]


def test_sha_mismatch_leaves_nothing(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip, sha="0" * 64)
    data = tmp_path / "data"
    with pytest.raises(DownloadError, match="sha256"):
        download("wikitext-2-raw", data, log=lambda _: None)
    assert all_files(data) == [] and list(data.iterdir()) == []


def test_sha_mismatch_on_force_keeps_the_old_copy(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip)
    data = tmp_path / "data"
    download("wikitext-2-raw", data, log=lambda _: None)
    use_zip_spec(monkeypatch, fake_zip, sha="0" * 64)
    with pytest.raises(DownloadError):
        download("wikitext-2-raw", data, force=True, log=lambda _: None)
    assert all_files(data) == ["wikitext-2-raw/wiki.test.raw", "wikitext-2-raw/wiki.train.raw", "wikitext-2-raw/wiki.valid.raw"]


def test_network_failure_mid_stream_leaves_nothing(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip)

    class Dropping:
        headers = {"Content-Length": "1000"}

        def __init__(self):
            self.calls = 0

        def read(self, _n):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection reset by peer")
            return b"x" * 100

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Dropping())
    data = tmp_path / "data"
    with pytest.raises(DownloadError, match="connection reset"):
        download("wikitext-2-raw", data, log=lambda _: None)
    assert all_files(data) == []


def test_unreachable_host_is_a_clear_error(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip)

    def offline(url, timeout):
        raise urllib.error.URLError(OSError("Name or service not known"))

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DownloadError, match="Name or service not known.*--from"):
        download("wikitext-2-raw", tmp_path / "data", log=lambda _: None)
    with pytest.raises(SystemExit, match="^error: could not download"):
        cli.main(["download", "wikitext-2-raw", "--dir", str(tmp_path / "data")])
    assert all_files(tmp_path / "data") == []


def test_download_separate_files(tmp_path, fake_squad):
    data = tmp_path / "data"
    download("squad-v1.1", data, log=lambda _: None)
    assert all_files(data) == ["squad-v1.1/dev-v1.1.json", "squad-v1.1/train-v1.1.json"]
    assert (data / "squad-v1.1" / "dev-v1.1.json").read_bytes() == (fake_squad / "dev-v1.1.json").read_bytes()
    assert set(dataset_files("squad-v1.1", data)) == {"train", "dev"}


def test_download_separate_files_bad_sha_leaves_no_folder(tmp_path, fake_squad, monkeypatch):
    spec = DATASETS["squad-v1.1"]
    bad = dict(spec.remotes)
    bad["train-v1.1.json"] = Remote(bad["train-v1.1.json"].url, "f" * 64, 1)
    monkeypatch.setitem(DATASETS, "squad-v1.1", DatasetSpec(spec.description, spec.files, remotes=bad))
    data = tmp_path / "data"
    with pytest.raises(DownloadError):
        download("squad-v1.1", data, log=lambda _: None)
    assert list(data.iterdir()) == []


# ------------------------------------------------------------------------------------------ --from


def test_from_official_archive(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip)
    data = tmp_path / "data"
    cli.main(["download", "wikitext-2-raw", "--dir", str(data), "--from", str(fake_zip)])
    assert dataset_status("wikitext-2-raw", data) == "present"
    assert (data / "wikitext-2-raw" / "wiki.test.raw").read_text() == TEST


def test_from_wrong_archive_is_refused(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip, sha="0" * 64)
    data = tmp_path / "data"
    with pytest.raises(ValueError, match="not that of the official"):
        install_from("wikitext-2-raw", fake_zip, data, log=lambda _: None)
    assert all_files(data) == []


def test_from_extracted_folder(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip)
    flat = tmp_path / "flat"
    flat.mkdir()
    for fname, text in CONTENTS.items():
        (flat / fname).write_text(text)
    data = tmp_path / "data"
    install_from("wikitext-2-raw", flat, data, log=lambda _: None)
    assert (data / "wikitext-2-raw" / "wiki.train.raw").read_text() == TRAIN
    # The archive's own top folder is accepted too, and replaces the earlier install.
    nested = tmp_path / "nested" / "wikitext-2-raw"
    nested.mkdir(parents=True)
    for fname in CONTENTS:
        (nested / fname).write_text("replaced " + fname)
    install_from("wikitext-2-raw", nested.parent, data, log=lambda _: None)
    assert (data / "wikitext-2-raw" / "wiki.train.raw").read_text() == "replaced wiki.train.raw"
    assert all_files(data) == ["wikitext-2-raw/wiki.test.raw", "wikitext-2-raw/wiki.train.raw", "wikitext-2-raw/wiki.valid.raw"]


def test_from_incomplete_folder_is_refused(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "wiki.valid.raw").write_text(VALID)
    with pytest.raises(SystemExit, match="^error: .*missing wiki.train.raw, wiki.test.raw"):
        cli.main(["download", "wikitext-2-raw", "--dir", str(tmp_path / "data"), "--from", str(partial)])
    assert all_files(tmp_path / "data") == []


def test_from_single_squad_file_is_partial(tmp_path, fake_squad):
    data = tmp_path / "data"
    install_from("squad-v1.1", fake_squad / "dev-v1.1.json", data, log=lambda _: None)
    assert all_files(data) == ["squad-v1.1/dev-v1.1.json"]
    assert dataset_status("squad-v1.1", data) == "partial"
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(ValueError, match="matches none"):
        install_from("squad-v1.1", other, data, log=lambda _: None)
    # A folder holding a file with the right name but the wrong bytes installs nothing.
    folder = tmp_path / "squad-folder"
    folder.mkdir()
    (folder / "train-v1.1.json").write_text("{}")
    with pytest.raises(ValueError, match="differs from the official"):
        install_from("squad-v1.1", folder, data, log=lambda _: None)
    assert all_files(data) == ["squad-v1.1/dev-v1.1.json"]


def test_cli_list_shows_status_and_folders(tmp_path, fake_squad, capsys):
    data = tmp_path / "data"
    install_from("squad-v1.1", fake_squad / "dev-v1.1.json", data, log=lambda _: None)
    capsys.readouterr()
    cli.main(["list", "--dir", str(data)])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line and not line.startswith(" ")}
    assert rows == {"name": "status", "wikitext-2-raw": "missing", "wikitext-2": "missing",
                    "wikitext-103-raw": "missing", "squad-v1.1": "partial", "sst2": "missing", "wnut17": "missing"}
    assert str(data / "squad-v1.1") in out


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown data set"):
        dataset_files("imagenet", "data")
    with pytest.raises(SystemExit):
        cli.main(["download", "imagenet"])


# ------------------------------------------------------------------------------ default resolution


def no_download(*args, **kwargs):
    raise DownloadError("could not download (no network in this test)")


def test_default_corpus_falls_back_to_pydoc_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve, "download", no_download)
    lines = []
    train, valid, description = resolve.resolve_default_corpus(tmp_path / "data", log=lines.append)
    assert valid is None
    assert train == resolve.pydoc_documents()
    assert len(lines) == 1 and "help topics" in lines[0] and "no network" in lines[0]
    assert "pydoc" in description


def test_default_corpus_never_downloads_when_not_allowed(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("download must not be attempted")

    monkeypatch.setattr(resolve, "download", fail)
    lines = []
    train, valid, _ = resolve.resolve_default_corpus(tmp_path, allow_download=False, log=lines.append)
    assert valid is None and len(train) > 10 and len(lines) == 1


def install_tree(data, name, suffix):
    folder = data / name
    folder.mkdir(parents=True)
    for split, text in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        (folder / f"wiki.{split}.{suffix}").write_text(text)


def test_default_corpus_prefers_raw_wikitext(tmp_path, monkeypatch):
    monkeypatch.setattr(resolve, "download", no_download)
    data = tmp_path / "data"
    install_tree(data, "wikitext-2", "tokens")
    train, valid, description = resolve.resolve_default_corpus(data, log=pytest.fail)
    assert description.startswith("wikitext-2 ")
    install_tree(data, "wikitext-2-raw", "raw")
    (data / "wikitext-2-raw" / "wiki.valid.raw").write_text(" = Raw = \n Raw valid text . \n")
    train, valid, description = resolve.resolve_default_corpus(data, log=pytest.fail)
    assert description.startswith("wikitext-2-raw ")
    assert train == [["Alpha is a letter .", "It comes first ."], ["Beta follows ."]]
    assert valid == [["Raw valid text ."]]


def test_default_corpus_downloads_when_missing(tmp_path, fake_zip, monkeypatch):
    use_zip_spec(monkeypatch, fake_zip)
    lines = []
    train, valid, description = resolve.resolve_default_corpus(tmp_path / "data", log=lines.append)
    assert train == [["Alpha is a letter .", "It comes first ."], ["Beta follows ."]]
    assert valid == [["Gamma is third ."]]
    assert len(lines) == 1 and "downloaded" in lines[0]
