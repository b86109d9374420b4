"""python -m minispanbert.data download sst2 | wnut17 (and --from): SST-2's zip has no published
checksum, so its unpacked files are checked by row count; WNUT-17's files by sha256. No network:
the table's addresses are pointed at file:// copies in tmp_path."""
import dataclasses
import importlib
import zipfile

import pytest

from minispanbert.data import __main__ as cli
from minispanbert.engine.datasets import DATASETS, Remote, dataset_status, download, install_from

download_module = importlib.import_module("minispanbert.engine.datasets")

ROWS = {"train.tsv": 3, "dev.tsv": 2, "test.tsv": 1}


def sst2_zip(tmp_path, train_rows=3, folder="src"):
    path = tmp_path / folder / "SST-2.zip"
    path.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("SST-2/train.tsv", "sentence\tlabel\n" + "a fine film \t1\n" * train_rows)
        zf.writestr("SST-2/dev.tsv", "sentence\tlabel\ndull \t0\ngood \t1\n")
        zf.writestr("SST-2/test.tsv", "index\tsentence\n0\tuneasy mishmash .\n")
        zf.writestr("SST-2/original/README.txt", "not extracted")
    return path


@pytest.fixture
def fake_sst2(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "SST2_ROWS", ROWS)
    archive = sst2_zip(tmp_path)
    spec = DATASETS["sst2"]
    monkeypatch.setitem(DATASETS, "sst2", dataclasses.replace(spec, archive=Remote(archive.as_uri(), None, 1)))
    return archive


def test_sst2_download_checks_row_counts(tmp_path, fake_sst2):
    folder = download("sst2", tmp_path / "data", log=lambda _m: None)
    assert sorted(p.name for p in folder.iterdir()) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert dataset_status("sst2", tmp_path / "data") == "present"


def test_sst2_with_other_row_counts_is_refused_and_nothing_installed(tmp_path, fake_sst2, capsys):
    other = sst2_zip(tmp_path, train_rows=2, folder="other")
    with pytest.raises(SystemExit) as exc:
        cli.main(["download", "sst2", "--from", str(other), "--dir", str(tmp_path / "data")])
    assert str(exc.value.code) == (f"error: {other}: train.tsv has 2 sentences, GLUE's SST-2 has 3: it is not the "
                                   "official file; download SST-2.zip again")
    assert dataset_status("sst2", tmp_path / "data") == "missing"


def test_sst2_from_extracted_folder(tmp_path, fake_sst2):
    with zipfile.ZipFile(fake_sst2) as zf:
        zf.extractall(tmp_path / "unzipped")
    install_from("sst2", tmp_path / "unzipped", tmp_path / "data", log=lambda _m: None)
    assert dataset_status("sst2", tmp_path / "data") == "present"


def test_wnut17_files_are_pinned_by_sha256(tmp_path):
    spec = DATASETS["wnut17"]
    assert set(spec.remotes) == set(spec.files.values()) and all(len(r.sha256) == 64 for r in spec.remotes.values())
    assert all(r.url.startswith("https://raw.githubusercontent.com/leondz/emerging_entities_17/") for r in spec.remotes.values())
    src = tmp_path / "src"
    src.mkdir()
    (src / "wnut17train.conll").write_text("Paris\tB-location\n")
    with pytest.raises(ValueError, match="sha256 .* differs from the official wnut17train.conll"):
        install_from("wnut17", src, tmp_path / "data", log=lambda _m: None)
    assert dataset_status("wnut17", tmp_path / "data") == "missing"


def test_wnut17_download_over_file_urls(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    remotes = {}
    for name in DATASETS["wnut17"].files.values():
        (src / name).write_text(f"{name}\tO\n")
        remotes[name] = Remote((src / name).as_uri(), download_module.sha256_file(src / name), 10)
    monkeypatch.setitem(DATASETS, "wnut17", dataclasses.replace(DATASETS["wnut17"], remotes=remotes))
    download("wnut17", tmp_path / "data", log=lambda _m: None)
    assert dataset_status("wnut17", tmp_path / "data") == "present"
