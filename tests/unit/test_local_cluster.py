"""The in-memory cluster keeps the Kubernetes semantics the controllers rely on."""

from __future__ import annotations

import asyncio

from mlops_operator.controllers.cluster import JOBS, TRAINING_JOBS
from mlops_operator.local.cluster import MemoryCluster


def _tj(spec: dict | None = None) -> dict:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "t", "namespace": "ns"},
            "spec": spec or {"model": "m"}}


def _run(coro):
    return asyncio.run(coro)


def test_create_is_idempotent_and_409_returns_the_existing_object() -> None:
    c = MemoryCluster()
    first = _run(c.create(_tj()))
    again = _run(c.create(_tj({"model": "other"})))
    assert again["metadata"]["uid"] == first["metadata"]["uid"] and again["spec"] == {"model": "m"}


def test_generation_moves_with_spec_only() -> None:
    c = MemoryCluster()
    c.apply_now(_tj())
    c.patch_status_now(TRAINING_JOBS, "ns", "t", {"phase": "Running"})
    assert c.get_now(TRAINING_JOBS, "ns", "t")["metadata"]["generation"] == 1
    c.apply_now(_tj())  # same spec: nothing changes
    assert c.get_now(TRAINING_JOBS, "ns", "t")["metadata"]["generation"] == 1
    c.apply_now(_tj({"model": "m", "x": 1}))
    got = c.get_now(TRAINING_JOBS, "ns", "t")
    assert got["metadata"]["generation"] == 2 and got["status"] == {"phase": "Running"}


def test_status_is_replaced_not_merged() -> None:
    c = MemoryCluster()
    c.apply_now(_tj())
    c.patch_status_now(TRAINING_JOBS, "ns", "t", {"phase": "Succeeded", "artifact": {"sha256": "x"}})
    c.patch_status_now(TRAINING_JOBS, "ns", "t", {"phase": "Pending"})
    assert c.get_now(TRAINING_JOBS, "ns", "t")["status"] == {"phase": "Pending"}


def test_delete_cascades_through_owner_references() -> None:
    c = MemoryCluster()
    owner = c.create_now(_tj())
    ref = {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "name": "t", "uid": owner["metadata"]["uid"], "controller": True}
    c.create_now({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t-g1", "namespace": "ns", "ownerReferences": [ref]}})
    c.create_now({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "unrelated", "namespace": "ns"}})
    c.delete_now(TRAINING_JOBS, "ns", "t")
    assert [j["metadata"]["name"] for j in c.list_now(JOBS)] == ["unrelated"]


def test_list_filters_by_namespace_and_labels() -> None:
    c = MemoryCluster()
    for ns, lbl in (("a", "x"), ("a", "y"), ("b", "x")):
        c.create_now({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{ns}{lbl}", "namespace": ns, "labels": {"k": lbl}}})
    assert [j["metadata"]["name"] for j in c.list_now(JOBS, "a", {"k": "x"})] == ["ax"]
    assert len(c.list_now(JOBS, None, {"k": "x"})) == 2


def test_change_feed_and_copies() -> None:
    c = MemoryCluster()

    async def scenario() -> list[str]:
        feed = c.subscribe()
        c.apply_now(_tj())
        got = c.get_now(TRAINING_JOBS, "ns", "t")
        got["spec"]["model"] = "mutated"  # callers get copies: the store is unaffected
        assert c.get_now(TRAINING_JOBS, "ns", "t")["spec"]["model"] == "m"
        c.patch_status_now(TRAINING_JOBS, "ns", "t", {"phase": "Running"})
        c.delete_now(TRAINING_JOBS, "ns", "t")
        return [feed.get_nowait().type for _ in range(feed.qsize())]

    assert _run(scenario()) == ["ADDED", "MODIFIED", "DELETED"]
