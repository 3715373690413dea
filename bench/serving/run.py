#!/usr/bin/env python
"""Serving benchmark: ``mlops-operator serve`` against KServe and MLServer, interleaved rounds, one command.

    python bench/serving/run.py [--rounds 3] [--duration 3] [--warmup 1] [--models heavy,light]
                                [--cases 1x1,1x16,100x16] [--servers ours,ours-sklearn1.5,kserve,mlserver]
                                [--cache ~/.cache/mlops-operator/bench] [--no-setup] [--json FILE] [--write-readme]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``); without it the script says
so and exits 0.  On first use it installs the peers into their own venvs under
the cache folder (``envs.py``: KServe's ``kserve`` package and MLServer +
mlserver-sklearn, each on scikit-learn >=1.5.1,<1.6, the line KServe's sklearn
server pins; and our run-time dependencies on that same line).  What stands in
for KServe's unpublished ``sklearnserver`` package is ``peers/kserve_sklearn.py``.

Servers (``--servers``):

* ``ours``: ``mlops-operator serve`` with its defaults, on this interpreter's
  scikit-learn; it serves the verified compiled model (``model.onnx``);
* ``ours-sklearn1.5``: the same server in the venv with the peers' scikit-learn,
  serving a version trained by that scikit-learn;
* ``ours-skops``: ``ours`` with ``--no-compiled`` (scikit-learn answers), not in the default list;
* ``ours-nosensor``: ``ours`` with ``--no-drift-sensor``, not in the default list;
* ``kserve``, ``mlserver``: the peers, loading ``model.joblib`` of the model
  trained by their scikit-learn.

Models (``models.py``): heavy = RandomForestClassifier(100 trees), light =
LogisticRegression, both on ``make_classification(20000, 20)`` behind an
imputer + scaler ColumnTransformer, trained once per scikit-learn version.
Cases (``--cases``): ``ROWSxCLIENTS``, rows per request times concurrent
keep-alive clients.

For each model every server is started at once, all pinned to CPU 0 (idle
while not measured), and their predictions are checked; then ``--rounds``
rounds, each measuring every case on every server in turn (the server order
rotates per round) with ``wrk`` (one thread, pinned to CPU 1) for
``--warmup`` seconds not counted and ``--duration`` seconds counted.  Reported:
per server the median req/s with its range over the rounds, median p50 and
p99, and ours over each peer as the median [min, max] of the per-round paired
ratios (both measured minutes apart at most, under the same machine load).
The 1-minute load average is printed with every measurement and summarised
beside the table; servers' RSS before and after the rounds too.
``--write-readme`` replaces the serving table in ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(HERE))

import envs  # noqa: E402

DEFAULT_SERVERS = ("ours", "ours-sklearn1.5", "kserve", "mlserver")
ALL_SERVERS = (*DEFAULT_SERVERS, "ours-skops", "ours-nosensor", "ours-uvicorn")
PEERS = ("kserve", "mlserver")
SERVER_CPU, CLIENT_CPU = "0", "1"
README = REPO / "bench" / "README.md"
BEGIN, END = "<!-- serving-table:begin (python bench/serving/run.py --write-readme) -->", "<!-- serving-table:end -->"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> float:
    return os.getloadavg()[0]


# -- models ---------------------------------------------------------------------


@dataclass
class ModelSet:
    """The models one scikit-learn trained (``models.py``), and the interpreter that trained them."""

    sklearn: str
    python: str
    root: Path
    X: Any
    expected: dict[str, list[Any]]

    @property
    def store(self) -> Path:
        return self.root / "store"

    def peer_dir(self, model: str) -> Path:
        return self.root / "peers" / model

    def compiled(self, model: str) -> str:
        meta = json.loads((self.store / "bench" / model / "v1" / "metadata.json").read_text())
        return str((meta.get("compiled") or {}).get("status"))


def sklearn_of(python: str) -> str:
    out = subprocess.run([python, "-c", "import sklearn; print(sklearn.__version__)"], capture_output=True, text=True, timeout=120)
    return out.stdout.strip()


def model_set(cache: Path, python: str) -> ModelSet:
    """Train (once per scikit-learn version) with ``python`` and load what ``models.py`` wrote."""
    import numpy as np

    version = sklearn_of(python)
    root = cache / f"models-v2-sklearn-{version}"
    if not (root / ".done").exists():
        log(f"training the bench models with scikit-learn {version} ...")
        shutil.rmtree(root, ignore_errors=True)
        env = dict(os.environ, PYTHONPATH=str(REPO / "operator"))
        subprocess.run([python, str(HERE / "models.py"), str(root)], check=True, env=env, timeout=1800)
    return ModelSet(version, python, root, np.load(root / "X.npy"), json.loads((root / "expected.json").read_text()))


def prepare_models(cache: Path) -> dict[str, dict[str, Any]]:
    """This interpreter's models, per name: ``X``, ``expected``, ``store``, ``dir`` (for overload.py and ab.py)."""
    ms = model_set(cache, sys.executable)
    return {m: {"X": ms.X, "expected": ms.expected[m], "store": ms.store, "dir": ms.peer_dir(m), "set": ms}
            for m in ms.expected}


