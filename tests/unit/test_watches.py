"""Which objects a change concerns: the one table the kopf operator and the local manager both read."""

from __future__ import annotations

from mlops_operator.controllers import labels
from mlops_operator.controllers.reconcile.watches import affected

MDS = {("ml", "iris"): ["iris", "iris-canary"], ("ml", "cancer"): ["cancer"]}
DPS = {("ml", "iris"): ["iris-drift"]}


def keys(kind: str, obj: dict) -> set:
    return affected(kind, obj, deployments_of_model=lambda ns, m: MDS.get((ns, m), []),
                    policies_of_deployment=lambda ns, n: DPS.get((ns, n), []))


def test_a_training_job_reaches_the_deployments_of_its_model_and_its_policy() -> None:
    tj = {"metadata": {"name": "iris-retrain-1", "namespace": "ml", "labels": {labels.TRIGGERED_BY: "iris-drift"}},
          "spec": {"model": "iris"}}
    assert keys("TrainingJob", tj) == {("TrainingJob", "ml", "iris-retrain-1"), ("ModelDeployment", "ml", "iris"),
                                       ("ModelDeployment", "ml", "iris-canary"), ("DriftPolicy", "ml", "iris-drift")}


def test_a_model_deployment_reaches_the_policies_watching_it() -> None:
    md = {"metadata": {"name": "iris", "namespace": "ml"}, "spec": {"model": "iris"}}
    assert keys("ModelDeployment", md) == {("ModelDeployment", "ml", "iris"), ("DriftPolicy", "ml", "iris-drift")}
    assert keys("DriftPolicy", {"metadata": {"name": "p", "namespace": "ml"}}) == {("DriftPolicy", "ml", "p")}


def test_children_reach_their_owner_by_label() -> None:
    job = {"metadata": {"name": "iris-v1-g1", "namespace": "ml", "labels": {labels.TRAINING_JOB: "iris-v1"}}}
    assert keys("Job", job) == {("TrainingJob", "ml", "iris-v1")}
    serving = {"metadata": {"name": "iris-5f7", "namespace": "ml", "labels": {labels.DEPLOYMENT: "iris"}}}
    assert keys("Deployment", serving) == keys("Pod", serving) == {("ModelDeployment", "ml", "iris")}
    assert keys("Deployment", {"metadata": {"name": "web", "namespace": "ml", "labels": {}}}) == set()


def test_a_change_in_another_namespace_concerns_nothing_here() -> None:
    tj = {"metadata": {"name": "iris-v1", "namespace": "other"}, "spec": {"model": "iris"}}
    assert keys("TrainingJob", tj) == {("TrainingJob", "other", "iris-v1")}
