"""mlops-operator run: the operator against a Kubernetes cluster."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import threading
from typing import Mapping, Sequence

import kopf

from . import leader
from .client import KubeCluster, load_api_client
from .config import settings_from_env
from .context import Context, install


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-operator run", description=__doc__)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
    p.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="liveness endpoint ('' to disable)")
    p.add_argument("--metrics-port", type=int, default=8000, help="serve Prometheus metrics on this port (0: off)")
    p.add_argument("--metrics-address", default="0.0.0.0", help="address the metrics endpoint listens on (default: all, as in a pod)")
    p.add_argument("--resync-seconds", type=float, default=300.0, help="reconcile everything this often, as a safety net")
    p.add_argument("--workers", type=int, default=4, metavar="N",
                   help="reconciles of each kind running at once (each kind has its own; default 4)")
    p.add_argument("-v", "--verbose", action="store_true")
    leader.add_arguments(p)
    return p


def configure_logging(verbose: bool) -> None:
    """One handler on the root logger, kopf's: each line is printed once (ours propagate to it)."""
    kopf.configure(verbose=verbose)
    logging.getLogger("mlops_operator").setLevel(logging.DEBUG if verbose else logging.INFO)
    # kopf says "Handler ... succeeded" for every watch event at INFO: with thousands of objects that
    # drowns the operator's own lines. Its warnings and errors (tracebacks) still show.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)


def setup(kubeconfig: str | None, namespaces: Sequence[str], resync_seconds: float, workers: int = 4) -> Context:
    """Install the operator context and register the handlers (import side effect)."""
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    ctx = install(Context(KubeCluster(load_api_client(kubeconfig)), settings_from_env(),
                          resync_seconds=resync_seconds, namespaces=tuple(namespaces), workers=workers))
    from . import handlers  # noqa: F401
    return ctx


async def operate(namespaces: Sequence[str], liveness: str | None, stop_flag: threading.Event | asyncio.Event | None = None,
                  ready_flag: threading.Event | asyncio.Event | None = None) -> None:
    await kopf.operator(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness or None,
        standalone=True,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        identity=operator_identity(),  # type: ignore[arg-type]  (kopf's Identity is a NewType of str)
    )


def operator_identity(env: Mapping[str, str] | None = None) -> str:
    """Who this operator process is, for kopf: the pod's name when known, else host and pid.

    kopf's own default asks the password database for the current user, and the
    image's uid (65532) has no entry there: without this, the operator crashes in
    any pod or container that does not set POD_ID.
    """
    env = os.environ if env is None else env
    return env.get("POD_ID") or env.get("POD_NAME") or f"{socket.gethostname()}/{os.getpid()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.leader_elect and (problems := leader.timings_of(args).problems()):
        parser.error("; ".join(problems))
    configure_logging(args.verbose)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    setup(args.kubeconfig, args.namespace, args.resync_seconds, args.workers)
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_address)  # per-object readiness and phase, reconciles, drift scores and retrains
    if args.leader_elect:  # one replica reconciles, the others stand by (docs/operations.md, High availability)
        asyncio.run(leader.run_elected(load_api_client(args.kubeconfig), args, lambda: operate(args.namespace, args.liveness)))
        return 0
    asyncio.run(operate(args.namespace, args.liveness))
    return 0
