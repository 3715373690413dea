"""The loop on the cluster with everything on ``s3://`` (issue 17): data, models and feedback in a real S3 server.

A second release of the chart, in a namespace of its own and watching only
that namespace, is installed with ``store.uri`` and ``feedback.uri`` on a
bucket of SeaweedFS (tests/s3server.py) listening on the cluster bridge's
address, so that pods reach it as they would reach MinIO in a cluster. The
credentials are a Secret of that namespace (SeaweedFS' ``writer`` identity:
read, write, list, no bucket administration), referenced by name in the
chart's values. No claim exists in the namespace: the trainer reads its
Parquet data from the bucket, writes the version there, the server downloads
and verifies it, feedback goes back as objects, the retrain reads it, and the
operator reads reference profiles from the bucket for its drift checks.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import obstore
import pytest

from mlops_operator.local.demo import Timeline, Traffic
from mlops_operator.runtime.data import read_source
from tests.cluster.node import BRIDGE_IP
from tests.cluster.test_dask import running_dask_operator
from tests.cluster.test_install import CLEANUP_TIMEOUT, OPERATOR_READY_TIMEOUT, ROOT, explained, get_json
from tests.cluster.test_loop import assert_recovered, delete_loop, demo_objects, drive_loop
from tests.cluster.test_smoke import kubectl
from tests import bigdata
from tests.s3server import REGION, S3Server, running_s3

NAMESPACE = "mlops-s3"
RELEASE = "mlops-s3"
OPERATOR = f"deployment/{RELEASE}-mlops-operator"
SECRET = "mlops-s3-credentials"
MODEL = "cancer-s3"
DATA_KEY = "data/breast-cancer.parquet"


@pytest.fixture(scope="module")
def s3_on_bridge(cluster, tmp_path_factory) -> S3Server:
    """SeaweedFS on the bridge's address: pods reach it, and so does the host (it is a local address)."""
    with running_s3(tmp_path_factory.mktemp("seaweedfs-bridge"), host=BRIDGE_IP) as server:
        yield server


@pytest.fixture(scope="module")
def s3_release(cluster, images, helm, s3_on_bridge, tmp_path_factory) -> str:
    """The chart installed on ``s3://<bucket>`` in its own namespace, with DaskJobs on; the bucket's name.

    The Dask operator (a host process, as in test_dask.py) watches the namespace; it
    outlives the release, whose removal deletes what it made.
    """
    with running_dask_operator(cluster, NAMESPACE, tmp_path_factory.mktemp("dask-operator-s3") / "dask-operator.log"):
        yield from _s3_release(cluster, images, helm, s3_on_bridge)


def _s3_release(cluster, images, helm, server: S3Server):
    dask_image = images["operator"].ref  # the tests' one image carries the dask extra
    bucket = server.new_bucket("cluster")
    repository, _, tag = images["operator"].ref.rpartition(":")
    kubeconfig = f"--kubeconfig={cluster.kubeconfig}"
    # Alone (``-k s3``) this release brings the CRDs; after the session's first release it leaves them to that one.
    crds_exist = "trainingjobs.mlops.dev" in kubectl(cluster, "get", "crds", "-o", "name")
    kubectl(cluster, "create", "namespace", NAMESPACE)
    try:
        with explained(cluster, NAMESPACE):
            kubectl(cluster, "create", "secret", "generic", SECRET, "-n", NAMESPACE,
                    f"--from-literal=AWS_ACCESS_KEY_ID={server.access_key}",
                    f"--from-literal=AWS_SECRET_ACCESS_KEY={server.secret_key}")
            helm("install", RELEASE, str(ROOT / "charts" / "mlops-operator"), kubeconfig, "--namespace", NAMESPACE,
                 "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                 "--set", "image.pullPolicy=Never",
                 "--set", f"watchNamespaces={{{NAMESPACE}}}", "--set", f"crds.enabled={str(not crds_exist).lower()}",
                 "--set", f"store.uri=s3://{bucket}/models", "--set", f"feedback.uri=s3://{bucket}/feedback",
                 "--set", f"store.s3.endpoint={server.endpoint}", "--set", f"store.s3.region={REGION}",
                 "--set", "store.s3.addressingStyle=path", "--set", f"store.s3.secretName={SECRET}",
                 "--set", "dask.enabled=true", "--set", f"dask.image={dask_image}")
            kubectl(cluster, "-n", NAMESPACE, "rollout", "status", OPERATOR, f"--timeout={OPERATOR_READY_TIMEOUT}s",
                    timeout=OPERATOR_READY_TIMEOUT + 30)
        yield bucket
    finally:
        try:
            delete_loop(cluster, MODEL, NAMESPACE)  # while the operator still runs
            kubectl(cluster, "delete", "-n", NAMESPACE, "trainingjobs", "--all", f"--timeout={CLEANUP_TIMEOUT}s",
                    timeout=CLEANUP_TIMEOUT + 30)
        except AssertionError:
            pass
        helm("uninstall", RELEASE, kubeconfig, "-n", NAMESPACE, "--wait", f"--timeout={CLEANUP_TIMEOUT}s",
             check=False, timeout=CLEANUP_TIMEOUT + 30)
        kubectl(cluster, "delete", "namespace", NAMESPACE, "--ignore-not-found", f"--timeout={CLEANUP_TIMEOUT}s",
                timeout=CLEANUP_TIMEOUT + 30)


