"""The ``mlops-operator`` command: one entry point for every role the image plays."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def _cmd_crds(args: argparse.Namespace) -> int:
    from .api.crd import rendered_files

    out_dir = Path(args.dir)
    stale: list[str] = []
    for name, text in rendered_files().items():
        path = out_dir / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run `mlops-operator crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from .manifests import ManifestError, load_paths
    from .api.validation import is_ours, validate_object

    try:
        documents = load_paths(args.paths)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    failed = checked = 0
    for doc in documents:
        if not is_ours(doc.obj):
            continue
        checked += 1
        for error in validate_object(doc.obj):
            failed += 1
            print(f"{doc.where}: {error}", file=sys.stderr)
    print(f"{checked} mlops.dev object(s) checked, {failed} error(s)")
    return EXIT_INVALID if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("crds", help="write the CRDs generated from the models")
    p.add_argument("--dir", default="crds", help="output folder (default: crds)")
    p.add_argument("--check", action="store_true", help="exit 1 when the files differ from the generator's output")
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("validate", help="check mlops.dev manifests offline (files or folders)")
    p.add_argument("paths", nargs="+", help="YAML files or folders")
    p.set_defaults(func=_cmd_validate)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []
"""Other layers add their sub-commands here (train, serve, run, local, demo)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