# -- servers --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    protocol: str  # "v1" or "v2"
    model: str
    expected: list[Any] = field(default_factory=list)
    workdir: Path | None = None
    rss_start_mb: float = 0.0

    def url(self) -> str:
        if self.protocol == "v2":
            return f"http://127.0.0.1:{self.port}/v2/models/{self.model}/infer"
        return f"http://127.0.0.1:{self.port}/v1/models/{self.model}:predict"


def start_server(kind: str, model: str, info: dict[str, Any], cache: Path, venvs: dict[str, Path],
                 extra_args: list[str] | None = None) -> Running | None:
    """Start one server on a free port, pinned to CPU 0; None when it cannot start."""
    ms: ModelSet = info["set"]
    port = free_port()
    pin = ["taskset", "-c", SERVER_CPU] if shutil.which("taskset") else []
    env = dict(os.environ)
    workdir = None
    if kind.startswith("ours"):
        env["PYTHONPATH"] = str(REPO / "operator")
        python = str(venvs["ours-sklearn1.5"] / "bin" / "python") if kind == "ours-sklearn1.5" else ms.python
        cmd = [python, "-m", "mlops_operator.runtime.server", "--store", str(ms.store), "--namespace", "bench",
               "--model", model, "--port", str(port)]
        if kind == "ours-uvicorn":  # the same handlers, routing and defaults on uvicorn (httptools, uvloop)
            cmd = [python, str(HERE / "peers" / "ours_on_uvicorn.py"), str(ms.store), "bench", model, str(port)]
        cmd += {"ours-skops": ["--no-compiled"], "ours-nosensor": ["--no-drift-sensor"]}.get(kind, [])
        cmd += extra_args or []
        ready, proto = f"/v2/models/{model}/ready", "v1"
    elif kind == "kserve":
        cmd = [str(venvs[kind] / "bin" / "python"), str(HERE / "peers" / "kserve_sklearn.py"), "--model_name", model,
               "--model_dir", str(ms.peer_dir(model)), "--http_port", str(port), "--grpc_port", str(free_port()),
               "--workers", "1", "--enable_latency_logging", "false"]
        ready, proto = f"/v1/models/{model}", "v1"
    elif kind == "mlserver":
        workdir = Path(tempfile.mkdtemp(prefix="mlserver-"))
        shutil.copytree(ms.peer_dir(model), workdir / model)
        (workdir / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        }))
        cmd = [str(venvs[kind] / "bin" / "mlserver"), "start", str(workdir)]
        ready, proto = f"/v2/models/{model}/ready", "v2"
    else:
        raise ValueError(f"unknown server {kind!r}")
    # MLServer writes its metrics database into the working directory: its own temporary folder, not the checkout.
    proc = subprocess.Popen(pin + cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            cwd=str(workdir) if workdir is not None else None)
    run = Running(kind, proc, port, proto, model, info["expected"], workdir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-1500:] if proc.stderr else ""
            log(f"  {kind}: exited with {proc.returncode}:\n{err}")
            stop_server(run)
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2) as r:
                if r.status == 200:
                    _drain_stderr(proc)
                    run.rss_start_mb = rss_mb(proc.pid)
                    return run
        except OSError:
            pass
        time.sleep(0.25)
    log(f"  {kind}: not ready within 120 s")
    stop_server(run)
    return None


