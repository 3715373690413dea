"""Operator latency and memory against a real kube-apiserver, next to kube-controller-manager's own.

    python bench/operator/run.py [--count 200] [--json FILE]

For each of N TrainingJobs created through the API, measures how long the
operator (``mlops-operator run``, its own process) takes to create its Job,
seen through a watch (no polling load on the machine), and, as the peer
measured in the same run on the same server, how long kube-controller-manager's
job controller then takes to create that Job's Pod. Also the operator
process's resident memory before and after all N converged.
Needs the test control plane binaries (``bash hack/envtest/build.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
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


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    plane = ControlPlane(ensure_binaries()).start()
    try:
        install_crds(plane.kubeconfig, ROOT / "crds")
        client = KubeCluster(plane.api_client())
        asyncio.run(client._call("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}}))
        # The operator as it runs in its pod: its own process (no GIL shared with this loop).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
        operator = subprocess.Popen(
            [sys.executable, "-m", "mlops_operator.cli", "run", "--kubeconfig", str(plane.kubeconfig), "--namespace", NS,
             "--liveness", "http://127.0.0.1:18081/healthz", "--metrics-port", "0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _healthy("http://127.0.0.1:18081/healthz"), timeout=60, step=0.2)
        time.sleep(1.0)
        rss_before = rss_mib(operator.pid)
        arrivals = Arrivals(plane.api_client())
        time.sleep(1.0)
        ours, peer = [], []
        for i in range(args.count):
            t0 = time.perf_counter()
            client._request("POST", path_of(TRAINING_JOBS, NS), body=training_job(i))
            t_job = arrivals.wait("Job", f"bench-{i}-g1")
            t_pod = arrivals.wait("Pod", f"bench-{i}-g1")
            ours.append((t_job - t0) * 1000)
            peer.append((t_pod - t_job) * 1000)
        time.sleep(2.0)
        rss_after = rss_mib(operator.pid)
        operator.terminate()
        operator.wait(30)
    finally:
        plane.stop()

    result = {
        "count": args.count,
        "operator_cr_to_job_ms": {"median": statistics.median(ours), "p90": pct(ours, 0.9), "max": max(ours)},
        "kcm_job_to_pod_ms": {"median": statistics.median(peer), "p90": pct(peer, 0.9), "max": max(peer)},
        "ratio_median": statistics.median(ours) / statistics.median(peer),
        "operator_rss_mib": {"before": round(rss_before, 1), "after": round(rss_after, 1)},
    }
    print(f"{args.count} TrainingJobs, created one after another; arrivals seen through watches")
    print(f"  operator, TrainingJob created -> Job exists:  median {result['operator_cr_to_job_ms']['median']:.1f} ms, "
          f"p90 {result['operator_cr_to_job_ms']['p90']:.1f} ms, max {result['operator_cr_to_job_ms']['max']:.1f} ms")
    print(f"  kube-controller-manager, Job -> Pod exists:  median {result['kcm_job_to_pod_ms']['median']:.1f} ms, "
          f"p90 {result['kcm_job_to_pod_ms']['p90']:.1f} ms, max {result['kcm_job_to_pod_ms']['max']:.1f} ms")
    print(f"  ratio of medians (ours / kube-controller-manager): {result['ratio_median']:.2f}")
    print(f"  operator process RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after {args.count} TrainingJobs converged")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