def upload_training_data(server: S3Server, bucket: str) -> str:
    """The demo's breast-cancer table as Parquet in the bucket (what a user's pipeline would have put there)."""
    frame = read_source("sklearn://breast_cancer", target="diagnosis")
    data = io.BytesIO()
    frame.to_parquet(data, index=False)
    obstore.put(server.store(bucket), DATA_KEY, data.getvalue())
    return f"s3://{bucket}/{DATA_KEY}"


def test_s3_loop_on_the_cluster_trains_serves_and_retrains_from_the_bucket(cluster, s3_on_bridge, s3_release,
                                                                            tmp_path: Path, capsys) -> None:
    server, bucket = s3_on_bridge, s3_release
    objects = demo_objects(MODEL, NAMESPACE)
    source = upload_training_data(server, bucket)
    for obj in objects:
        if obj["kind"] == "TrainingJob":
            obj["spec"]["data"]["source"] = source
    timeline = Timeline()
    with explained(cluster, NAMESPACE):
        kubectl(cluster, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        result = drive_loop(cluster, timeline, Traffic(seed=2), model=MODEL, namespace=NAMESPACE)

        # Nothing of the loop touched a volume: no claim in the namespace, no claim in any pod of it.
        assert get_json(cluster, "pvc", namespace=NAMESPACE)["items"] == []
        pods = get_json(cluster, "pods", namespace=NAMESPACE)["items"]
        claims = [(p["metadata"]["name"], v["name"]) for p in pods for v in p["spec"].get("volumes", [])
                  if "persistentVolumeClaim" in v]
        assert claims == [], claims
        # ... and the credentials reached the pods from the Secret, never as literal values in a spec.
        for pod in pods:
            for container in pod["spec"]["containers"]:
                for env in container.get("env", []):
                    assert server.secret_key not in json.dumps(env), (pod["metadata"]["name"], env["name"])

        # Both versions are complete in the bucket (manifest written last), and the feedback that fed the
        # retrain is there as objects of their own.
        keys = server.keys(bucket)
        for version in (result["first_version"], result["promoted_version"]):
            assert f"models/{NAMESPACE}/{MODEL}/{version}/metadata.json" in keys, (version, keys)
        feedback = [k for k in keys if k.startswith(f"feedback/{NAMESPACE}/{MODEL}/")]
        assert feedback, keys
        retrain = get_json(cluster, "trainingjob", result["retrain"], namespace=NAMESPACE)
        assert retrain["spec"]["data"]["source"] == source  # the retrain read the same bucket, plus the feedback

    with capsys.disabled():
        steps = ", ".join(f"{e['event']} {e['t']}s" for e in timeline.events)
        print(f"\ncluster loop on s3://: {steps}; {len(feedback)} feedback objects; error rate "
              f"{result['error_rate_before_drift']} -> {result['error_rate_after_drift']} -> "
              f"{result['error_rate_after_promotion']}")
    assert_recovered(result)


# -- more rows than a trainer's memory limit ------------------------------------------------------

BIG_KEY = "big/events.csv.gz"
BIG_ROWS = bigdata.ROWS
"""2.1 GB as the trainer's float64 columns (16 features and the label)."""


def upload_big_csv(server: S3Server, bucket: str) -> str:
    """15.7 million rows as one gzip'd CSV of a few MB: a block of rows repeated, inside gzip's window, so the
    object passes the single-pod trainer's download limit and only its parsed columns are large."""
    import gzip

    import numpy as np

    rng = np.random.default_rng(0)
    block_rows = 250
    X = rng.integers(0, 8, size=(block_rows, 16)) / 2
    y = (X @ np.linspace(-1, 1, 16) > 0).astype(int)
    block = "".join(",".join(f"{v:g}" for v in row) + f",{label}\n" for row, label in zip(X, y)).encode()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz:
        gz.write((",".join(f"f{j}" for j in range(16)) + ",label\n").encode())
        for _ in range(BIG_ROWS // block_rows):
            gz.write(block)
    obstore.put(server.store(bucket), BIG_KEY, out.getvalue())
    return f"s3://{bucket}/{BIG_KEY}"


def test_dask_baseline_a_single_pod_trainer_over_its_memory_limit_fails_as_oomkilled(cluster, s3_on_bridge,
                                                                                      s3_release) -> None:
    """The kubelet's OOMKilled, not a guess: the TrainingJob says which limit and what to change, stores nothing."""
    from tests.cluster.test_smoke import wait_for

    server, bucket = s3_on_bridge, s3_release
    source = upload_big_csv(server, bucket)
    name = "events-one-pod"
    tj = {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name, "namespace": NAMESPACE},
          "spec": {"model": name, "data": {"source": source, "target": "label"},
                   "estimator": {"class": "sklearn.linear_model.SGDClassifier"},
                   "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                   "backoffLimit": 0}}
    with explained(cluster, NAMESPACE):
        kubectl(cluster, "apply", "-f", "-", input=json.dumps(tj))
        try:
            failed = wait_for(lambda: (lambda o: o if (o.get("status") or {}).get("phase") == "Failed" else None)(
                get_json(cluster, "trainingjob", name, namespace=NAMESPACE)), 300, f"TrainingJob {name} to fail")
            ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
            assert ready["reason"] == "OOMKilled", ready
            assert "more than its memory limit (512Mi)" in ready["message"] and "spec.distributed" in ready["message"]
            events = get_json(cluster, "events", "--field-selector", f"involvedObject.name={name}", namespace=NAMESPACE)
            assert any(e["reason"] == "OOMKilled" and e["type"] == "Warning" for e in events["items"]), events["items"]
            assert not [k for k in server.keys(bucket) if k.startswith(f"models/{NAMESPACE}/{name}/")]
        finally:
            kubectl(cluster, "delete", "trainingjob", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=120)


def test_dask_workers_of_512mib_train_on_s3_partitions_larger_than_their_memory(cluster, s3_on_bridge, s3_release,
                                                                               tmp_path: Path, capsys) -> None:
    """The same rows as above, as Parquet under a prefix: two worker pods of 512 MiB read its row groups themselves."""
    import time

    from tests.cluster.test_smoke import wait_for

    server, bucket = s3_on_bridge, s3_release
    for path in bigdata.write_parquet(tmp_path / "events", files=4):
        obstore.put(server.store(bucket), f"big/events/{path.name}", path.read_bytes())
        path.unlink()
    name = "events-dask"
    tj = {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name, "namespace": NAMESPACE},
          "spec": {"model": name, "data": {"source": f"s3://{bucket}/big/events/", "target": "label"},
                   "estimator": {"class": "sklearn.linear_model.SGDClassifier",
                                 "params": {"max_iter": 1, "tol": None, "random_state": 0}},
                   "preprocessing": {"numeric": {"impute": "none", "scale": "standard"}},
                   "qualityGate": {"metric": "accuracy", "minimum": 0.85},
                   "resources": {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi"}},  # the runner
                   "distributed": {"engine": "dask", "workers": 2,
                                   "resources": {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi"}}},
                   "activeDeadlineSeconds": 1200, "backoffLimit": 0}}
    workers: dict[str, dict] = {}

    def outcome() -> dict | None:
        for pod in get_json(cluster, "pods", "-l", "dask.org/component=worker", namespace=NAMESPACE)["items"]:
            workers[pod["metadata"]["name"]] = pod
        status = get_json(cluster, "trainingjob", name, namespace=NAMESPACE).get("status") or {}
        assert status.get("phase") != "Failed", status
        return status if status.get("phase") == "Succeeded" else None

    with explained(cluster, NAMESPACE):
        started = time.monotonic()
        kubectl(cluster, "apply", "-f", "-", input=json.dumps(tj))
        try:
            status = wait_for(outcome, 1200, f"TrainingJob {name} Succeeded")
            seconds = time.monotonic() - started
            assert status["gate"]["result"] == "Passed", status["gate"]
            meta = json.loads(bytes(obstore.get(server.store(bucket),
                                                f"models/{NAMESPACE}/{name}/{status['modelVersion']}/metadata.json").bytes()))
            assert meta["rows"]["total"] == bigdata.ROWS and meta["distributed"]["partitions"] == -(-bigdata.ROWS // bigdata.ROW_GROUP)
            # Two worker pods, each limited to a quarter of the data's size, and none of them ever restarted.
            assert len(workers) == 2, sorted(workers)
            for pod in workers.values():
                assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"
                restarts = [s.get("restartCount", 0) for s in pod["status"].get("containerStatuses") or []]
                assert restarts and max(restarts) == 0, pod["status"]
        finally:
            kubectl(cluster, "delete", "trainingjob", name, "-n", NAMESPACE, "--ignore-not-found", "--wait=true",
                    timeout=CLEANUP_TIMEOUT + 30)
    with capsys.disabled():
        print(f"\ncluster dask beyond memory: {bigdata.ROWS:,} rows ({bigdata.IN_MEMORY / 1e9:.1f} GB as float64) on "
              f"2 workers of 512Mi, Succeeded in {seconds:.0f}s, accuracy {status['metrics']['accuracy']:.4f}")
