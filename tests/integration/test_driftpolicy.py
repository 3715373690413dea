"""DriftPolicy against a real kube-apiserver, fed by a real model server on 127.0.0.1.

A model trained by the real trainer serves from a temporary store in a
``mlops-operator serve`` subprocess; the ModelDeployment controller's own
serving pod is marked ready with the address 127.0.0.1 and the server's
port (there is no kubelet), so the DriftPolicy reconcile scrapes the real
``/metrics`` through the cluster-side HTTP sensors. The reference profile
comes from the store (the operator would fetch it from the serving pod).
Finished training runs are simulated by writing TrainingJob status through
the status subresource. The clock is injected: each check is a minute apart.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlops_operator.controllers.cluster import DRIFT_POLICIES, PODS, TRAINING_JOBS
from mlops_operator.controllers.reconcile.driftpolicy import reconcile_drift_policy
from mlops_operator.controllers.reconcile.modeldeployment import reconcile_model_deployment
from mlops_operator.controllers.settings import Settings
from mlops_operator.k8s.client import KubeCluster
from mlops_operator.sensors import HttpSensors
from tests.waiting import wait_until as _wait

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STORE_NS = "default"
VERSION = "iris-v1-g1"


class Server:
    """``mlops-operator serve`` on a free port of 127.0.0.1."""

    def __init__(self, store: Path, feedback: bool = False) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "operator"), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_operator.runtime.server", "--host", "127.0.0.1", "--port", "0", "--store", str(store),
             "--namespace", STORE_NS, "--model", "iris", "--version", VERSION, *(() if feedback else ("--no-feedback",))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.port: int | None = None
        self.lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        found.wait(90)
        if self.port is None:
            self.stop()
            raise RuntimeError("the model server did not start: " + "".join(self.lines))

    def predict(self, rows: list[list[float]]) -> None:
        self.post("/v1/models/iris:predict", {"instances": rows})

    def post(self, path: str, payload: dict) -> None:
        body = json.dumps(payload).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=30) as resp:
            assert resp.status == 200

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def served():
    """A real iris model in a temporary store, served on 127.0.0.1; yields (store, server)."""
    from mlops_operator.runtime.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        tj = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
        tj["metadata"].update(namespace=STORE_NS, generation=1)
        train(tj, store, log=lambda *a, **k: None)
        server = Server(store)
        try:
            yield store, server
        finally:
            server.stop()


def _feed(server: Server, rows: int, shift: float, seed: int) -> None:
    """Rows like iris (sepal length, sepal width, petal length, petal width), petals moved by ``shift`` cm."""
    from sklearn.datasets import load_iris

    rng = np.random.default_rng(seed)
    data = load_iris().data
    picked = data[rng.integers(0, len(data), rows)] + rng.normal(0, 0.05, (rows, 4))
    picked[:, 2] += shift
    picked[:, 3] += shift / 2
    for start in range(0, rows, 100):
        server.predict(np.round(picked[start:start + 100], 3).tolist())


def _store_reference(store: Path):
    from mlops_operator.store import ModelStore

    s = ModelStore(store)

    def load(namespace: str, model: str, version: str):
        return s.read_reference(STORE_NS, model, version), s.read_metadata(STORE_NS, model, version)

    return load


def _apply(control_plane, namespace: str, obj: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        control_plane.kubectl("apply", "--server-side", "-n", namespace, "-f", str(path))


def _example(name: str) -> dict:
    return yaml.safe_load((ROOT / "examples" / "iris" / name).read_text())


def _tj_status(cluster: KubeCluster, namespace: str, name: str, *, passed: bool, value: float, done: str,
               champion: str | None = None, champion_value: float | None = None) -> None:
    """What the TrainingJob controller writes when a run ends (there is no trainer pod here)."""
    version = f"{name}-g1"
    gate = {"result": "Passed" if passed else "Failed", "metric": "accuracy", "value": value, "bound": 0.9}
    if champion:
        gate.update(championVersion=champion, championValue=champion_value)
    status = {"phase": "Succeeded" if passed else "Failed", "observedGeneration": 1, "modelVersion": version,
              "completionTime": done, "gate": gate, "metrics": {"accuracy": value}}
    if passed:
        status["artifact"] = {"uri": f"store://{namespace}/iris/{version}", "sha256": "c3" * 32}
    asyncio.run(cluster.patch_status(TRAINING_JOBS, namespace, name, status))


def _serving_world(control_plane, namespace: str, port: int, interval: str = "60s") -> KubeCluster:
    """iris-v1 passed; the iris ModelDeployment (1 replica) reconciled; its pod 'running' at 127.0.0.1:port."""
    cluster = KubeCluster(control_plane.api_client())
    _apply(control_plane, namespace, _example("trainingjob.yaml"))
    _tj_status(cluster, namespace, "iris-v1", passed=True, value=0.947, done="2026-01-01T00:00:00Z")
    md = _example("modeldeployment.yaml")
    md["spec"]["replicas"] = 1
    _apply(control_plane, namespace, md)
    settings = Settings(image="example.invalid/mlops-operator:test", server_port=port)
    status = asyncio.run(reconcile_model_deployment(cluster, namespace, "iris", settings)).status
    assert status["modelVersion"] == VERSION
    pods = _wait(lambda: asyncio.run(cluster.list(PODS, namespace, {"mlops.dev/model-deployment": "iris"})), what="the serving pod")
    pod = pods[0]
    assert pod["spec"]["containers"][0]["ports"][0] == {"name": "http", "containerPort": port, "protocol": "TCP"}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    asyncio.run(cluster.patch_status(PODS, namespace, pod["metadata"]["name"], {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}], "startTime": now,
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": [{"name": "server", "ready": True, "restartCount": 0, "image": settings.image, "imageID": "",
                               "started": True, "state": {"running": {"startedAt": now}}}],
    }))
    policy = _example("driftpolicy.yaml")
    policy["spec"]["window"] = {"minSamples": 200}
    policy["spec"]["interval"] = interval
    policy["spec"]["checks"] = [{"type": "dataDrift"}, {"type": "predictionDrift"}]
    _apply(control_plane, namespace, policy)
    return cluster


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc) + timedelta(minutes=2)  # past the first check's spread delay

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 61) -> None:
        self.now += timedelta(seconds=seconds)


def _reconcile_fresh(control_plane, namespace: str, store: Path, clock: Clock):
    """A reconcile as a freshly started operator runs it: new client, new sensors, nothing remembered."""
    cluster = KubeCluster(control_plane.api_client())
    sensors = HttpSensors(reference_loader=_store_reference(store))
    return asyncio.run(reconcile_drift_policy(cluster, namespace, "iris", None, clock, sensors))


def _retrains(cluster: KubeCluster, namespace: str) -> list[dict]:
    return asyncio.run(cluster.list(TRAINING_JOBS, namespace, {"mlops.dev/triggered-by": "iris"}))


def _events(control_plane, namespace: str) -> list[str]:
    out = control_plane.kubectl("get", "events", "-n", namespace, "-o", "json",
                                "--field-selector", "involvedObject.kind=DriftPolicy,involvedObject.name=iris")
    return [e["reason"] for e in json.loads(out.stdout)["items"]]


def _cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _drift_until_retrain(control_plane, namespace: str, store: Path, server: Server, clock: Clock, seed: int) -> dict:
    """Shifted traffic, one check a minute, each by a 'restarted' operator, twice per minute."""
    verdicts = []
    for i in range(5):
        _feed(server, 300, shift=2.0, seed=seed + i)
        first = _reconcile_fresh(control_plane, namespace, store, clock)
        again = _reconcile_fresh(control_plane, namespace, store, clock)  # same minute: nothing is due
        assert again.check is None
        verdicts.append(first.check.verdict)
        clock.tick()
    assert verdicts[0] == "NotEnoughData", "the first check starts the window"
    assert verdicts[1:] == ["Drift"] * 4, verdicts
    return asyncio.run(KubeCluster(control_plane.api_client()).get(DRIFT_POLICIES, namespace, "iris"))


def test_drift_starts_one_retrain_and_a_better_run_takes_over(crds, namespace, served) -> None:
    store, server = served
    control_plane = crds
    cluster = _serving_world(control_plane, namespace, server.port)
    clock = Clock()
    policy = _drift_until_retrain(control_plane, namespace, store, server, clock, seed=100)

    retrains = _retrains(cluster, namespace)
    assert [t["metadata"]["name"] for t in retrains] == ["iris-retrain-1"], "exactly one retrain, across restarts"
    tj = retrains[0]
    assert tj["metadata"]["ownerReferences"][0]["uid"] == policy["metadata"]["uid"]
    assert tj["metadata"]["ownerReferences"][0]["controller"] is True
    assert tj["metadata"]["labels"]["mlops.dev/parent-version"] == VERSION
    assert tj["metadata"]["labels"]["mlops.dev/model"] == "iris"
    assert tj["spec"]["qualityGate"] == {"metric": "accuracy", "minimum": 0.9, "mustBeat": "current"}
    assert tj["spec"]["data"]["includeFeedback"] is True

    s = policy["status"]
    assert s["verdict"] == "Drift" and s["retrainCount"] == 1 and s["activeRetrain"] == "iris-retrain-1"
    assert s["samples"] >= 600 and s["scores"][0]["drifted"] and s["scores"][0]["feature"].startswith("petal")
    assert _cond(s, "Drifting")["status"] == "True" and _cond(s, "Retraining")["reason"] == "Running"
    assert _cond(s, "Ready")["status"] == "True"
    assert [p["name"] for p in s["window"]["pods"]] and s["window"]["version"] == VERSION
    assert s["retrains"][0]["name"] == "iris-retrain-1" and "petal" in s["retrains"][0]["reason"]
    reasons = _events(control_plane, namespace)
    assert reasons.count("RetrainTriggered") == 1 and "DriftDetected" in reasons

    # The retrain passes its gate against the serving version: the ModelDeployment resolves it as latest.
    _tj_status(cluster, namespace, "iris-retrain-1", passed=True, value=0.97, done="2026-02-01T00:00:00Z",
               champion=VERSION, champion_value=0.6)
    settings = Settings(image="example.invalid/mlops-operator:test", server_port=server.port)
    md_status = asyncio.run(reconcile_model_deployment(cluster, namespace, "iris", settings)).status
    assert md_status["modelVersion"] == "iris-retrain-1-g1"
    d = _reconcile_fresh(control_plane, namespace, store, clock)
    # The pod still runs the old version until the rollout replaces it: no verdict on the new one yet.
    assert d.check.verdict == "Unavailable" and "another version than iris-retrain-1-g1" in d.check.message
    s = d.status
    assert "activeRetrain" not in s
    assert s["retrains"][0] == {**s["retrains"][0], "result": "Succeeded", "promoted": True}
    assert "it serves now" in _cond(s, "Retraining")["message"]
    assert {"RetrainSucceeded", "Promoted"} <= set(_events(control_plane, namespace))
    stored = asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris"))
    assert "activeRetrain" not in stored["status"], "gone on the server too"
    assert stored["spec"] == policy["spec"], "the operator never writes the spec"


def test_a_retrain_that_fails_its_gate_changes_nothing(crds, namespace, served) -> None:
    store, server = served
    control_plane = crds
    cluster = _serving_world(control_plane, namespace, server.port)
    clock = Clock()
    _drift_until_retrain(control_plane, namespace, store, server, clock, seed=200)
    assert [t["metadata"]["name"] for t in _retrains(cluster, namespace)] == ["iris-retrain-1"]

    _tj_status(cluster, namespace, "iris-retrain-1", passed=False, value=0.91, done="2026-02-01T00:00:00Z",
               champion=VERSION, champion_value=0.95)
    settings = Settings(image="example.invalid/mlops-operator:test", server_port=server.port)
    md_status = asyncio.run(reconcile_model_deployment(cluster, namespace, "iris", settings)).status
    assert md_status["modelVersion"] == VERSION, "a failed run never touches what serves"
    d = _reconcile_fresh(control_plane, namespace, store, clock)
    s = d.status
    assert "activeRetrain" not in s and s["retrains"][0]["result"] == "GateFailed" and not s["retrains"][0]["promoted"]
    retraining = _cond(s, "Retraining")
    assert retraining["status"] == "False" and retraining["reason"] == "GateFailed"
    assert "did not beat iris-v1-g1 (0.95)" in retraining["message"] and "serving version stays" in retraining["message"]
    assert "RetrainGateFailed" in _events(control_plane, namespace)
    # Drift goes on, but the cooldown (30m) holds the next retrain back.
    _feed(server, 300, shift=2.0, seed=299)
    clock.tick()
    d = _reconcile_fresh(control_plane, namespace, store, clock)
    assert d.check.verdict == "Drift" and d.retrain is None and "cooling down" in d.events[0].message
    assert len(_retrains(cluster, namespace)) == 1


def test_the_operator_queue_runs_a_policys_checks_when_due(crds, namespace, served) -> None:
    """The operator's wiring without kopf: one key queued, and the queue itself brings the policy back when its check is due."""
    from mlops_operator.k8s import context

    store, server = served
    control_plane = crds
    cluster = _serving_world(control_plane, namespace, server.port, interval="5s")
    old_ctx = context._current
    ctx = context.install(context.Context(cluster, Settings(server_port=server.port),
                                          sensors=HttpSensors(reference_loader=_store_reference(store))))
    try:
        async def scenario() -> dict:
            ctx.queue.start()
            ctx.queue.add(("DriftPolicy", namespace, "iris"))  # what the watch event does
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # the first check comes within the interval (5s), spread by uid
                    got = await cluster.get(DRIFT_POLICIES, namespace, "iris")
                    if (got.get("status") or {}).get("lastCheck"):
                        return got
                    await asyncio.sleep(0.5)
                raise AssertionError("no check ran")
            finally:
                await ctx.queue.stop()

        got = asyncio.run(scenario())
        # No request reached the server yet: the check ran, read the pod, and says so rather than "no drift".
        assert got["status"]["verdict"] == "NotEnoughData" and got["status"]["samples"] == 0
        assert got["status"]["window"]["version"] == VERSION
    finally:
        context._current = old_ctx


