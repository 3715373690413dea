"""Operator latency and memory against a real kube-apiserver, next to kube-controller-manager's own.

    python bench/operator/run.py [--count 200] [--stalled-policies 20] [--json FILE]

For each of N TrainingJobs created through the API, measures how long the
operator (``mlops-operator run``, its own process) takes to create its Job,
seen through a watch (no polling load on the machine), and, as the peer
measured in the same run on the same server, how long kube-controller-manager's
job controller then takes to create that Job's Pod. Also the operator
process's resident memory before and after all N converged.

With ``--stalled-policies K``, the same is measured a second time while K
DriftPolicies check every 5 s a serving pod whose drift sensor never answers
(a TCP server on 127.0.0.1 that accepts and stays silent, so every scrape runs
into its timeout): what one slow object costs every other.
Needs the test control plane binaries (``bash hack/envtest/build.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT)]

from tests.envtest.controlplane import ControlPlane, ensure_binaries, install_crds  # noqa: E402

from mlops_operator.controllers.cluster import TRAINING_JOBS  # noqa: E402
from mlops_operator.k8s.client import KubeCluster, path_of  # noqa: E402

NS = "bench"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def training_job(i: int) -> dict:
    return {
        "apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": f"bench-{i}", "namespace": NS},
        "spec": {"model": "bench", "data": {"source": "sklearn://iris"},
                 "estimator": {"class": "sklearn.tree.DecisionTreeClassifier"}},
    }


class Arrivals:
    """When each Job and Pod of the namespace first appeared, from watches running in threads."""

    def __init__(self, api_client) -> None:
        from kubernetes import client, watch

        self.seen: dict[tuple[str, str], float] = {}
        self.cond = threading.Condition()
        self._stop = False
        batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
        for kind, lister in (("Job", batch.list_namespaced_job), ("Pod", core.list_namespaced_pod)):
            threading.Thread(target=self._watch, args=(watch.Watch(), kind, lister), daemon=True).start()

    def _watch(self, w, kind: str, lister) -> None:
        try:
            self._stream(w, kind, lister)
        except Exception:  # noqa: BLE001 - the control plane went away at the end of the run
            return

    def _stream(self, w, kind: str, lister) -> None:
        for ev in w.stream(lister, NS, timeout_seconds=3600):
            if self._stop:
                return
            if ev["type"] != "ADDED":
                continue
            meta = ev["object"].metadata
            name = (meta.labels or {}).get("job-name") if kind == "Pod" else meta.name
            with self.cond:
                self.seen.setdefault((kind, name), time.perf_counter())
                self.cond.notify_all()

    def wait(self, kind: str, name: str, timeout: float = 30.0) -> float:
        deadline = time.perf_counter() + timeout
        with self.cond:
            while (kind, name) not in self.seen:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(f"{kind} {name} did not appear")
                self.cond.wait(left)
            return self.seen[(kind, name)]


def wait_for(fn, timeout: float = 30.0, step: float = 0.002):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        found = fn()
        if found:
            return time.perf_counter()
        time.sleep(step)
    raise TimeoutError("object did not appear")


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback
            return r.status == 200
    except OSError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers: a pod whose sensor hangs."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.held: list = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held = [c for c in self.held[-500:] if c.fileno() != -1] + [conn]  # bounded

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self.held:
            c.close()


def start_operator(plane: ControlPlane, log: Path, *extra: str) -> subprocess.Popen:
    """``mlops-operator run`` in its own process, as in its pod (no GIL shared with the bench), once it is live."""
    health_port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
    operator = subprocess.Popen(
        [sys.executable, "-m", "mlops_operator.cli", "run", "--kubeconfig", str(plane.kubeconfig), "--namespace", NS,
         "--liveness", f"http://127.0.0.1:{health_port}/healthz", "--metrics-port", "0", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    wait_for(lambda: _healthy(f"http://127.0.0.1:{health_port}/healthz"), timeout=60, step=0.2)
    time.sleep(1.0)
    return operator


def stall(client: KubeCluster, k: int, port: int) -> None:
    """K ModelDeployments serving a finished run, each with one ready pod at the silent server, and a DriftPolicy each."""
    from mlops_operator.controllers.cluster import DRIFT_POLICIES, MODEL_DEPLOYMENTS, PODS

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tj = {**training_job(0), "metadata": {"name": "stalled-run", "namespace": NS}}
    tj["spec"] = {**tj["spec"], "model": "stalled"}
    client._request("POST", path_of(TRAINING_JOBS, NS), body=tj)
    status = {"phase": "Succeeded", "observedGeneration": 1, "modelVersion": "stalled-run-g1", "completionTime": now,
              "artifact": {"uri": "store://bench/stalled/stalled-run-g1", "sha256": "ab" * 32},
              "gate": {"result": "Passed"}, "metrics": {}}
    asyncio.run(client.patch_status(TRAINING_JOBS, NS, "stalled-run", status))
    for i in range(k):
        name = f"stalled-{i}"
        md = {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name, "namespace": NS},
              "spec": {"model": "stalled", "replicas": 1}}
        client._request("POST", path_of(MODEL_DEPLOYMENTS, NS), body=md)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{name}-sensor", "namespace": NS, "labels": {"mlops.dev/model-deployment": name}},
               "spec": {"containers": [{"name": "server", "image": "x", "ports": [{"name": "http", "containerPort": port}]}]}}
        client._request("POST", path_of(PODS, NS), body=pod)
        asyncio.run(client.patch_status(PODS, NS, f"{name}-sensor", {
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "server", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
                                   "state": {"running": {"startedAt": now}}}]}))
        dp = {"apiVersion": "mlops.dev/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": name, "namespace": NS},
              "spec": {"deployment": name, "interval": "5s", "checks": [{"type": "dataDrift"}], "action": "alert"}}
        client._request("POST", path_of(DRIFT_POLICIES, NS), body=dp)


def stalled_checks(client: KubeCluster, k: int) -> int:
    """How many of the K policies have run a check that found their sensor unreadable."""
    from mlops_operator.controllers.cluster import DRIFT_POLICIES

    done = 0
    for dp in asyncio.run(client.list(DRIFT_POLICIES, NS)):
        conds = (dp.get("status") or {}).get("conditions") or []
        if any(c.get("reason") == "SensorUnreadable" for c in conds):
            done += 1
    return done


def measure(client: KubeCluster, arrivals: "Arrivals", start: int, count: int) -> tuple[list[float], list[float]]:
    ours, peer = [], []
    for i in range(start, start + count):
        t0 = time.perf_counter()
        client._request("POST", path_of(TRAINING_JOBS, NS), body=training_job(i))
        t_job = arrivals.wait("Job", f"bench-{i}-g1")
        t_pod = arrivals.wait("Pod", f"bench-{i}-g1")
        ours.append((t_job - t0) * 1000)
        peer.append((t_pod - t_job) * 1000)
    return ours, peer


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": pct(values, 0.9), "p99": pct(values, 0.99), "max": max(values)}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--stalled-policies", type=int, default=0, metavar="K")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    silent = SilentServer() if args.stalled_policies else None
    operator_log = Path(tempfile.mkdtemp(prefix="mlops-bench-")) / "operator.log"
    operator: subprocess.Popen | None = None
    plane = ControlPlane(ensure_binaries()).start()
    try:
        install_crds(plane.kubeconfig, ROOT / "crds")
        client = KubeCluster(plane.api_client())
        asyncio.run(client._call("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}}))
        operator = start_operator(plane, operator_log)
        rss_before = rss_mib(operator.pid)
        arrivals = Arrivals(plane.api_client())
        time.sleep(1.0)
        ours, peer = measure(client, arrivals, 0, args.count)
        stalled: tuple[list[float], list[float]] | None = None
        if silent is not None:
            stall(client, args.stalled_policies, silent.port)
            # Every policy's first check comes within its interval; wait until they all hang on their sensor.
            wait_for(lambda: stalled_checks(client, args.stalled_policies) == args.stalled_policies, timeout=120, step=1.0)
            stalled = measure(client, arrivals, args.count, args.count)
        time.sleep(2.0)
        rss_after = rss_mib(operator.pid)
    except BaseException:
        print(f"the operator's log: {operator_log}\n" + operator_log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(30)
        plane.stop()
        if silent is not None:
            silent.close()
        shutil.rmtree(operator_log.parent, ignore_errors=True)  # printed above when the run failed

    result = {
        "count": args.count,
        "operator_cr_to_job_ms": summary(ours),
        "kcm_job_to_pod_ms": summary(peer),
        "ratio_median": statistics.median(ours) / statistics.median(peer),
        "operator_rss_mib": {"before": round(rss_before, 1), "after": round(rss_after, 1)},
    }
    print(f"{args.count} TrainingJobs, created one after another; arrivals seen through watches")
    print(f"  operator, TrainingJob created -> Job exists:  median {result['operator_cr_to_job_ms']['median']:.1f} ms, "
          f"p90 {result['operator_cr_to_job_ms']['p90']:.1f} ms, max {result['operator_cr_to_job_ms']['max']:.1f} ms")
    print(f"  kube-controller-manager, Job -> Pod exists:  median {result['kcm_job_to_pod_ms']['median']:.1f} ms, "
          f"p90 {result['kcm_job_to_pod_ms']['p90']:.1f} ms, max {result['kcm_job_to_pod_ms']['max']:.1f} ms")
    print(f"  ratio of medians (ours / kube-controller-manager): {result['ratio_median']:.2f}")
    if stalled is not None:
        result["stalled_policies"] = args.stalled_policies
        result["operator_cr_to_job_ms_while_stalled"] = summary(stalled[0])
        result["kcm_job_to_pod_ms_while_stalled"] = summary(stalled[1])
        st = result["operator_cr_to_job_ms_while_stalled"]
        print(f"  the same, while {args.stalled_policies} DriftPolicies scrape silent pods every 5 s: median {st['median']:.1f} ms, "
              f"p90 {st['p90']:.1f} ms, p99 {st['p99']:.1f} ms, max {st['max']:.1f} ms "
              f"(job controller: median {result['kcm_job_to_pod_ms_while_stalled']['median']:.1f} ms)")
    print(f"  operator process RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after {args.count} TrainingJobs converged")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
