"""``python -m minispanbert.data``: list and download the public data sets.

    python -m minispanbert.data list [--dir data]
    python -m minispanbert.data download NAME [--dir data] [--from PATH] [--force] [--timeout S]

NAME is one of wikitext-2-raw, wikitext-2, wikitext-103-raw, squad-v1.1, sst2, wnut17. ``--from PATH`` installs
from a local copy (the official archive/file, checked by sha256, or an extracted folder) instead of
the network. Every failure ends with one ``error: ...`` line and exit status 1.
"""
from __future__ import annotations

import sys

from minispanbert.engine.cli import Parser
from minispanbert.engine.datasets import (
    DATASETS,
    DEFAULT_DATA_DIR,
    DEFAULT_TIMEOUT_S,
    DownloadError,
    dataset_files,
    dataset_status,
    download,
    install_from,
)


def _list(data_dir: str) -> None:
    rows = []
    for name, spec in DATASETS.items():
        files = dataset_files(name, data_dir)
        source = spec.archive.url if spec.archive else ", ".join(r.url for r in spec.remotes.values())
        folder = str(next(iter(files.values())).parent)
        rows.append((name, dataset_status(name, data_dir), folder, spec.description, source))
    width = max(len(r[0]) for r in rows)
    print(f"{'name':<{width}}  {'status':<8}  folder")
    for name, status, folder, description, source in rows:
        print(f"{name:<{width}}  {status:<8}  {folder}")
        print(f"{'':<{width}}  {'':<8}  {description}; files: {', '.join(DATASETS[name].files.values())}")
        print(f"{'':<{width}}  {'':<8}  from {source}")


def main(argv: list[str] | None = None) -> None:
    parser = Parser("python -m minispanbert.data",
                    "List and download the public data sets (WikiText, SQuAD, SST-2, WNUT-17) into a data folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="show the data sets, whether they are present, and where they go")
    p_list.add_argument("--dir", default=DEFAULT_DATA_DIR, help="data folder")
    p_dl = sub.add_parser(
        "download", help="fetch a data set (sha256-checked, atomic) or install it --from a local copy"
    )
    p_dl.add_argument("name", choices=list(DATASETS))
    p_dl.add_argument("--dir", default=DEFAULT_DATA_DIR, help="data folder")
    p_dl.add_argument(
        "--from", dest="source", metavar="PATH", help="install from this local archive, file or folder"
    )
    p_dl.add_argument("--force", action="store_true", help="download again even if present")
    p_dl.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="network timeout in seconds"
    )
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            _list(args.dir)
        elif args.source is not None:
            install_from(args.name, args.source, args.dir)
        else:
            download(args.name, args.dir, force=args.force, timeout=args.timeout)
    except (ValueError, DownloadError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
