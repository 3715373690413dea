"""``mlops-operator local``: run manifests on this machine with the operator's own controllers."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from ..api.validation import is_ours, validate_object
from ..controllers.settings import Settings
from ..manifests import ManifestError, load_paths
from ..store import parse_store_uri
from .cluster import RecordedEvent
from .manager import LocalManager
from .view import LiveView, render


def default_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mlops-operator" / "local"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-operator local", description=__doc__)
    p.add_argument("paths", nargs="+", help="manifest files or folders")
    p.add_argument("--root", type=Path, default=None, help=f"model store, feedback and logs (default: {default_root()})")
    p.add_argument("--store", default="", help="the model store: file:///path or s3://bucket/prefix "
                   "(credentials and endpoint from AWS_* variables; default: <root>/store)")
    p.add_argument("--feedback-store", default="", help="where servers write feedback: s3://bucket/prefix (default: <root>/feedback)")
    p.add_argument("--namespace", default="default", help="namespace for objects that name none")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def local_settings(store: str, feedback: str) -> tuple[Settings, Path | None]:
    """Settings for ``--store`` / ``--feedback-store``, and the folder of a ``file://`` store; ValueError names a bad URI."""
    store_uri = parse_store_uri(store) if store else None
    if store_uri is not None and store_uri.scheme == "pvc":
        raise ValueError("--store: pvc:// claims exist only in a cluster; use file:///path or s3://bucket/prefix")
    if feedback and not feedback.startswith("s3://"):
        raise ValueError("--feedback-store: use s3://bucket/prefix (feedback files go under --root otherwise)")
    if feedback:
        parse_store_uri(feedback)
    s3 = str(store_uri) if store_uri is not None and store_uri.is_s3 else ""
    store_dir = Path(store_uri.path) if store_uri is not None and store_uri.scheme == "file" else None
    return Settings(store_uri=s3, feedback_uri=feedback), store_dir


def load_valid(paths: Sequence[str], err=sys.stderr) -> tuple[list[dict], int]:
    """The valid mlops.dev objects; each invalid one is reported with its field path and left out."""
    docs = load_paths(paths)
    good, bad = [], 0
    for doc in docs:
        if not is_ours(doc.obj):
            print(f"{doc.where}: not an mlops.dev object, ignored locally", file=err)
            continue
        problems = validate_object(doc.obj)
        for problem in problems:
            print(f"{doc.where}: {problem}", file=err)
        if problems:
            bad += 1
        else:
            good.append(doc.obj)
    return good, bad


async def run_local(manager: LocalManager, duration: float | None, view: LiveView | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration:
        loop.call_later(duration, stop.set)

    def on_event(ev: RecordedEvent) -> None:
        if view:
            view.note(f"{ev.time:%H:%M:%S} {ev.type:7} {ev.kind}/{ev.name} {ev.reason}: {ev.message}")

    manager.cluster.event_listeners.append(on_event)

    announced: set[tuple[str, str]] = set()

    def on_tick() -> None:
        for (ns, name), proxy in manager.executor.services.items():
            if (ns, name) not in announced and proxy.port:
                announced.add((ns, name))
                line = f"service {ns}/{name} listens on http://127.0.0.1:{proxy.port}"
                view.note(line) if view else print(line, flush=True)
        if view:
            view.show(render(manager.objects(), manager.executor.service_address))

    await manager.run(stop, on_tick)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        objs, bad = load_valid(args.paths)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not objs:
        print("nothing to run", file=sys.stderr)
        return 1
    root = (args.root or default_root()).resolve()
    try:
        settings, store_dir = local_settings(args.store, args.feedback_store)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manager = LocalManager(root, settings, store_dir=store_dir)
    atexit.register(manager.processes.kill_all_now)
    manager.apply(objs, args.namespace)
    print(f"running {len(objs)} object(s) locally; store and logs under {root}; Ctrl-C stops everything")
    asyncio.run(run_local(manager, args.duration, LiveView()))
    return 1 if bad else 0