def _drain_stderr(proc: subprocess.Popen[bytes]) -> None:
    """Keep reading a server's stderr in the background, so a chatty server never blocks on a full pipe."""
    import threading

    def read_all() -> None:
        assert proc.stderr is not None
        for _ in proc.stderr:
            pass

    threading.Thread(target=read_all, daemon=True).start()


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            pass
    return pids


def rss_mb(pid: int) -> float:
    """Resident memory of a server and its children (MLServer runs its model in a worker process)."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
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
    if preds != run.expected:
        log(f"  {run.name}: predictions differ: {preds} != {run.expected}")
        return False
    return True


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")


def drain(run: Running, X: Any) -> None:
    """Wait until the requests a finished wrk run left behind are answered (a one-row request queues behind them).

    Otherwise the next run's first requests meet that backlog and a server that
    sheds load (ours) answers some with 503: an artefact of stopping wrk, not load.
    """
    req = urllib.request.Request(run.url(), data=body_for(run.protocol, X, 1), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
    except OSError as exc:
        log(f"  {run.name}: drain request failed: {exc}")


def wrk(url: str, body: bytes, clients: int, duration: float, tmp: Path) -> tuple[float, float, float, int]:
    """req/s, p50 ms, p99 ms and errors of one wrk run (one thread, keep-alive, CPU 1)."""
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
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(m.group(1)) if m else 0.0
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


# -- the run --------------------------------------------------------------------


@dataclass
class Sample:
    server: str
    model: str
    rows: int
    clients: int
    round: int
    req_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    load1: float


def parse_cases(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        rows, _, clients = part.strip().partition("x")
        out.append((int(rows), int(clients)))
    return out


def measure(servers: list[Running], info: dict[str, dict[str, Any]], cases: list[tuple[int, int]], rounds: int,
            duration: float, warmup: float, tmp: Path) -> list[Sample]:
    out: list[Sample] = []
    for rnd in range(rounds):
        order = servers[rnd % len(servers):] + servers[: rnd % len(servers)]
        for rows, clients in cases:
            for r in order:
                body = body_for(r.protocol, info[r.name]["X"], rows)
                if warmup > 0:
                    wrk(r.url(), body, clients, warmup, tmp)
                    drain(r, info[r.name]["X"])
                la = load()
                rps, p50, p99, errs = wrk(r.url(), body, clients, duration, tmp)
                drain(r, info[r.name]["X"])
                out.append(Sample(r.name, r.model, rows, clients, rnd, rps, p50, p99, errs, la))
                log(f"round {rnd} {r.model:5s} {rows:3d} rows x {clients:2d} clients {r.name:16s} {rps:9.1f} req/s "
                    f"p50 {p50:8.2f} ms p99 {p99:8.2f} ms errors {errs} load {la:.1f}")
    return out


def report(samples: list[Sample], rss: dict[tuple[str, str], tuple[float, float]], header: str) -> str:
    lines = [header, "",
             "| model | rows × clients | server | req/s, median [min–max] | p50 ms | p99 ms | errors | ours ÷ this, req/s paired per round |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | --- |"]
    keys = sorted({(s.model, s.rows, s.clients) for s in samples}, key=lambda k: (k[0], k[1], k[2]))
    servers = list(dict.fromkeys(s.server for s in samples))
    for model, rows, clients in keys:
        cell = {name: [s for s in samples if (s.model, s.rows, s.clients, s.server) == (model, rows, clients, name)]
                for name in servers}
        ours = {s.round: s.req_s for s in cell.get("ours", [])}
        for name in servers:
            ss = cell[name]
            if not ss:
                continue
            rps = [s.req_s for s in ss]
            ratio = ""
            if name != "ours" and ours:
                paired = [ours[s.round] / s.req_s for s in ss if s.req_s > 0 and s.round in ours]
                if paired:
                    ratio = f"**{statistics.median(paired):.2f}×** [{min(paired):.2f}–{max(paired):.2f}]"
                else:
                    ratio = "∞ (peer answered nothing)"
            lines.append(f"| {model} | {rows} × {clients} | {name} | {statistics.median(rps):,.0f} [{min(rps):,.0f}–{max(rps):,.0f}] | "
                         f"{statistics.median(s.p50_ms for s in ss):.2f} | {statistics.median(s.p99_ms for s in ss):.1f} | "
                         f"{sum(s.errors for s in ss)} | {ratio} |")
    if rss:
        lines += ["", "Resident memory before → after the rounds (MB):", "",
                  "| model | " + " | ".join(servers) + " |", "| --- |" + " ---: |" * len(servers)]
        for model in dict.fromkeys(k[0] for k in keys):
            cells = []
            for name in servers:
                a, b = rss.get((model, name), (float("nan"), float("nan")))
                cells.append(f"{a:.0f} → {b:.0f}")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    loads = [s.load1 for s in samples]
    lines += ["", f"1-minute load average during the measurements: median {statistics.median(loads):.1f}, "
                  f"range {min(loads):.1f}–{max(loads):.1f} ({os.cpu_count()} CPUs)."]
    return "\n".join(lines)


def predict_floor(ms: ModelSet, models: list[str], repeat: int = 200) -> str:
    """In-process cost of one predict call, compiled model against scikit-learn, on this interpreter's models.

    What the server's model call costs without HTTP, batching or JSON: the
    part of a request the compiled path changes.
    """
    from mlops_operator.runtime.model_loading import load_model

    lines = ["| model | rows | scikit-learn (model.skops) ms | compiled (model.onnx) ms | ratio |", "| --- | ---: | ---: | ---: | ---: |"]
    for model in models:
        paths = {c: load_model(str(ms.store), "bench", model, "v1", None, compiled=c) for c in (False, True)}
        for rows in (1, 100):
            x = ms.X[:rows]
            med = {}
            for compiled, loaded in paths.items():
                loaded.predict(x, True)
                times = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    loaded.predict(x, True)
                    times.append(time.perf_counter() - t)
                med[compiled] = statistics.median(times) * 1e3
            lines.append(f"| {model} | {rows} | {med[False]:.3f} | {med[True]:.3f} | {med[False] / med[True]:.0f}× |")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    doc = README.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{README}: markers {BEGIN!r} … {END!r} not found")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    log(f"wrote the serving table into {README}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--duration", type=float, default=3.0, help="counted seconds per measurement (default 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="uncounted seconds before each measurement (default 1)")
    p.add_argument("--models", default="heavy,light")
    p.add_argument("--cases", default="1x1,1x16,100x16", help="ROWSxCLIENTS, comma-separated (default 1x1,1x16,100x16)")
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help=f"any of {', '.join(ALL_SERVERS)}")
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "mlops-operator" / "bench"))
    p.add_argument("--no-setup", action="store_true", help="do not install missing peers; skip them")
    p.add_argument("--json", default=None, help="also write every sample here")
    p.add_argument("--write-readme", action="store_true", help="replace the serving table in bench/README.md")
    args = p.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk not found; install it (Debian/Ubuntu: apt-get install -y wrk) and rerun. Skipping the benchmark.")
        return 0
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        log("warning: fewer than 2 CPUs or no taskset: servers and load generator are not pinned apart")
    started = time.monotonic()
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    wanted = [s for s in args.servers.split(",") if s]
    unknown = set(wanted) - set(ALL_SERVERS)
    if unknown:
        p.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    venvs: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    on_peer_sklearn = [s for s in wanted if s in (*PEERS, "ours-sklearn1.5")]
    needed = [e for e in envs.ENVS if e in wanted] + (["ours-sklearn1.5"] if on_peer_sklearn else [])
    for env in dict.fromkeys(needed):
        v = envs.ensure(cache, env, not args.no_setup)
        if v is None:
            skipped[env] = "not installed"
        else:
            venvs[env] = v
    ours_set = model_set(cache, sys.executable)
    peer_set = None
    if "ours-sklearn1.5" in venvs:  # that venv has our code's dependencies, so it trains the peers' models too
        peer_set = model_set(cache, str(venvs["ours-sklearn1.5"] / "bin" / "python"))
    else:
        for s in on_peer_sklearn:
            skipped.setdefault(s, "the ours-sklearn1.5 venv, which trains the peers' models, is not installed")
    cases = parse_cases(args.cases)
    samples: list[Sample] = []
    rss: dict[tuple[str, str], tuple[float, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    load_start = os.getloadavg()
    try:
        for model in [m for m in args.models.split(",") if m]:
            info: dict[str, dict[str, Any]] = {}
            running: list[Running] = []
            try:
                for kind in wanted:
                    if kind in skipped:
                        continue
                    ms = peer_set if kind in (*PEERS, "ours-sklearn1.5") else ours_set
                    assert ms is not None
                    info[kind] = {"X": ms.X, "expected": ms.expected[model], "set": ms}
                    log(f"{model}: starting {kind} (scikit-learn {ms.sklearn}, compiled model {ms.compiled(model)})")
                    r = start_server(kind, model, info[kind], cache, venvs)
                    if r is None:
                        skipped[kind] = "did not start"
                    elif not check_predictions(r, info[kind]):
                        skipped[kind] = "wrong predictions"
                        stop_server(r)
                    else:
                        running.append(r)
                samples += measure(running, info, cases, args.rounds, args.duration, args.warmup, tmp)
                for r in running:
                    rss[(model, r.name)] = (r.rss_start_mb, rss_mb(r.proc.pid))
            finally:
                for r in running:
                    stop_server(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    versions = [f"ours: scikit-learn {ours_set.sklearn}"]
    if peer_set is not None:
        versions.append(f"ours-sklearn1.5, KServe, MLServer: scikit-learn {peer_set.sklearn}")
    for env, dist in (("kserve", "kserve"), ("mlserver", "mlserver"), ("mlserver", "mlserver-sklearn")):
        if env in venvs:
            versions.append(f"{dist} {envs.version_of(venvs[env], dist)}")
    minutes = (time.monotonic() - started) / 60
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--write-readme"]
    header = (
        f"`{' '.join(['python bench/serving/run.py', *given])}` — "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} CPUs "
        f"(servers on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}), load average at start {load_start[0]:.1f}, "
        f"{args.rounds} interleaved rounds of {args.duration:g} s (+{args.warmup:g} s warm-up) per server and case, "
        f"{minutes:.1f} min. Versions: {'; '.join(versions)}."
    )
    text = report(samples, rss, header)
    models = [m for m in args.models.split(",") if m]
    text += (f"\n\nIn-process `predict` + `predict_proba` of one call, median of 200, scikit-learn {ours_set.sklearn} "
             f"(load average {load():.1f}):\n\n" + predict_floor(ours_set, models))
    if skipped:
        text += "\n\nSkipped: " + ", ".join(f"{k} ({v})" for k, v in skipped.items())
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": [asdict(s) for s in samples], "skipped": skipped}, indent=2))
    if args.write_readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
