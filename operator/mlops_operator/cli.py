"""mlops-operator: one command for every role the image plays (operator, trainer, server, local runner)."""

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


def _cmd_runs(args: argparse.Namespace) -> int:
    import json

    from .runs import read_versions, render, runs_table
    from .store import open_store

    root = Path(args.root) if args.root else None
    if root is None and not args.store:
        from .local.main import default_root

        root = default_root()
    try:
        store = open_store(args.store or str(root / "store"))  # type: ignore[operator]
        versions = read_versions(store, args.namespace, args.model)
    except ValueError as exc:
        print(f"error: --store: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    objects: list[dict] = []
    if args.cluster:
        objects = _cluster_objects(args.namespace, args.kubeconfig)
    elif root is not None and (root / "objects.json").is_file():
        objects = [o for o in json.loads((root / "objects.json").read_text()).get("items", [])
                   if (o.get("metadata") or {}).get("namespace", "default") == args.namespace]
    tjs = [o for o in objects if o.get("kind") == "TrainingJob"]
    mds = [o for o in objects if o.get("kind") == "ModelDeployment"]
    rows = runs_table(versions, tjs, mds, args.model)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(render(rows))
    else:
        print(f"no runs of model {args.model!r} in namespace {args.namespace}", file=sys.stderr)
    return EXIT_OK if rows else EXIT_INVALID


def _cluster_objects(namespace: str, kubeconfig: str | None) -> list[dict]:
    """The TrainingJobs and ModelDeployments of a namespace, from the API server of the kubeconfig (or the pod's)."""
    import asyncio

    from .controllers.cluster import MODEL_DEPLOYMENTS, TRAINING_JOBS
    from .k8s.client import KubeCluster, load_api_client

    async def read() -> list[dict]:
        cluster = KubeCluster(load_api_client(kubeconfig))
        return [*await cluster.list(TRAINING_JOBS, namespace), *await cluster.list(MODEL_DEPLOYMENTS, namespace)]

    return asyncio.run(read())


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

    p = sub.add_parser("runs", help="the versions of a model side by side: lineage, trigger, data, params, metrics, gate, state")
    p.add_argument("model", help="the model (spec.model of its TrainingJobs)")
    p.add_argument("--store", default="", help="the model store: a folder, file:///path or s3://bucket/prefix "
                   "(default: the embedded runner's, <root>/store)")
    p.add_argument("--root", default="", help="the embedded runner's folder, whose objects.json says what served "
                   "(default: the one `mlops-operator local` uses)")
    p.add_argument("--namespace", default="default", help="namespace of the model (default: default)")
    p.add_argument("--cluster", action="store_true", help="read TrainingJobs and ModelDeployments from the API server")
    p.add_argument("--kubeconfig", default=None, help="with --cluster: the kubeconfig (default: in-cluster, then ~/.kube/config)")
    p.add_argument("--json", action="store_true", help="one JSON object per version, for scripts")
    p.set_defaults(func=_cmd_runs)

    for name, target, text in _DELEGATED:
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(target))
    return parser


_DELEGATED = (
    ("train", "mlops_operator.runtime.trainer", "train, evaluate, gate and store one model version (in a Job)"),
    ("serve", "mlops_operator.runtime.server", "serve one model version over KServe V1 and Open Inference V2"),
    ("run", "mlops_operator.k8s.main", "run the operator against a Kubernetes cluster"),
    ("local", "mlops_operator.local.main", "run manifests on this machine: no cluster needed"),
    ("demo", "mlops_operator.local.demo", "the whole loop on a real data set with injected drift"),
)
"""Roles that own their flags: ``mlops-operator ROLE ARGS`` calls ``ROLE_MODULE.main(ARGS)``.

Imported only when used, so ``validate`` never pays for scikit-learn or kopf."""


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(importlib.import_module(module).main(list(args.rest)) or 0)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in {name for name, _, _ in _DELEGATED}:
        # Hand everything after the role to it untouched, --help included.
        return int(_delegate(dict((n, m) for n, m, _ in _DELEGATED)[argv[0]])(argparse.Namespace(rest=argv[1:])))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
