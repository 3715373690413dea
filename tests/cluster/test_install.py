"""Install as a user would (issue 14, test 2): the chart, the iris example, predictions through the Service.

The steps are docs/install.md's: ``helm install`` of charts/mlops-operator
with the claims created by the chart, ``kubectl apply -f examples/iris`` in
the release namespace, wait for the TrainingJob and the ModelDeployment, then
a KServe V1 and an Open Inference Protocol V2 request. Only the image differs:
the one the tests built and imported into containerd (``imagePullPolicy:
Never``). The requests go from the host to the ``iris`` Service's ClusterIP,
routed by kube-proxy to the serving pods on the cluster's own bridge.

The claims bind to hostPath PersistentVolumes in the cluster's temporary
directory, owned by the pods' uid and group (hostPath ignores ``fsGroup``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.cluster.node import POD_CIDR
from tests.cluster.test_smoke import kubectl
from tests import waiting
from tests.envtest.controlplane import SERVICE_CLUSTER_IP_RANGE

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "mlops-system"
RELEASE = "mlops"
OPERATOR = f"deployment/{RELEASE}-mlops-operator"
TRAINING_JOB = "iris-v1"
TRAINING_K8S_JOB = "iris-v1-g1"  # name and generation, as docs/install.md says
POD_UID = 65532  # the image's user, and the pods' runAsUser/runAsGroup
CLAIMS = {"mlops-model-store": "10Gi", "mlops-feedback": "1Gi"}
SERVICE_PREFIX = SERVICE_CLUSTER_IP_RANGE.rsplit(".", 1)[0] + "."
POD_PREFIX = POD_CIDR.rsplit(".", 1)[0] + "."
METRICS_PORT = 8000  # the chart's metrics.port

# The two requests of docs/install.md step 5 and the model's answers to them.
V1_BODY = {"instances": [[5.1, 3.5, 1.4, 0.2], {"sepal length (cm)": 6.7, "sepal width (cm)": 3.0,
                                                 "petal length (cm)": 5.2, "petal width (cm)": 2.3}]}
V2_BODY = {"id": "req-1", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64",
                                      "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}],
           "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
ANSWERS = ["setosa", "virginica"]

# Bounds: a cold image start on two shared cores, training 100 trees, two serving replicas.
OPERATOR_READY_TIMEOUT = 300
TRAINING_TIMEOUT = 420
SERVING_TIMEOUT = 300
FIRST_ANSWER_TIMEOUT = 60
CLEANUP_TIMEOUT = 120


def diagnostics(cluster, namespace: str = NAMESPACE) -> str:
    """What a reader needs when a step fails: the objects, and the operator's, the trainers' and the servers' logs."""
    out = []
    commands = [
        ("get", "pods,jobs,deployments,services,pvc,trainingjobs,modeldeployments,driftpolicies", "-n", namespace,
         "-o", "wide"),
        ("get", "pv", "-o", "wide"),
        ("describe", "trainingjobs,modeldeployments", "-n", namespace),
        ("describe", "pods", "-n", namespace),
        ("logs", "-n", namespace, "-l", "app.kubernetes.io/component=operator", "--all-containers", "--tail=200",
         "--prefix"),
        ("logs", "-n", namespace, "-l", "job-name", "--tail=100", "--prefix"),
        ("logs", "-n", namespace, "-l", "app.kubernetes.io/component=serving", "--tail=100", "--prefix"),
    ]
    for args in commands:
        try:
            text = kubectl(cluster, *args, timeout=30)
        except (AssertionError, OSError, TimeoutError) as exc:
            text = f"(failed: {exc})"
        out.append(f"$ kubectl {' '.join(args)}\n{text}")
    return "\n".join(out)


@contextlib.contextmanager
def explained(cluster, namespace: str = NAMESPACE):
    """Print the diagnostics when the block fails (pytest shows a failed test's output)."""
    try:
        yield
    except BaseException:
        print(diagnostics(cluster, namespace))
        raise


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0):
    """tests.waiting's, with the cluster tests' argument order and a slower default poll."""
    return waiting.wait_until(predicate, timeout, interval, what)


def iris_training_job(name: str, *, model: str = "iris", params: dict | None = None) -> dict:
    """examples/iris/trainingjob.yaml under another name (and model, or estimator parameters), in the test namespace."""
    tj = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    tj["metadata"] = {"name": name, "namespace": NAMESPACE}
    tj["spec"]["model"] = model
    if params is not None:
        tj["spec"]["estimator"]["params"] = params
    return tj


def get_json(cluster, *args: str, namespace: str = NAMESPACE) -> dict:
    return json.loads(kubectl(cluster, "get", *args, "-n", namespace, "-o", "json"))


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def persistent_volumes(store_dir: Path, namespace: str = NAMESPACE) -> str:
    """hostPath volumes pre-bound to the chart's claims in ``namespace``, writable by the pods' uid."""
    items = []
    for claim, size in CLAIMS.items():
        path = store_dir / claim
        path.mkdir(parents=True)
        path.chmod(0o770)
        os.chown(path, POD_UID, POD_UID)
        items.append(host_path_volume(path, claim, namespace, size))
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def host_path_volume(path: Path, claim: str, namespace: str, size: str) -> dict:
    """A PersistentVolume of the host directory ``path``, pre-bound to the claim ``namespace/claim``."""
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"{namespace}-{claim}"},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": claim},
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }


