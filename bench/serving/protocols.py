#!/usr/bin/env python
"""V2 protocol rows: REST JSON, REST with the binary data extension, and gRPC, ours against KServe and MLServer.

All servers (pinned to CPU 0) stay up; one Python load generator (pinned to
CPU 1; N threads, each with its own keep-alive connection or gRPC channel,
closed loop) measures every (server, protocol) pair in interleaved rounds, so
every pair sees the same drift of a shared machine.  The same client code
builds the requests for every server: FP64 rows as a JSON tensor, as raw
bytes after the JSON header, or as gRPC ``fp64_contents``; answers are decoded
and checked against the in-process model before any load.

    python bench/serving/protocols.py --model heavy --clients 16 --rows 1 --rounds 5 --duration 3

Served per peer: KServe 0.21 (``peers/kserve_sklearn_oip.py``: the SDK's
ModelServer, KServe's sklearn predict) REST V2 JSON and binary, gRPC;
MLServer 1.7 (mlserver-sklearn) REST V2 JSON and gRPC (it has no binary
data extension).  Ours: ``--grpc-port``, defaults otherwise; requests ask for
the ``predict`` output only, as the peers answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "operator"))

import envs  # noqa: E402
import run  # noqa: E402

import grpc  # noqa: E402

from mlops_operator.runtime.v2grpc import grpc_predict_v2_pb2 as pb  # noqa: E402
from mlops_operator.store import ModelStore  # noqa: E402
from mlops_operator.runtime.v2grpc import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402

LENGTH = "Inference-Header-Content-Length"


# -- servers --------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], http_port: int, grpc_port: int, binary: bool,
                 workdir: Path | None = None) -> None:
        self.name, self.proc, self.http_port, self.grpc_port, self.binary, self.workdir = name, proc, http_port, grpc_port, binary, workdir

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _start(name: str, cmd: list[str], http_port: int, grpc_port: int, model: str, binary: bool, env: dict[str, str] | None = None,
           workdir: Path | None = None) -> Server | None:
    pin = ["taskset", "-c", run.SERVER_CPU] if shutil.which("taskset") else []
    proc = subprocess.Popen(pin + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    server = Server(name, proc, http_port, grpc_port, binary, workdir)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            run.log(f"  {name} exited with {proc.returncode}")
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{model}/ready", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.3)
    run.log(f"  {name} not ready after 180 s")
    server.stop()
    return None


def start(kind: str, model: str, info: dict[str, Any], venvs: dict[str, Path]) -> Server | None:
    http_port, grpc_port = run.free_port(), run.free_port()
    if kind == "ours":
        env = dict(os.environ, PYTHONPATH=str(HERE.parents[1] / "operator"))
        cmd = [sys.executable, "-m", "mlops_operator.runtime.server", "--store", str(info["store"]), "--namespace", "bench",
               "--model", model, "--port", str(http_port), "--grpc-port", str(grpc_port)]
        return _start(kind, cmd, http_port, grpc_port, model, True, env)
    if kind == "kserve":
        cmd = [str(venvs[kind] / "bin" / "python"), str(HERE / "peers" / "kserve_sklearn_oip.py"), "--model_name", model,
               "--model_dir", str(info["dir"]), "--http_port", str(http_port), "--grpc_port", str(grpc_port), "--workers", "1",
               "--enable_latency_logging", "false"]
        return _start(kind, cmd, http_port, grpc_port, model, True)
    if kind == "mlserver":
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="mlserver-"))
        shutil.copytree(info["dir"], workdir / model)
        (workdir / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": run.free_port()}))
        cmd = [str(venvs[kind] / "bin" / "mlserver"), "start", str(workdir)]
        return _start(kind, cmd, http_port, grpc_port, model, False, workdir=workdir)
    raise ValueError(kind)


# -- clients --------------------------------------------------------------------------


def _decode(datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BYTES":
        out, k = [], 0
        while k < len(raw):
            (n,) = struct.unpack_from("<I", raw, k)
            out.append(raw[k + 4:k + 4 + n].decode())
            k += 4 + n
        return out
    return np.frombuffer(raw, dtype={"INT64": "<i8", "FP64": "<f8", "INT32": "<i4", "FP32": "<f4"}[datatype]).tolist()


class RestClient:
    """One keep-alive connection; ``binary``: rows as raw bytes after the JSON header, predictions back as raw bytes."""

    def __init__(self, server: Server, model: str, x: np.ndarray, binary: bool, ours: bool) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        self.path = f"/v2/models/{model}/infer"
        tensor: dict[str, Any] = {"name": "input-0", "shape": list(x.shape), "datatype": "FP64"}
        head: dict[str, Any] = {"inputs": [tensor]}
        if ours:
            head["outputs"] = [{"name": "predict", "parameters": {"binary_data": binary}}]
        if binary:
            raw = x.astype("<f8").tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            head["parameters"] = {"binary_data_output": True}
            js = json.dumps(head).encode()
            self.body, self.headers = js + raw, {LENGTH: str(len(js)), "Content-Type": "application/octet-stream"}
        else:
            tensor["data"] = x.reshape(-1).tolist()
            self.body, self.headers = json.dumps(head).encode(), {"Content-Type": "application/json"}

    def __call__(self) -> list[Any]:
        self.conn.request("POST", self.path, body=self.body, headers=self.headers)
        r = self.conn.getresponse()
        payload = r.read()
        if r.status != 200:
            raise RuntimeError(f"{r.status}: {payload[:200]!r}")
        n = int(r.getheader(LENGTH) or len(payload))
        out = json.loads(payload[:n])["outputs"][0]
        if "data" in out:
            return list(np.asarray(out["data"]).reshape(-1).tolist())
        return _decode(out["datatype"], payload[n:n + out["parameters"]["binary_data_size"]])

    def close(self) -> None:
        self.conn.close()


class GrpcClient:
    """One channel (its own TCP connection); rows as ``fp64_contents``, as every V2 gRPC server reads them."""

    def __init__(self, server: Server, model: str, x: np.ndarray, ours: bool) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.req = pb.ModelInferRequest(model_name=model)
        self.req.inputs.add(name="input-0", datatype="FP64", shape=list(x.shape)).contents.fp64_contents.extend(x.reshape(-1).tolist())
        if ours:
            self.req.outputs.add(name="predict")

    def __call__(self) -> list[Any]:
        resp = self.stub.ModelInfer(self.req, timeout=30)
        o = resp.outputs[0]
        if resp.raw_output_contents:
            return _decode(o.datatype, resp.raw_output_contents[0])
        c = o.contents
        for field in ("int64_contents", "int_contents", "fp64_contents", "fp32_contents", "bool_contents"):
            if len(getattr(c, field)):
                return list(getattr(c, field))
        return [v.decode() for v in c.bytes_contents]

    def close(self) -> None:
        self.channel.close()


def make_client(server: Server, protocol: str, model: str, x: np.ndarray) -> Callable[[], list[Any]] | Any:
    ours = server.name == "ours"
    if protocol == "grpc":
        return GrpcClient(server, model, x, ours)
    return RestClient(server, model, x, protocol == "rest-binary", ours)


def load(server: Server, protocol: str, model: str, x: np.ndarray, clients: int, duration: float) -> tuple[float, float, float, int]:
    """Closed loop: ``clients`` threads for ``duration`` s; req/s, p50 ms, p99 ms, errors."""
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop_at = time.monotonic() + duration
    start_gate = threading.Barrier(clients)

    def worker(i: int) -> None:
        c = make_client(server, protocol, model, x)
        try:
            c()  # connect outside the measured window
            start_gate.wait()
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    c()
                    lat[i].append(time.perf_counter() - t0)
                except Exception:
                    errors[i] += 1
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    elapsed = max(time.monotonic() - t0, duration)
    all_lat = sorted(v for xs in lat for v in xs)
    if not all_lat:
        return 0.0, float("nan"), float("nan"), sum(errors)
    q = lambda p: all_lat[min(len(all_lat) - 1, int(p * len(all_lat)))] * 1e3  # noqa: E731
    return len(all_lat) / elapsed, q(0.50), q(0.99), sum(errors)


# -- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="heavy")
    p.add_argument("--servers", default="ours,kserve,mlserver")
    p.add_argument("--protocols", default="rest-json,rest-binary,grpc")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "mlops-operator" / "bench"))
    p.add_argument("--no-setup", action="store_true", help="skip peers that are not installed instead of installing them")
    args = p.parse_args(argv)
    cache = Path(args.cache).expanduser()
    info = run.prepare_models(cache)[args.model]
    venvs = {k: v for k in ("kserve", "mlserver") if (v := envs.ensure(cache, k, not args.no_setup)) is not None}
    if hasattr(os, "sched_setaffinity") and shutil.which("taskset"):
        os.sched_setaffinity(0, {int(run.CLIENT_CPU)})  # the load generator stays off the servers' CPU
    x = info["X"][: args.rows]
    want = ModelStore(info["store"]).load_model("bench", args.model, "v1").predict(x).tolist()
    servers: list[Server] = []
    pairs: list[tuple[Server, str]] = []
    try:
        for kind in args.servers.split(","):
            if kind != "ours" and kind not in venvs:
                run.log(f"{kind}: not installed, skipped")
                continue
            s = start(kind, args.model, info, venvs)
            if s is None:
                continue
            servers.append(s)
            for proto in args.protocols.split(","):
                if proto == "rest-binary" and not s.binary:
                    run.log(f"  {kind}: no binary data extension, {proto} skipped")
                    continue
                c = make_client(s, proto, args.model, x)
                try:
                    got = c()
                except Exception as exc:
                    run.log(f"  {kind} {proto}: failed: {exc}")
                    continue
                finally:
                    c.close()
                if [int(v) for v in got] != want:
                    run.log(f"  {kind} {proto}: predictions differ: {got} != {want}")
                    continue
                pairs.append((s, proto))
        samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {(s.name, pr): [] for s, pr in pairs}
        for i in range(args.rounds):
            for s, proto in pairs:
                rps, p50, p99, errs = load(s, proto, args.model, x, args.clients, args.duration)
                samples[(s.name, proto)].append((rps, p50, p99))
                run.log(f"round {i}: {s.name:9s} {proto:12s} {rps:9.1f} req/s p50 {p50:8.2f} ms p99 {p99:8.2f} ms errors {errs}")
        print(f"\n{args.model}, {args.clients} clients, {args.rows} rows/request, {args.rounds} interleaved rounds of "
              f"{args.duration:g} s (medians; ratio: median of per-round req/s ratios against ours on the same protocol)\n")
        print("| server | protocol | req/s | p50 ms | p99 ms | ours / server |\n| --- | --- | ---: | ---: | ---: | ---: |")
        for (name, proto), xs in samples.items():
            ours = samples.get(("ours", proto))
            ratio = statistics.median(o[0] / v[0] for o, v in zip(ours, xs) if v[0] > 0) if ours and name != "ours" else None
            print(f"| {name} | {proto} | {statistics.median(v[0] for v in xs):.1f} | {statistics.median(v[1] for v in xs):.2f} | "
                  f"{statistics.median(v[2] for v in xs):.2f} | {'' if ratio is None else f'{ratio:.2f}'} |")
    finally:
        for s in servers:
            s.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
