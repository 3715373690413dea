"""Helpers for the model server tests: small real artifacts and a server subprocess.

The artifacts are laid out through the store API exactly as the trainer does:
a position-based ColumnTransformer + estimator pipeline, ``metadata.json``
with the feature schema and ``reference.json`` from ``build_reference``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_operator.drift.profile import build_reference
from mlops_operator.store import ModelStore

ROOT = Path(__file__).resolve().parents[2]
NS = "default"


def _pipeline(estimator: Any, n_num: int, cat_idx: list[int], impute: bool = True) -> Pipeline:
    num_idx = [i for i in range(n_num + len(cat_idx)) if i not in cat_idx]
    steps: list[tuple[str, Any]] = [("impute", SimpleImputer())] if impute else []
    steps.append(("scale", StandardScaler()))
    transformers = [("numeric", Pipeline(steps), num_idx)]
    if cat_idx:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat_idx))
    prepare = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("prepare", prepare), ("model", estimator)])


def _write(store: ModelStore, name: str, version: str, pipe: Pipeline, X: np.ndarray, y: np.ndarray,
           features: list[dict[str, Any]], task: str, target: str) -> None:
    pipe.fit(X, y)
    preds = pipe.predict(X)
    cols = {f["name"]: X[:, j] for j, f in enumerate(features)}
    categorical = {f["name"] for f in features if f["kind"] == "categorical"}
    reference = build_reference(cols, categorical, preds, task, labels=y)
    meta = {
        "model": name, "version": version, "namespace": NS, "task": task, "target": target,
        "features": features,
        "classes": [c.item() if isinstance(c, np.generic) else c for c in pipe.classes_] if task == "classification" else None,
        "metrics": {}, "baseline": {"errorRate": 0.05} if task == "classification" else {"rmse": 50.0},
    }
    store.write_version(NS, name, version, sio.dumps(pipe), meta, reference)


def make_store(root: Path) -> dict[str, Any]:
    """iris (RandomForest), diabetes (Ridge, without imputer), shop (mixed, LogisticRegression)."""
    store = ModelStore(root)
    out: dict[str, Any] = {}
    iris = load_iris()
    X, y = iris.data.astype(np.float64), iris.target
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    feats = [{"name": n, "dtype": "float64", "kind": "numeric"} for n in names]
    pipe = _pipeline(RandomForestClassifier(n_estimators=10, random_state=0), 4, [])
    _write(store, "iris", "v1", pipe, X, y, feats, "classification", "species")
    out["iris"] = (pipe, X, names)

    d = load_diabetes()
    X, y = d.data.astype(np.float64), d.target
    names = list(d.feature_names)
    feats = [{"name": n, "dtype": "float64", "kind": "numeric"} for n in names]
    pipe = _pipeline(Ridge(alpha=0.1), len(names), [], impute=False)
    _write(store, "diabetes", "v1", pipe, X, y, feats, "regression", "progression")
    out["diabetes"] = (pipe, X, names)

    rng = np.random.default_rng(0)
    n = 300
    age = rng.normal(40, 10, n)
    colour = rng.choice(["red", "green", "blue"], n)
    size = rng.integers(1, 4, n)
    yy = np.where((age > 40) ^ (colour == "red"), "yes", "no")
    X = np.empty((n, 3), dtype=object)
    X[:, 0] = age
    X[:, 1] = colour
    X[:, 2] = [str(v) for v in size]
    feats = [
        {"name": "age", "dtype": "float64", "kind": "numeric"},
        {"name": "colour", "dtype": "object", "kind": "categorical", "categories": ["blue", "green", "red"]},
        {"name": "size", "dtype": "int64", "kind": "categorical", "categories": ["1", "2", "3"]},
    ]
    pipe = _pipeline(LogisticRegression(max_iter=500), 1, [1, 2])
    _write(store, "shop", "v1", pipe, X, yy, feats, "classification", "bought")
    out["shop"] = (pipe, X, ["age", "colour", "size"])
    return out


class Server:
    """``mlops-operator serve`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, *args: str, timeout: float = 90.0, wait: bool = True) -> None:
        # The repository root too: some tests serve estimators defined in tests/ (allowed with --allow-module).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "operator"), str(ROOT)]), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_operator.runtime.server", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        found = self._found = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                m = re.search(r"on http://[^:]+:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 90.0) -> Server:
        self._found.wait(timeout)
        if self.port is None:
            self.stop()
            raise RuntimeError("server did not start: " + "".join(self.lines))
        return self

    def conn(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        assert self.port is not None
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        c = self.conn()
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            c.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
            r = c.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()
        if hdrs.get("content-type", "").startswith("application/json"):
            return r.status, hdrs, json.loads(payload)
        return r.status, hdrs, payload.decode()

    def metrics(self) -> str:
        status, _, text = self.request("GET", "/metrics")
        assert status == 200
        return text

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def run_serve(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the server to completion (for start-up failures)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "operator"), str(ROOT)]))
    return subprocess.run(
        [sys.executable, "-m", "mlops_operator.runtime.server", "--port", "0", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


class GrpcServer(Server):
    """A server started with ``--grpc-port``: the port it bound, from its log line."""

    @property
    def grpc_port(self) -> int:
        for line in self.lines:
            m = re.search(r"GRPCInferenceService\) on [^:]+:(\d+)", line)
            if m:
                return int(m.group(1))
        raise AssertionError("no gRPC port in the log: " + "".join(self.lines))

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@contextlib.contextmanager
def serving(kind: type[Server], root: Path, models: tuple[str, ...], *args: str) -> Iterator[dict[str, Any]]:
    """One server per model of the store at ``root``, started together (they load in parallel), stopped cleanly after."""
    started = {n: kind("--store", str(root), "--model", n, *args, wait=False) for n in models}
    try:
        for s in started.values():
            s.wait()
        yield started
    finally:
        for s in started.values():
            assert s.stop() == 0
