"""k8s/cache.py: what the operator keeps of each object, and when its reads come from kopf's indices."""

from __future__ import annotations

import json

from mlops_operator.controllers import labels
from mlops_operator.controllers.cluster import JOBS, PODS, SERVICES, TRAINING_JOBS
from mlops_operator.k8s.cache import LAST_APPLIED, CachedReads, kept


def _tj(name: str, model: str, **labels_: str) -> dict:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": "ns", "labels": labels_, "resourceVersion": "7",
                         "managedFields": [{"manager": "kubectl"}], "annotations": {LAST_APPLIED: "{...}", "keep": "me"}},
            "spec": {"model": model}, "status": {"phase": "Succeeded"}}


def test_kept_drops_what_no_reconcile_reads() -> None:
    tj = json.loads(kept("TrainingJob", _tj("a", "iris")))
    assert "managedFields" not in tj["metadata"] and tj["metadata"]["annotations"] == {"keep": "me"}
    assert tj["spec"] == {"model": "iris"} and tj["status"] == {"phase": "Succeeded"}
    job = json.loads(kept("Job", {"metadata": {"name": "j"}, "spec": {"template": {"big": "x" * 1000}}, "status": {"active": 1}}))
    assert job == {"metadata": {"name": "j"}, "status": {"active": 1}}
    pod = {"metadata": {"name": "p"}, "status": {"podIP": "10.0.0.9"},
           "spec": {"containers": [{"name": "server", "image": "i", "env": [{"name": "SECRET"}],
                                    "ports": [{"name": "http", "containerPort": 8080}]}], "volumes": [{"name": "v"}]}}
    assert json.loads(kept("Pod", pod))["spec"] == {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": 8080}]}]}


def _indices() -> dict:
    """kopf's index shape: key -> the values of every object that produced it."""
    a, b, r = _tj("a", "iris"), _tj("b", "wine"), _tj("iris-retrain-1", "iris", **{labels.TRIGGERED_BY: "p"})
    return {
        "objects_trainingjobs": {("ns", t["metadata"]["name"]): [kept("TrainingJob", t)] for t in (a, b, r)},
        "training_jobs_by_model": {("ns", "iris"): ["a", "iris-retrain-1"], ("ns", "wine"): ["b"]},
        "training_jobs_by_policy": {("ns", "p"): ["iris-retrain-1"]},
        "objects_jobs": {},
    }


def test_reads_wait_for_the_indices_then_answer_from_them() -> None:
    cache = CachedReads()
    assert cache.get(TRAINING_JOBS, "ns", "a") == (False, None)  # no indices yet
    cache.attach(_indices())
    assert cache.get(TRAINING_JOBS, "ns", "a") == (False, None)  # not complete until a handler ran
    cache.mark_ready()
    answered, tj = cache.get(TRAINING_JOBS, "ns", "a")
    assert answered and tj["spec"]["model"] == "iris"
    assert cache.get(JOBS, "ns", "a-g1") == (True, None)  # indexed kind, no such object: absent
    assert cache.get(SERVICES, "ns", "a") == (False, None)  # a kind not indexed here: the API server answers
    tj["spec"]["model"] = "changed"
    assert cache.get(TRAINING_JOBS, "ns", "a")[1]["spec"]["model"] == "iris"  # every read is a copy
    cache.detach()
    assert cache.get(TRAINING_JOBS, "ns", "a") == (False, None)


def test_the_selectors_the_reconciles_use() -> None:
    cache = CachedReads()
    cache.attach(_indices())
    cache.mark_ready()
    names = lambda objs: [o["metadata"]["name"] for o in objs]  # noqa: E731
    assert names(cache.list(TRAINING_JOBS, "ns", None, {"spec.model": "iris"})) == ["a", "iris-retrain-1"]
    assert names(cache.list(TRAINING_JOBS, "ns", {labels.TRIGGERED_BY: "p"}, None)) == ["iris-retrain-1"]
    assert cache.list(TRAINING_JOBS, "ns", None, {"spec.model": "none"}) == []
    # What no index answers goes to the API server: another selector, two at once, every namespace, no index.
    assert cache.list(TRAINING_JOBS, "ns", {"other": "x"}, None) is None
    assert cache.list(TRAINING_JOBS, "ns", {labels.TRIGGERED_BY: "p"}, {"spec.model": "iris"}) is None
    assert cache.list(TRAINING_JOBS, None, None, {"spec.model": "iris"}) is None
    assert cache.list(PODS, "ns", {"job-name": "a-g1"}, None) is None
