"""`mlops-operator local` on the iris example: trains, serves both protocols, stops clean, restarts warm."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import processes_mentioning

ROOT = Path(__file__).resolve().parents[2]
ROW = [5.1, 3.5, 1.4, 0.2]


def _start(tmp: Path, *paths: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mlops_operator.cli", "local", *paths, "--root", str(tmp)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float, seen: list[str]) -> re.Match:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if m := regex.search(line):
            return m
    raise AssertionError(f"no line matching {pattern!r} within {timeout}s; output:\n{''.join(seen[-60:])}")


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "local"


def test_iris_serves_both_protocols_and_stops_clean(store: Path) -> None:
    seen: list[str] = []
    proc = _start(store, "examples/iris/trainingjob.yaml", "examples/iris/modeldeployment.yaml")
    try:
        url = _read_until(proc, r"service default/iris listens on (http://127\.0\.0\.1:\d+)", 240, seen).group(1)
        _read_until(proc, r"ModelDeployment/iris Ready", 240, seen)
        v1 = _post(f"{url}/v1/models/iris:predict", {"instances": [ROW, {"sepal length (cm)": 6.7, "sepal width (cm)": 3.0,
                                                                          "petal length (cm)": 5.2, "petal width (cm)": 2.3}]})
        assert v1["predictions"] == ["setosa", "virginica"]
        v2 = _post(f"{url}/v2/models/iris/infer",
                   {"inputs": [{"name": "rows", "shape": [1, 4], "datatype": "FP64", "data": ROW}]})
        assert v2["model_version"] == "iris-v1-g1" and v2["outputs"][0]["data"] == ["setosa"]
        children = processes_mentioning(str(store))
        assert len(children) == 3, children  # `local` itself and its two replicas: the trainer has exited
    finally:
        code = _stop(proc)
    assert code == 0
    deadline = time.monotonic() + 10
    while processes_mentioning(str(store)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(store)) == [], "a child process outlived `mlops-operator local`"

    # A second start with the same store reuses the trained version instead of training again.
    seen = []
    proc = _start(store, "examples/iris/trainingjob.yaml", "examples/iris/modeldeployment.yaml")
    try:
        _read_until(proc, r"ModelDeployment/iris Ready", 240, seen)
    finally:
        _stop(proc)
    logs = sorted((store / "logs").glob("default.iris-v1-g1-*.log"))
    assert logs, "no training log"
    text = logs[-1].read_text()
    assert '"event": "exists"' in text and text.count('"event": "stored"') == 1, text[-2000:]


def test_a_broken_manifest_is_reported_and_the_rest_runs(store: Path, tmp_path: Path) -> None:
    bad = (ROOT / "tests/data/invalid/md-bad-version.yaml").read_text().replace("name: iris", "name: broken")
    folder = tmp_path / "manifests"
    folder.mkdir()
    (folder / "bad.yaml").write_text(bad)
    (folder / "tj.yaml").write_text((ROOT / "examples/iris/trainingjob.yaml").read_text())
    seen: list[str] = []
    proc = _start(store, str(folder))
    try:
        _read_until(proc, r"TrainingJob/iris-v1 Succeeded", 240, seen)
    finally:
        code = _stop(proc)
    text = "".join(seen)
    assert "bad.yaml#0 ModelDeployment/broken: spec.version:" in text
    assert code == 1  # the run went on, and the exit code still says something was wrong