def _policy_world(control_plane, namespace: str, *, source_model: str = "iris") -> KubeCluster:
    """iris-v1 (training ``source_model``), the iris ModelDeployment and the iris DriftPolicy, as applied by a user."""
    tj = _example("trainingjob.yaml")
    tj["spec"]["model"] = source_model
    _apply(control_plane, namespace, tj)
    _apply(control_plane, namespace, _example("modeldeployment.yaml"))
    _apply(control_plane, namespace, _example("driftpolicy.yaml"))
    return KubeCluster(control_plane.api_client())


def test_a_retrain_created_before_a_crash_is_adopted_once_with_its_event(crds, namespace) -> None:
    from mlops_operator.controllers.driftpolicy import build_retrain

    control_plane = crds
    cluster = _policy_world(control_plane, namespace)
    policy = asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris"))
    source = asyncio.run(cluster.get(TRAINING_JOBS, namespace, "iris-v1"))
    # What the operator created just before it died: the status write and the event never happened.
    retrain = build_retrain(policy, source, 1, parent_version=VERSION, reason="dataDrift on petal_length")
    asyncio.run(cluster.create(retrain))
    assert not (asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris")).get("status") or {}).get("retrainCount")

    clock = Clock()
    for _ in range(3):  # the restarted operator reconciles, and again later
        d = asyncio.run(reconcile_drift_policy(KubeCluster(control_plane.api_client()), namespace, "iris", None, clock, None))
        assert d.retrain is None
        clock.tick()

    assert [t["metadata"]["name"] for t in _retrains(cluster, namespace)] == ["iris-retrain-1"], "adopted, not duplicated"
    s = asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris"))["status"]
    assert s["retrainCount"] == 1 and s["activeRetrain"] == "iris-retrain-1"
    assert s["retrains"][0]["name"] == "iris-retrain-1" and s["retrains"][0]["reason"] == "dataDrift on petal_length"
    assert _cond(s, "Retraining")["reason"] == "Running"
    assert _events(control_plane, namespace).count("RetrainTriggered") == 1, "the lost event, posted once on adoption"


def test_a_source_of_another_model_is_refused(crds, namespace) -> None:
    control_plane = crds
    cluster = _policy_world(control_plane, namespace, source_model="penguins")
    clock = Clock()
    for _ in range(2):
        asyncio.run(reconcile_drift_policy(KubeCluster(control_plane.api_client()), namespace, "iris", None, clock, None))
        clock.tick()
    s = asyncio.run(cluster.get(DRIFT_POLICIES, namespace, "iris"))["status"]
    ready = _cond(s, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ModelMismatch" and _cond(s, "Stalled")["status"] == "True"
    assert "trains model 'penguins'" in ready["message"] and "serves model 'iris'" in ready["message"]
    assert _events(control_plane, namespace).count("ModelMismatch") == 1
    assert _retrains(cluster, namespace) == []


def test_an_unreadable_sensor_is_a_condition_and_an_event(crds, namespace) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # the serving pod's port: nothing listens there
    control_plane = crds
    _serving_world(control_plane, namespace, port)
    clock = Clock()
    decisions = []
    for _ in range(2):
        sensors = HttpSensors(timeout=2.0)
        decisions.append(asyncio.run(reconcile_drift_policy(KubeCluster(control_plane.api_client()), namespace, "iris", None,
                                                            clock, sensors)))
        clock.tick()
    assert [d.sensor_errors for d in decisions] == [1, 1]
    s = asyncio.run(KubeCluster(control_plane.api_client()).get(DRIFT_POLICIES, namespace, "iris"))["status"]
    pod = decisions[0].unreadable_pods[0]
    assert _cond(s, "Ready")["reason"] == "SensorUnreadable" and pod in _cond(s, "Ready")["message"]
    assert _cond(s, "SensorsReadable")["status"] == "False" and pod in _cond(s, "SensorsReadable")["message"]
    assert _events(control_plane, namespace).count("SensorUnreadable") == 1, "one event for the transition, not per check"