@contextlib.contextmanager
def data_claim(cluster, directory: Path, claim: str, namespace: str = NAMESPACE):
    """A claim ``claim`` bound to a hostPath volume of ``directory`` (readable by the pods' uid); removed afterwards."""
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    pv = host_path_volume(directory, claim, namespace, "1Gi")
    volume = pv["metadata"]["name"]
    objects = {"apiVersion": "v1", "kind": "List", "items": [
        pv,
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": volume,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]}
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(objects))
    try:
        yield f"pvc://{claim}"
    finally:
        with contextlib.suppress(AssertionError):
            kubectl(cluster, "delete", "pvc", claim, "-n", namespace, "--ignore-not-found",
                    f"--timeout={CLEANUP_TIMEOUT}s", timeout=CLEANUP_TIMEOUT + 30)
            kubectl(cluster, "delete", "pv", volume, "--ignore-not-found", f"--timeout={CLEANUP_TIMEOUT}s",
                    timeout=CLEANUP_TIMEOUT + 30)


def uninstall(cluster, helm, kubeconfig: str) -> None:
    """docs/install.md's Uninstall: the example first (while the operator still runs), then the release."""
    def run(*args: str, timeout: float = CLEANUP_TIMEOUT) -> None:
        with contextlib.suppress(AssertionError):
            kubectl(cluster, *args, timeout=timeout + 30)

    run("delete", "-n", NAMESPACE, "-f", str(ROOT / "examples" / "iris"), "--ignore-not-found",
        f"--timeout={CLEANUP_TIMEOUT}s")
    helm("uninstall", RELEASE, kubeconfig, "-n", NAMESPACE, "--wait", f"--timeout={CLEANUP_TIMEOUT}s",
         check=False, timeout=CLEANUP_TIMEOUT + 30)
    run("delete", "pvc", "-n", NAMESPACE, *CLAIMS, "--ignore-not-found", f"--timeout={CLEANUP_TIMEOUT}s")
    run("delete", "pv", *(f"{NAMESPACE}-{c}" for c in CLAIMS), "--ignore-not-found", f"--timeout={CLEANUP_TIMEOUT}s")
    run("delete", "namespace", NAMESPACE, "--ignore-not-found", f"--timeout={CLEANUP_TIMEOUT}s")


def test_the_chart_runs_the_operator_as_a_pod(cluster, images, installed) -> None:
    with explained(cluster):
        pods = get_json(cluster, "pods", "-l", "app.kubernetes.io/component=operator")["items"]
        assert pods, "the chart's Deployment made no operator pod"
        names = tuple(p["metadata"]["name"] for p in pods)

        # One replica takes the Lease: the operator reached the API server from its pod.
        def holder() -> str | None:
            leases = get_json(cluster, "leases")["items"]
            return next((h for lease in leases if (h := lease["spec"].get("holderIdentity") or "").startswith(names)),
                        None)

        wait_until(holder, 60, "an operator pod holding the leader Lease")
        for pod in get_json(cluster, "pods", "-l", "app.kubernetes.io/component=operator")["items"]:
            ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            assert ready.get("Ready") == "True", pod["status"]
            # The image the tests built, never pulled, and a token to talk to the API server.
            (container,) = pod["spec"]["containers"]
            assert container["image"] == images["operator"].ref and container["imagePullPolicy"] == "Never"
            assert any(v.get("projected") for v in pod["spec"]["volumes"]), "no service-account token volume"
            (state,) = pod["status"]["containerStatuses"]
            assert state["restartCount"] == 0, state  # it did not exit after leading (as without POD_ID)


def test_iris_trains_serves_and_answers_through_the_service(cluster, installed, capsys) -> None:
    with explained(cluster):
        started = time.monotonic()
        kubectl(cluster, "apply", "-n", NAMESPACE, "-f", str(ROOT / "examples" / "iris"))

        def phase() -> str | None:
            status = get_json(cluster, "trainingjob", TRAINING_JOB).get("status") or {}
            assert status.get("phase") != "Failed", status
            return status if status.get("phase") == "Succeeded" else None

        status = wait_until(phase, TRAINING_TIMEOUT, f"TrainingJob {TRAINING_JOB} Succeeded")
        trained = time.monotonic()
        digest = status["artifact"]["sha256"].removeprefix("sha256:")
        assert len(digest) == 64, status["artifact"]
        # The trainer ran in a pod of the Job and wrote the artifact to the claim's volume.
        (pod,) = get_json(cluster, "pods", "-l", f"job-name={TRAINING_K8S_JOB}")["items"]
        (state,) = pod["status"]["containerStatuses"]
        assert state["state"]["terminated"]["exitCode"] == 0, state
        assert json.loads(state["state"]["terminated"]["message"])["sha256"].removeprefix("sha256:") == digest
        stored = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in (installed / "mlops-model-store").rglob("*")
                  if p.is_file()}
        assert digest in stored, f"no file with sha256 {digest} in the store volume: {sorted(map(str, stored.values()))}"
        assert stored[digest].stat().st_uid == POD_UID

        kubectl(cluster, "wait", "-n", NAMESPACE, "--for=condition=Ready", "modeldeployment/iris",
                f"--timeout={SERVING_TIMEOUT}s", timeout=SERVING_TIMEOUT + 30)
        deployment = get_json(cluster, "deployment", "iris")
        assert deployment["status"].get("readyReplicas") == 2, deployment["status"]  # examples/iris: two replicas
        service = get_json(cluster, "service", "iris")
        cluster_ip = service["spec"]["clusterIP"]
        assert cluster_ip.startswith(SERVICE_PREFIX), cluster_ip  # only the cluster's own range
        port = next(p["port"] for p in service["spec"]["ports"])
        base = f"http://{cluster_ip}:{port}"

        def first_v1() -> dict | None:
            try:
                return post(f"{base}/v1/models/iris:predict", V1_BODY)
            except (urllib.error.URLError, OSError):
                return None  # kube-proxy has not programmed the endpoints yet

        v1 = wait_until(first_v1, FIRST_ANSWER_TIMEOUT, f"a V1 answer from {base}", interval=0.5)
        answered = time.monotonic()
        assert v1["predictions"] == ANSWERS
        v2 = post(f"{base}/v2/models/iris/infer", V2_BODY)
        assert v2["model_name"] == "iris" and v2["model_version"] == TRAINING_K8S_JOB and v2["id"] == "req-1"
        outputs = {o["name"]: o for o in v2["outputs"]}
        assert outputs["predict"]["data"] == ANSWERS
        assert outputs["predict_proba"]["shape"] == [2, 3]
        proba = outputs["predict_proba"]["data"]
        assert proba[0] == max(proba[0:3]) and proba[5] == max(proba[3:6])
    with capsys.disabled():
        print(f"\ncluster install: kubectl apply -f examples/iris -> TrainingJob Succeeded {trained - started:.1f}s, "
              f"-> first prediction through the Service {answered - started:.1f}s")


