"""The operator at 10,000 TrainingJobs and 1,000 ModelDeployments with DriftPolicies, against a real kube-apiserver.

    python bench/operator/scale.py [--training-jobs 10000] [--deployments 1000] [--churn-seconds 60] [--churn-rate 10]
                                   [--check-pods 100] [--json FILE]

One namespace, the operator in its own process (``mlops-operator run``), arrivals
seen through watches. Phases:

1. **fill**: N TrainingJobs created by 8 client threads as fast as the API
   server takes them; TrainingJob → Job latency and the rate.
2. **one check across P pods**: a real model server (iris, trained by
   ``mlops-operator train``) on 127.0.0.1, and P Ready pods of one
   ModelDeployment whose address is that server; its DriftPolicy checks every
   5 s. The check's duration is the operator's own
   ``mlops_operator_reconcile_duration_seconds{kind="DriftPolicy"}`` (the only
   policy then), over several checks.
3. M ModelDeployments serving one finished run, each with a DriftPolicy
   checking every 60 s.
4. **churn** at N + 2M objects: for S seconds, R times a second, a new
   TrainingJob, the deletion of an old one, and a ModelDeployment's replicas
   changed; TrainingJob → Job p50/p99, and the operator's API requests per
   reconcile (``mlops_operator_api_requests_total`` over
   ``mlops_operator_reconciles_total``).

Memory: the operator's RSS with nothing, after the fill, and at the end.
kube-controller-manager runs without its job controller: there is no
kubelet, so 10,000 Jobs would make 10,000 pods nothing runs; every run then
waits for a pod, the state whose reconcile reads the most (the run, its Job,
its pods). The Service range is widened to /16 for 1,000 Services.
Needs the test control plane binaries (``bash hack/envtest/build.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT), str(HERE)]

from run import NS, Arrivals, _healthy, free_port, rss_mib, start_operator, summary, training_job, wait_for  # noqa: E402
from tests.envtest.controlplane import DEFAULT_CONTROLLERS, ControlPlane, ensure_binaries, install_crds  # noqa: E402

from mlops_operator.controllers.cluster import (  # noqa: E402
    DRIFT_POLICIES, MODEL_DEPLOYMENTS, PODS, TRAINING_JOBS,
)
from mlops_operator.k8s.client import KubeCluster, path_of  # noqa: E402

CREATORS = 8
CHECK_INTERVAL = "5s"
CHECKS_MEASURED = 6


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def metric_sums(url: str) -> dict[str, float]:
    """The operator's counters we read, summed over their labels."""
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback
        text = r.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r'^(mlops_operator_(?:api_requests_total|reconciles_total|reconcile_duration_seconds_(?:sum|count)))'
                     r'(\{[^}]*\})?\s+(\S+)$', line)
        if not m:
            continue
        name, labels = m.group(1), m.group(2) or ""
        if name.startswith("mlops_operator_reconcile_duration") and 'kind="DriftPolicy"' not in labels:
            continue
        sums[name] = sums.get(name, 0.0) + float(m.group(3))
    return sums


def finished_run(client: KubeCluster, name: str, model: str, version: str, sha256: str) -> None:
    """A TrainingJob whose run is recorded as Succeeded (the trainer's summary, as the operator writes it)."""
    tj = {**training_job(0), "metadata": {"name": name, "namespace": NS}}
    tj["spec"] = {**tj["spec"], "model": model}
    client._request("POST", path_of(TRAINING_JOBS, NS), body=tj)
    status = {"phase": "Succeeded", "observedGeneration": 1, "modelVersion": version, "completionTime": now(),
              "artifact": {"uri": f"store://{NS}/{model}/{version}", "sha256": sha256},
              "gate": {"result": "Passed"}, "metrics": {}}
    asyncio.run(client.patch_status(TRAINING_JOBS, NS, name, status))


def deployment(name: str, model: str, replicas: int = 1) -> dict:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"model": model, "replicas": replicas}}


def policy(name: str, interval: str) -> dict:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "DriftPolicy", "metadata": {"name": name, "namespace": NS},
            "spec": {"deployment": name, "interval": interval, "checks": [{"type": "dataDrift"}], "action": "alert"}}


