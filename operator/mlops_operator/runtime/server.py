"""``mlops-operator serve``: one model version over KServe V1 and Open Inference Protocol V2 (REST; gRPC when asked).

``mlops-operator serve --store DIR --model NAME [...]`` (see :func:`build_parser`
and ``docs/serving.md``).  This module is the command line only: it parses and
checks the flags, listens (:mod:`.http_engine`, and :mod:`.grpc_server`
with ``--grpc-port``), loads the version
(:mod:`.model_loading`), installs it in the application (:mod:`.handlers`,
routed by :mod:`.routing`) and drains on SIGTERM/SIGINT.

Exit codes: 0 after a clean shutdown, 2 when the model cannot be loaded
(missing, digest mismatch, untrusted types, warm-up failure) or the address
cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import signal
import sys
from typing import Callable

from .handlers import ServerApp
from .feedback import DEFAULT_MAX_BYTES
from .http_engine import HttpServer, Limits
from .model_loading import StartupError, load_model, warm_up

EXIT_OK, EXIT_START = 0, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops-operator serve", description="Serve one model version (KServe V1 and Open Inference Protocol V2).")
    p.add_argument("--store", required=True, help="model store: a directory, file:///path or s3://bucket/prefix "
                   "(an s3:// version is copied, verified, under $MLOPS_MODEL_CACHE first)")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--namespace", default="default", help="namespace in the store (default: default)")
    p.add_argument("--version", default=None, help="version to serve (default: the newest in the store)")
    p.add_argument("--sha256", default=None, help="expected sha256 of model.skops (hex or sha256:hex)")
    p.add_argument("--allow-module", action="append", default=[], metavar="PREFIX",
                   help="also trust stored types from this module prefix; repeatable (the same list train --allow-module got)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in pods)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--grpc-port", type=int, default=None,
                   help="also serve Open Inference Protocol V2 over gRPC on this port (default: off; 0 picks a free one)")
    p.add_argument("--max-batch-size", type=int, default=1024, help="most rows in one predict call (default 1024)")
    p.add_argument("--max-batch-delay-ms", type=float, default=2.0, help="longest wait for a batch to fill (default 2)")
    p.add_argument("--max-queue-rows", type=int, default=None,
                   help="most rows waiting for the model; beyond, 503 with Retry-After (default 2 x --max-batch-size)")
    p.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="largest request body, else 413 (default 4 MiB)")
    p.add_argument("--max-header-bytes", type=int, default=Limits.max_header_bytes,
                   help=f"largest request line + header block, else 431 (default {Limits.max_header_bytes})")
    p.add_argument("--request-read-seconds", type=float, default=Limits.read_seconds,
                   help=f"longest time to receive one whole request once it started, else 408 (default {Limits.read_seconds:g})")
    p.add_argument("--keep-alive-seconds", type=float, default=Limits.keep_alive_seconds,
                   help=f"idle connections are closed after this long (default {Limits.keep_alive_seconds:g})")
    p.add_argument("--max-connections", type=int, default=Limits.max_connections,
                   help=f"most open client connections; more are answered 503 and closed (default {Limits.max_connections})")
    p.add_argument("--no-drift-sensor", action="store_true", help="do not count inputs in the reference bins")
    p.add_argument("--no-feedback", action="store_true", help="disable the feedback endpoint and prediction memory")
    p.add_argument("--feedback-dir", default=None, help="append labelled rows as CSV under this folder, "
                   "or write them to s3://bucket/prefix (one new object per flush)")
    p.add_argument("--feedback-keep-seconds", type=float, default=3600.0, help="how long a prediction id takes a label (default 3600)")
    p.add_argument("--feedback-max-pending", type=int, default=100_000, help="most predicted rows remembered (default 100000)")
    p.add_argument("--feedback-max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"most memory the remembered predictions hold (default {DEFAULT_MAX_BYTES // 2**20} MiB)")
    p.add_argument("--no-compiled", action="store_true",
                   help="serve model.skops even when the version holds a verified compiled model (model.onnx)")
    p.add_argument("--route-to", default=None, metavar="URL",
                   help="during a rollout: the challenger's base URL (http://host[:port]); see --route-mode")
    p.add_argument("--route-mode", choices=("canary", "shadow"), default="canary",
                   help="canary: forward --route-weight of predict requests; shadow: copy every one (default canary)")
    p.add_argument("--route-weight", type=float, default=0.0,
                   help="canary: the exact share of predict requests the challenger answers, 0 to 1 (default 0)")
    p.add_argument("--route-timeout-seconds", type=float, default=2.0,
                   help="longest wait for the challenger before the champion answers itself (default 2)")
    p.add_argument("--grace-seconds", type=float, default=20.0, help="longest wait for in-flight requests on SIGTERM (default 20)")
    return p


def _positive(x: float) -> bool:
    return x > 0 and not math.isnan(x)


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if not 1 <= a.max_batch_size <= 1_000_000:
        p.error("--max-batch-size must be between 1 and 1000000")
    if not (0 <= a.max_batch_delay_ms <= 60_000) or math.isnan(a.max_batch_delay_ms):
        p.error("--max-batch-delay-ms must be between 0 and 60000")
    if a.max_queue_rows is None:
        a.max_queue_rows = 2 * a.max_batch_size
    if a.max_queue_rows < 1:
        p.error("--max-queue-rows must be at least 1")
    if a.max_body_bytes < 64:
        p.error("--max-body-bytes must be at least 64")
    if a.max_header_bytes < 1024:
        p.error("--max-header-bytes must be at least 1024")
    if not (_positive(a.request_read_seconds) and _positive(a.keep_alive_seconds)):
        p.error("--request-read-seconds and --keep-alive-seconds must be positive")
    if a.max_connections < 1:
        p.error("--max-connections must be at least 1")
    if not 0 <= a.port <= 65535:
        p.error("--port must be between 0 and 65535")
    if a.grpc_port is not None and not 0 <= a.grpc_port <= 65535:
        p.error("--grpc-port must be between 0 and 65535")
    if a.grpc_port is not None and a.grpc_port == a.port != 0:
        p.error("--grpc-port must differ from --port")
    if a.route_to is not None and not re.fullmatch(r"http://[A-Za-z0-9.\-\[\]:]+(:[0-9]+)?/?", a.route_to):
        p.error("--route-to must be a base URL like http://name.namespace.svc:80")
    if not 0 <= a.route_weight <= 1 or math.isnan(a.route_weight):
        p.error("--route-weight must be between 0 and 1")
    if not _positive(a.route_timeout_seconds):
        p.error("--route-timeout-seconds must be positive")
    if a.feedback_keep_seconds <= 0 or a.feedback_max_pending < 0 or a.feedback_max_bytes < 0:
        p.error("--feedback-keep-seconds must be positive, --feedback-max-pending and --feedback-max-bytes not negative")


def _limits(a: argparse.Namespace) -> Limits:
    return Limits(
        max_body_bytes=a.max_body_bytes, max_header_bytes=a.max_header_bytes, read_seconds=a.request_read_seconds,
        keep_alive_seconds=a.keep_alive_seconds, max_connections=a.max_connections,
    )


async def serve(args: argparse.Namespace, started: Callable[[int], None] | None = None) -> int:
    """Listen at once (liveness), then load the model (readiness); run until SIGTERM/SIGINT."""
    app = ServerApp(args.model, args.namespace, args.version, max_body_bytes=args.max_body_bytes)
    http = HttpServer(app, _limits(args))
    try:
        port = await http.start(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_START
    grpc_server = None
    if args.grpc_port is not None:
        from .grpc_server import GrpcServer  # grpc is loaded only when asked for

        grpc_server = GrpcServer(app, max_message_bytes=args.max_body_bytes, max_concurrent_rpcs=args.max_connections)
        try:
            grpc_port = await grpc_server.start(args.host, args.grpc_port)
        except OSError as exc:
            await http.close()
            print(f"error: cannot listen for gRPC on {args.host}:{args.grpc_port}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_START
        print(f"gRPC (inference.GRPCInferenceService) on {args.host}:{grpc_port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        model = await asyncio.to_thread(
            load_model, args.store, args.namespace, args.model, args.version, args.sha256, args.allow_module,
            not args.no_compiled,
        )
        schema = await asyncio.to_thread(warm_up, model)
        model.trim_memory()
    except StartupError as exc:
        await http.close()
        if grpc_server is not None:
            await grpc_server.stop(0)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_START
    app.install(
        model, schema, max_batch_size=args.max_batch_size, max_batch_delay=args.max_batch_delay_ms / 1000.0,
        max_queue_rows=args.max_queue_rows, drift_sensor=not args.no_drift_sensor, feedback=not args.no_feedback,
        feedback_keep_seconds=args.feedback_keep_seconds, feedback_max_pending=args.feedback_max_pending,
        feedback_dir=args.feedback_dir,
    )
    if app.memory is not None:
        app.memory.max_bytes = args.feedback_max_bytes
    if args.route_to:
        from .router import Router

        app.router = Router(args.route_to, args.route_mode, args.route_weight, timeout=args.route_timeout_seconds)
        print(f"routing: {args.route_mode} to {args.route_to}"
              + (f", weight {args.route_weight:g}" if args.route_mode == "canary" else ""), file=sys.stderr, flush=True)
    print(
        f"serving {model.namespace}/{model.name} version {model.version} on http://{args.host}:{port} "
        f"(missing values {'allowed' if schema.allow_missing else 'rejected'}, "
        f"drift sensor {'on' if app.metrics.drift_sensor else 'off'}, "
        f"inference {model.inference}{'' if model.inference_reason is None else ': ' + model.inference_reason})",
        file=sys.stderr, flush=True,
    )
    if started is not None:
        started(port)
    await stop.wait()
    app.begin_shutdown()
    if grpc_server is not None:
        await asyncio.gather(http.shutdown(args.grace_seconds), grpc_server.stop(args.grace_seconds))
    else:
        await http.shutdown(args.grace_seconds)
    await app.close()
    return EXIT_OK


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return asyncio.run(serve(args))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
