#!/usr/bin/env python
"""Serving benchmark: ``mlops-operator serve`` against KServe, MLServer and a bare FastAPI app.

    python bench/serving/run.py [--duration 8] [--models heavy,light] [--clients 1,16] [--rows 1,100]
                                [--servers ours,ours-uvicorn,ours-nosensor,kserve,mlserver,fastapi] [--json results.json]
                                [--cache ~/.cache/mlops-operator/bench] [--no-setup]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``); without it the script says
so and exits 0.  The peers are installed on first use into their own venvs
under the cache folder (``pip install kserve``; ``mlserver mlserver-sklearn
"uvloop<0.22"``; ``fastapi uvicorn[standard]``), each with the scikit-learn and
numpy versions of this interpreter so they load the same fitted pipeline; a
peer that cannot be installed or started is reported and skipped.

"ours" runs with its defaults (batches of at most 64 rows, 2 ms delay),
"ours-nosensor" adds ``--no-drift-sensor`` and "ours-batch1024" raises
``--max-batch-size`` to 1024 so concurrent 100-row requests share a call.

Same machine, one server at a time, pinned to CPU 0 with ``taskset``; ``wrk``
(one thread, keep-alive) pinned to CPU 1.  Models: "heavy" is a
RandomForestClassifier (100 trees) on ``make_classification(20000, 20)``,
"light" a LogisticRegression on the same data, both inside the trainer's kind
of pipeline (imputer + scaler in a ColumnTransformer).  Our server loads the
``model.skops`` of a store version; the peers load a joblib dump of the same
fitted object.  KServe, FastAPI and ours get KServe V1 bodies; MLServer, which
only speaks V2, gets the same rows as one FP64 tensor.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "operator"))

PEER_PACKAGES = {
    "kserve": ["kserve"],
    "mlserver": ["mlserver", "mlserver-sklearn", "uvloop<0.22"],
    "fastapi": ["fastapi", "uvicorn[standard]"],
}
ALL_SERVERS = ("ours", "ours-uvicorn", "ours-nosensor", "ours-batch1024", "kserve", "mlserver", "fastapi")
SERVER_CPU, CLIENT_CPU = "0", "1"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- models ---------------------------------------------------------------------


def prepare_models(cache: Path) -> dict[str, Any]:
    """Train (once per library version) and write both formats; returns per model its paths and test rows."""
    import joblib
    import numpy as np
    import sklearn
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mlops_operator.drift.profile import build_reference
    from mlops_operator.store import ModelStore

    root = cache / f"models-sklearn-{sklearn.__version__}"
    store = ModelStore(root / "store")
    X, y = make_classification(n_samples=20000, n_features=20, n_informative=10, random_state=0)
    X = X.astype(np.float64)
    out: dict[str, Any] = {}
    for name, est in (
        ("heavy", RandomForestClassifier(n_estimators=100, random_state=0)),
        ("light", LogisticRegression(max_iter=1000)),
    ):
        mdir = root / "peers" / name
        if not (mdir / "model.joblib").exists() or not store.exists("bench", name, "v1"):
            log(f"training {name} ...")
            prepare = ColumnTransformer(
                [("numeric", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), list(range(20)))],
                remainder="drop", sparse_threshold=0.0,
            )
            pipe = Pipeline([("prepare", prepare), ("model", est)]).fit(X, y)
            names = [f"f{i}" for i in range(20)]
            reference = build_reference({n: X[:, i] for i, n in enumerate(names)}, set(), pipe.predict(X), "classification")
            meta = {
                "model": name, "version": "v1", "namespace": "bench", "task": "classification", "target": "y",
                "features": [{"name": n, "dtype": "float64", "kind": "numeric"} for n in names],
                "classes": [int(c) for c in pipe.classes_], "metrics": {}, "baseline": {"errorRate": 0.1},
            }
            store.write_version("bench", name, "v1", sio.dumps(pipe), meta, reference)
            mdir.mkdir(parents=True, exist_ok=True)
            joblib.dump(pipe, mdir / "model.joblib")
            (mdir / "model-settings.json").write_text(json.dumps({
                "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }))
        pipe = store.load_model("bench", name, "v1")
        out[name] = {"pipe": pipe, "dir": mdir, "store": root / "store", "X": X[-200:]}
    return out


def predict_floor(pipe: Any, X: Any, rows: int, repeat: int = 30) -> float:
    """Median seconds of one in-process predict call on ``rows`` rows."""
    x = X[:rows]
    pipe.predict(x)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        pipe.predict(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# -- peers ----------------------------------------------------------------------


def ensure_venv(cache: Path, peer: str, setup: bool) -> Path | None:
    import numpy
    import sklearn

    venv = cache / "venvs" / peer
    marker = venv / ".installed"
    if marker.exists():
        return venv
    if not setup:
        return None
    log(f"installing {peer} into {venv} ...")
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=600)
        pkgs = [f"scikit-learn=={sklearn.__version__}", f"numpy=={numpy.__version__}", "joblib", *PEER_PACKAGES[peer]]
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pkgs], capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"  {peer}: install failed: {exc}")
        return None
    if r.returncode != 0:
        log(f"  {peer}: pip install failed:\n{r.stderr[-2000:]}")
        return None
    marker.write_text(" ".join(pkgs) + "\n")
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    protocol: str  # "v1" or "v2"
    model: str
    workdir: Path | None = None

    def url(self) -> str:
        if self.protocol == "v2":
            return f"http://127.0.0.1:{self.port}/v2/models/{self.model}/infer"
        return f"http://127.0.0.1:{self.port}/v1/models/{self.model}:predict"


def start_server(kind: str, model: str, info: dict[str, Any], cache: Path, venvs: dict[str, Path],
                 extra_args: list[str] | None = None) -> Running | None:
    port = free_port()
    pin = ["taskset", "-c", SERVER_CPU] if shutil.which("taskset") else []
    env = dict(os.environ)
    workdir = None
    if kind.startswith("ours"):
        env["PYTHONPATH"] = str(REPO / "operator")
        cmd = [sys.executable, "-m", "mlops_operator.runtime.server", "--store", str(info["store"]), "--namespace", "bench",
               "--model", model, "--port", str(port)]
        if kind == "ours-uvicorn":  # the same handlers, routing and defaults on uvicorn (httptools, uvloop)
            if importlib.util.find_spec("uvicorn") is None or importlib.util.find_spec("uvloop") is None:
                log("  ours-uvicorn: needs uvicorn[standard] in this interpreter (pip install -e '.[bench]'); skipped")
                return None
            cmd = [sys.executable, str(HERE / "peers" / "ours_on_uvicorn.py"), str(info["store"]), "bench", model, str(port)]
        if kind == "ours-nosensor":
            cmd.append("--no-drift-sensor")
        if kind == "ours-batch1024":  # the ModelDeployment's spec.server.maxBatchSize, raised from its default 64
            cmd += ["--max-batch-size", "1024"]
        cmd += extra_args or []
        ready, proto = f"/v2/models/{model}/ready", "v1"
    elif kind == "kserve":
        py = venvs[kind] / "bin" / "python"
        cmd = [str(py), str(HERE / "peers" / "kserve_sklearn.py"), "--model_name", model, "--model_dir", str(info["dir"]),
               "--http_port", str(port), "--grpc_port", str(free_port()), "--workers", "1",
               "--enable_latency_logging", "false"]
        ready, proto = f"/v1/models/{model}", "v1"
    elif kind == "mlserver":
        workdir = Path(tempfile.mkdtemp(prefix="mlserver-"))
        shutil.copytree(info["dir"], workdir / model)
        (workdir / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        }))
        cmd = [str(venvs[kind] / "bin" / "mlserver"), "start", str(workdir)]
        ready, proto = f"/v2/models/{model}/ready", "v2"
    elif kind == "fastapi":
        cmd = [str(venvs[kind] / "bin" / "python"), str(HERE / "peers" / "fastapi_baseline.py"), str(info["dir"]), model, str(port)]
        ready, proto = f"/v1/models/{model}", "v1"
    else:
        raise ValueError(kind)
    proc = subprocess.Popen(pin + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    run = Running(kind, proc, port, proto, model, workdir)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-1500:] if proc.stderr else ""
            log(f"  {kind} exited with {proc.returncode}:\n{err}")
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2) as r:
                if r.status == 200:
                    # drain stderr in the background so the server never blocks on a full pipe
                    subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
                    return run
        except OSError:
            pass
        time.sleep(0.3)
    log(f"  {kind} not ready after 180 s")
    stop_server(run)
    return None


def tree_pids(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return out


def peak_rss_mb(pid: int) -> float:
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def stop_server(run: Running) -> None:
    try:
        os.killpg(run.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        run.proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(5)
    if run.workdir is not None:
        shutil.rmtree(run.workdir, ignore_errors=True)


# -- load -----------------------------------------------------------------------


def body_for(proto: str, X: Any, rows: int) -> bytes:
    x = X[:rows]
    if proto == "v2":
        return json.dumps({"inputs": [{"name": "input-0", "shape": [rows, x.shape[1]], "datatype": "FP64",
                                       "data": x.reshape(-1).tolist()}]}).encode()
    return json.dumps({"instances": x.tolist()}).encode()


def check_predictions(run: Running, info: dict[str, Any]) -> bool:
    body = body_for(run.protocol, info["X"], 5)
    req = urllib.request.Request(run.url(), data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            got = json.loads(r.read())
    except OSError as exc:
        log(f"  {run.name}: predict failed: {exc}")
        return False
    preds = got["predictions"] if "predictions" in got else got["outputs"][0]["data"]
    want = info["pipe"].predict(info["X"][:5]).tolist()
    if preds != want:
        log(f"  {run.name}: predictions differ: {preds} != {want}")
        return False
    return True


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")


@dataclass
class Result:
    server: str
    model: str
    clients: int
    rows: int
    req_s: float
    rows_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float = 0.0


def wrk(url: str, body: bytes, clients: int, duration: float, tmp: Path) -> tuple[float, float, float, int]:
    bf = tmp / "body.json"
    bf.write_bytes(body)
    script = tmp / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{bf}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    pin = ["taskset", "-c", CLIENT_CPU] if shutil.which("taskset") else []
    cmd = pin + ["wrk", "-t1", f"-c{clients}", f"-d{max(1, int(round(duration)))}s", "--latency", "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)) if "Requests/sec" in out else 0.0
    p50 = p99 = float("nan")
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "50%":
            p50 = _ms(parts[1])
        elif len(parts) == 2 and parts[0] == "99%":
            p99 = _ms(parts[1])
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors:.*", out)
    if m:
        errors += sum(int(n) for n in re.findall(r"\d+", m.group(0)))
    return rps, p50, p99, errors


# -- report ---------------------------------------------------------------------


def table(results: list[Result]) -> str:
    lines = ["| server | model | clients | rows/request | req/s | rows/s | p50 ms | p99 ms | errors | peak RSS MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r.server} | {r.model} | {r.clients} | {r.rows} | {r.req_s:,.0f} | {r.rows_s:,.0f} | "
                     f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {r.rss_mb:.0f} |")
    return "\n".join(lines)


def ratios(results: list[Result]) -> str:
    ours = {(r.model, r.clients, r.rows): r for r in results if r.server == "ours"}
    lines = ["| vs | model | clients | rows/request | req/s ratio (ours/peer) | p99 ratio (ours/peer) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        o = ours.get((r.model, r.clients, r.rows))
        if o is None or r.server == "ours" or not r.req_s:
            continue
        lines.append(f"| {r.server} | {r.model} | {r.clients} | {r.rows} | {o.req_s / r.req_s:.2f} | "
                     f"{o.p99_ms / r.p99_ms if r.p99_ms else float('nan'):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="seconds of load per cell (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each cell, not counted (default 2)")
    p.add_argument("--models", default="heavy,light")
    p.add_argument("--clients", default="1,16")
    p.add_argument("--rows", default="1,100")
    p.add_argument("--servers", default=",".join(ALL_SERVERS))
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "mlops-operator" / "bench"))
    p.add_argument("--no-setup", action="store_true", help="do not install missing peers; skip them")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found; install it (Debian/Ubuntu: apt-get install -y wrk) and rerun. Skipping the benchmark.")
        return 0
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        log("warning: fewer than 2 CPUs or no taskset: server and load generator are not pinned apart")
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    models = prepare_models(cache)
    servers = [s for s in args.servers.split(",") if s]
    venvs: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for peer in ("kserve", "mlserver", "fastapi"):
        if peer in servers:
            v = ensure_venv(cache, peer, not args.no_setup)
            if v is None:
                skipped[peer] = "not installed"
            else:
                venvs[peer] = v
    clients = [int(c) for c in args.clients.split(",")]
    rows_list = [int(r) for r in args.rows.split(",")]
    results: list[Result] = []
    floors: dict[str, dict[int, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        for model in [m for m in args.models.split(",") if m]:
            info = models[model]
            floors[model] = {r: predict_floor(info["pipe"], info["X"], r) for r in sorted({1, 16, 64, *rows_list})}
            for kind in servers:
                if kind in skipped:
                    continue
                log(f"{model} / {kind}: starting")
                run = start_server(kind, model, info, cache, venvs)
                if run is None:
                    skipped[kind] = "did not start"
                    continue
                try:
                    if not check_predictions(run, info):
                        skipped[kind] = "wrong predictions"
                        continue
                    cell: list[Result] = []
                    for rows in rows_list:
                        body = body_for(run.protocol, info["X"], rows)
                        for c in clients:
                            if args.warmup > 0:
                                wrk(run.url(), body, c, args.warmup, tmp)
                            rps, p50, p99, errs = wrk(run.url(), body, c, args.duration, tmp)
                            r = Result(kind, model, c, rows, rps, rps * rows, p50, p99, errs)
                            log(f"  {kind:14s} {model} c={c:<3d} rows={rows:<4d} {rps:9.1f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errs}")
                            cell.append(r)
                    rss = peak_rss_mb(run.proc.pid)
                    for r in cell:
                        r.rss_mb = rss
                    results.extend(cell)
                finally:
                    stop_server(run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n## Results\n")
    print(table(results))
    print("\n## Ratios\n")
    print(ratios(results))
    print("\n## In-process predict floor (median of one call)\n")
    print("| model | rows | ms per call | calls/s | rows/s |\n| --- | ---: | ---: | ---: | ---: |")
    for model, f in floors.items():
        for rows, sec in sorted(f.items()):
            print(f"| {model} | {rows} | {sec * 1e3:.3f} | {1 / sec:,.0f} | {rows / sec:,.0f} |")
    sensor = {(r.model, r.clients, r.rows): r for r in results if r.server == "ours-nosensor"}
    pairs = [(r, sensor[k]) for r in results if r.server == "ours" and (k := (r.model, r.clients, r.rows)) in sensor]
    if pairs:
        print("\n## Drift sensor cost (req/s with sensor / without)\n")
        print("| model | clients | rows/request | on | off | on/off |\n| --- | ---: | ---: | ---: | ---: | ---: |")
        for on, off in pairs:
            print(f"| {on.model} | {on.clients} | {on.rows} | {on.req_s:,.0f} | {off.req_s:,.0f} | {on.req_s / off.req_s:.3f} |")
    if skipped:
        print("\nSkipped: " + ", ".join(f"{k} ({v})" for k, v in skipped.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "results": [asdict(r) for r in results], "floors": floors, "skipped": skipped,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