class ModelServer:
    """iris trained by ``mlops-operator train`` and served by ``mlops-operator serve`` on 127.0.0.1."""

    def __init__(self, work: Path) -> None:
        self.store, self.port, self.version = work / "store", free_port(), "wide-g1"
        term = work / "termination.json"
        cli = [sys.executable, "-m", "mlops_operator.cli"]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([*cli, "train", "--spec", str(ROOT / "examples" / "iris" / "trainingjob.yaml"), "--store", str(self.store),
                        "--version", self.version, "--termination-log", str(term)], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        self.sha256 = json.loads(term.read_text())["sha256"]
        self.proc = subprocess.Popen([*cli, "serve", "--store", str(self.store), "--model", "iris", "--version", self.version,
                                      "--port", str(self.port)], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _healthy(f"http://127.0.0.1:{self.port}/v2/health/ready"), timeout=120, step=0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def wide_deployment(client: KubeCluster, server: ModelServer, pods: int) -> None:
    """ModelDeployment ``wide`` serving the server's version, and ``pods`` Ready pods whose address is the server."""
    finished_run(client, "wide", "iris", server.version, server.sha256)
    client._request("POST", path_of(MODEL_DEPLOYMENTS, NS), body=deployment("wide", "iris"))
    stamp = now()
    for i in range(pods):
        name = f"wide-{i}"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": NS, "labels": {"mlops.dev/model-deployment": "wide"}},
               "spec": {"containers": [{"name": "server", "image": "x", "ports": [{"name": "http", "containerPort": server.port}]}]}}
        client._request("POST", path_of(PODS, NS), body=pod)
        asyncio.run(client.patch_status(PODS, NS, name, {
            "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}],
            "containerStatuses": [{"name": "server", "ready": True, "restartCount": 0, "image": "x", "imageID": "",
                                   "state": {"running": {"startedAt": stamp}}}]}))
    client._request("POST", path_of(DRIFT_POLICIES, NS), body=policy("wide", CHECK_INTERVAL))


def sensors_message(client: KubeCluster, name: str) -> str:
    dp = asyncio.run(client.get(DRIFT_POLICIES, NS, name)) or {}
    cond = next((c for c in (dp.get("status") or {}).get("conditions") or [] if c["type"] == "SensorsReadable"), {})
    return cond.get("message", "")


def create_training_jobs(client: KubeCluster, arrivals: Arrivals, start: int, count: int) -> tuple[list[float], float]:
    """Create runs start..start+count from CREATORS threads; each one's TrainingJob → Job latency (ms) and the elapsed time."""
    created: dict[int, float] = {}

    def create(i: int) -> None:
        t0 = time.perf_counter()
        client._request("POST", path_of(TRAINING_JOBS, NS), body=training_job(i))
        created[i] = t0

    began = time.perf_counter()
    with ThreadPoolExecutor(CREATORS) as pool:
        list(pool.map(create, range(start, start + count)))
    latencies = [(arrivals.wait("Job", f"bench-{i}-g1", timeout=600) - created[i]) * 1000 for i in range(start, start + count)]
    return latencies, time.perf_counter() - began


def churn(client: KubeCluster, arrivals: Arrivals, first_new: int, oldest: int, deployments: int, seconds: float,
          rate: float) -> list[float]:
    """R times a second for S seconds: a new run (latency measured), an old run deleted, a ModelDeployment rescaled."""
    latencies: list[float] = []
    ticks = int(seconds * rate)
    pending: list[tuple[int, float]] = []
    began = time.perf_counter()
    for k in range(ticks):
        target = began + k / rate
        time.sleep(max(0.0, target - time.perf_counter()))
        i = first_new + k
        t0 = time.perf_counter()
        client._request("POST", path_of(TRAINING_JOBS, NS), body=training_job(i))
        pending.append((i, t0))
        client._request("DELETE", path_of(TRAINING_JOBS, NS, f"bench-{oldest + k}"))
        md = f"served-{k % deployments}"
        client._request("PATCH", path_of(MODEL_DEPLOYMENTS, NS, md), body={"spec": {"replicas": 1 + (k // deployments + 1) % 2}},
                        content_type="application/merge-patch+json")
    for i, t0 in pending:
        latencies.append((arrivals.wait("Job", f"bench-{i}-g1", timeout=600) - t0) * 1000)
    return latencies


def line(what: str, values: list[float]) -> str:
    s = summary(values)
    return f"{what}: median {s['median']:.0f} ms, p90 {s['p90']:.0f} ms, p99 {s['p99']:.0f} ms, max {s['max']:.0f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--training-jobs", type=int, default=10_000)
    p.add_argument("--deployments", type=int, default=1_000)
    p.add_argument("--churn-seconds", type=float, default=60.0)
    p.add_argument("--churn-rate", type=float, default=10.0, help="new runs (and deletions, and rescales) per second")
    p.add_argument("--check-pods", type=int, default=100)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlops-scale-"))
    operator_log = work / "operator.log"
    operator: subprocess.Popen | None = None
    server: ModelServer | None = None
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores are this machine's; the bench shares them)", flush=True)
    plane = ControlPlane(ensure_binaries(), controllers=[c for c in DEFAULT_CONTROLLERS if c != "job-controller"],
                         apiserver_args=["--service-cluster-ip-range=10.0.0.0/16"]).start()
    result: dict = {"training_jobs": args.training_jobs, "deployments": args.deployments}
    try:
        install_crds(plane.kubeconfig, ROOT / "crds")
        client = KubeCluster(plane.api_client())
        asyncio.run(client._call("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}}))
        metrics_port = free_port()
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        operator = start_operator(plane, operator_log, "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1")
        rss_empty = rss_mib(operator.pid)
        arrivals = Arrivals(plane.api_client())
        time.sleep(1.0)

        fill, elapsed = create_training_jobs(client, arrivals, 0, args.training_jobs)
        rss_filled = rss_mib(operator.pid)
        result["fill"] = {**summary(fill), "per_second": args.training_jobs / elapsed}
        print(f"{args.training_jobs} TrainingJobs created by {CREATORS} threads in {elapsed:.0f} s "
              f"({args.training_jobs / elapsed:.0f}/s); " + line("TrainingJob -> Job", fill), flush=True)

        server = ModelServer(work)
        before = metric_sums(metrics_url)
        wide_deployment(client, server, args.check_pods)
        want = f"all {args.check_pods} ready serving pods answered"
        wait_for(lambda: want in sensors_message(client, "wide"), timeout=120, step=0.5)
        first = metric_sums(metrics_url)
        wait_for(lambda: metric_sums(metrics_url).get("mlops_operator_reconcile_duration_seconds_count", 0)
                 >= first.get("mlops_operator_reconcile_duration_seconds_count", 0) + CHECKS_MEASURED, timeout=120, step=0.5)
        after = metric_sums(metrics_url)
        checks = after["mlops_operator_reconcile_duration_seconds_count"] - first["mlops_operator_reconcile_duration_seconds_count"]
        mean = (after["mlops_operator_reconcile_duration_seconds_sum"] - first["mlops_operator_reconcile_duration_seconds_sum"]) / checks
        result["check"] = {"pods": args.check_pods, "checks": checks, "mean_seconds": mean,
                           "status": sensors_message(client, "wide")}
        del before
        print(f"one DriftPolicy check across {args.check_pods} pods (a real server's /metrics each): mean {mean * 1000:.0f} ms "
              f"over {checks:.0f} checks; status: {result['check']['status']!r}", flush=True)

        finished_run(client, "served-run", "served", "served-run-g1", "ab" * 32)
        for i in range(args.deployments):
            client._request("POST", path_of(MODEL_DEPLOYMENTS, NS), body=deployment(f"served-{i}", "served"))
            client._request("POST", path_of(DRIFT_POLICIES, NS), body=policy(f"served-{i}", "60s"))
        wait_for(lambda: len(asyncio.run(client.list(MODEL_DEPLOYMENTS, NS))) == args.deployments + 1, timeout=120, step=1)
        time.sleep(5.0)

        before = metric_sums(metrics_url)
        objects = args.training_jobs + 2 * args.deployments
        churned = churn(client, arrivals, args.training_jobs, 0, args.deployments, args.churn_seconds, args.churn_rate)
        after = metric_sums(metrics_url)
        requests = after["mlops_operator_api_requests_total"] - before["mlops_operator_api_requests_total"]
        reconciles = after["mlops_operator_reconciles_total"] - before["mlops_operator_reconciles_total"]
        rss_end = rss_mib(operator.pid)
        result["churn"] = {**summary(churned), "objects": objects, "api_requests_per_reconcile": requests / reconciles,
                           "reconciles": reconciles}
        result["rss_mib"] = {"empty": rss_empty, "after_fill": rss_filled, "end": rss_end,
                             "kib_per_object": (rss_end - rss_empty) * 1024 / (objects + args.check_pods)}
        print(f"churn at {objects} objects, {args.churn_rate:g}/s for {args.churn_seconds:g} s (a new run, an old run "
              f"deleted, a ModelDeployment rescaled): " + line("TrainingJob -> Job", churned), flush=True)
        print(f"  {requests / reconciles:.2f} API requests per reconcile ({reconciles:.0f} reconciles, {requests:.0f} requests)")
        print(f"operator RSS: {rss_empty:.0f} MiB empty, {rss_filled:.0f} MiB after the fill, {rss_end:.0f} MiB at the end "
              f"({result['rss_mib']['kib_per_object']:.1f} KiB per object)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    except BaseException:
        print(f"the operator's log: {operator_log}\n" + operator_log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(30)
        if server is not None:
            server.stop()
        plane.stop()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