def reconciles(cluster, kind: str) -> float:
    """The operator pods' count of finished reconciles of ``kind``, from their own /metrics (pod IPs, on the bridge)."""
    total = 0.0
    for pod in get_json(cluster, "pods", "-l", "app.kubernetes.io/component=operator")["items"]:
        ip = pod["status"].get("podIP")
        if not ip or not ip.startswith(POD_PREFIX):
            continue
        try:
            with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            continue  # not serving yet
        for line in text.splitlines():
            if line.startswith("mlops_operator_reconciles_total{") and f'kind="{kind}"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_training_pods_deleted_while_the_job_stays_keep_the_training_job_succeeded(cluster, installed) -> None:
    """What pod garbage collection does to a finished Job (issue 14, test 5): the result lives on in the status."""
    with explained(cluster):
        kubectl(cluster, "apply", "-n", NAMESPACE, "-f", str(ROOT / "examples" / "iris" / "trainingjob.yaml"))
        before = wait_until(lambda: (s := get_json(cluster, "trainingjob", TRAINING_JOB).get("status") or {})
                            .get("phase") == "Succeeded" and s, TRAINING_TIMEOUT, f"TrainingJob {TRAINING_JOB} Succeeded")
        kubectl(cluster, "delete", "pods", "-n", NAMESPACE, "-l", f"job-name={TRAINING_K8S_JOB}", "--timeout=60s",
                timeout=90)
        assert get_json(cluster, "pods", "-l", f"job-name={TRAINING_K8S_JOB}")["items"] == []
        job = get_json(cluster, "job", TRAINING_K8S_JOB)
        assert job["status"].get("succeeded") == 1, job["status"]

        # Make the operator look again now that the pods are gone, and wait until it has.
        counted = reconciles(cluster, "TrainingJob")
        kubectl(cluster, "annotate", "-n", NAMESPACE, "trainingjob", TRAINING_JOB, "--overwrite",
                f"test.mlops.dev/poke={time.time_ns()}")
        wait_until(lambda: reconciles(cluster, "TrainingJob") > counted, 60, "a TrainingJob reconcile after the pods went")

        after = get_json(cluster, "trainingjob", TRAINING_JOB)["status"]
        for field in ("phase", "modelVersion", "artifact", "metrics"):
            assert after.get(field) == before.get(field), (field, before.get(field), after.get(field))
        assert after["phase"] == "Succeeded" and after["artifact"]["sha256"]
        assert after["metrics"]["accuracy"] >= 0.9  # examples/iris' quality gate
        # No second run either: still the one Job of generation 1.
        jobs = json.loads(kubectl(cluster, "get", "jobs", "-n", NAMESPACE, "-o", "json"))["items"]
        assert [j["metadata"]["name"] for j in jobs] == [TRAINING_K8S_JOB]
