"""The resource models: manifests round-trip, defaults fill in, rules reject."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from mlops_operator.api.base import parse_duration, parse_quantity
from mlops_operator.api.driftpolicy import DriftPolicy
from mlops_operator.api.modeldeployment import ModelDeployment
from mlops_operator.api.trainingjob import TrainingJob
from mlops_operator.api.validation import validate_object
from mlops_operator.manifests import load_paths

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"TrainingJob": TrainingJob, "ModelDeployment": ModelDeployment, "DriftPolicy": DriftPolicy}


def _examples() -> list:
    return [d for d in load_paths([ROOT / "examples"]) if isinstance(d.obj, dict) and d.obj.get("kind") in MODELS]


@pytest.mark.parametrize("doc", _examples(), ids=lambda d: d.where)
def test_examples_round_trip(doc) -> None:
    """YAML → model → YAML keeps every field the user wrote, and a second pass changes nothing."""
    model = MODELS[doc.obj["kind"]].model_validate(doc.obj)
    dumped = model.to_dict()

    def contains(big, small) -> bool:
        if isinstance(small, dict):
            return all(k in big and contains(big[k], v) for k, v in small.items())
        if isinstance(small, list):
            return len(big) == len(small) and all(contains(b, s) for b, s in zip(big, small))
        return big == small

    assert contains(dumped, doc.obj)
    again = MODELS[doc.obj["kind"]].model_validate(yaml.safe_load(yaml.safe_dump(dumped))).to_dict()
    assert again == dumped


def test_training_job_defaults() -> None:
    tj = TrainingJob.model_validate(
        {
            "apiVersion": "mlops.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "t"},
            "spec": {"model": "m", "data": {"source": "sklearn://wine"}, "estimator": {"class": "sklearn.svm.SVC"}},
        }
    ).to_dict()["spec"]
    assert tj["data"]["target"] == "target"
    assert tj["data"]["validation"] == {"fraction": 0.2, "stratify": True, "seed": 0}
    assert tj["preprocessing"]["numeric"] == {"impute": "median", "scale": "standard"}
    assert tj["backoffLimit"] == 1 and tj["activeDeadlineSeconds"] == 3600
    assert tj["estimator"] == {"class": "sklearn.svm.SVC", "params": {}}


def test_drift_policy_defaults() -> None:
    dp = DriftPolicy.model_validate(
        {
            "apiVersion": "mlops.dev/v1alpha1",
            "kind": "DriftPolicy",
            "metadata": {"name": "p"},
            "spec": {"deployment": "d", "retrain": {"from": "t"}},
        }
    ).to_dict()["spec"]
    assert dp["interval"] == "60s"
    assert dp["window"] == {"minSamples": 500}
    assert [c["type"] for c in dp["checks"]] == ["dataDrift"]
    assert dp["checks"][0]["correction"] == "bh" and dp["checks"][0]["sensitivity"] == "default"
    assert "q" not in dp["checks"][0]  # from the sensitivity preset
    assert dp["trigger"] == {"consecutive": 2, "cooldown": "30m", "maxRetrainsPerDay": 4}
    assert dp["promotion"] == {"mode": "auto", "mustBeat": "current"}
    assert dp["retrain"] == {"from": "t", "includeFeedback": True}


def test_model_deployment_leaves_replicas_unset_for_the_controller() -> None:
    md = ModelDeployment.model_validate(
        {"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "d"}, "spec": {"model": "m"}}
    ).to_dict()["spec"]
    assert "replicas" not in md and md["version"] == "latest"
    assert md["server"]["maxBatchSize"] == 1024


@pytest.mark.parametrize(
    "text,seconds", [("60s", 60), ("30m", 1800), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "ten minutes", "-5s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text, value", [("500m", "0.5"), ("1Gi", str(2**30)), ("1e3", "1000"), ("1.e3", "1000"),
                                         (".5", "0.5"), ("+2", "2"), ("1E-3", "0.001")])
def test_parse_quantity(text: str, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["1e1.5", "1.2.3", "-1", "1 Gi", "Gi", "1e"])
def test_parse_quantity_rejects_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_a_fractional_exponent_is_a_field_error_not_a_crash() -> None:
    """Kubernetes cannot parse ``1e1.5``; the offline validator says so by field (it raised
    decimal.InvalidOperation once, when a request and a limit were both set)."""
    tj = yaml.safe_load((ROOT / "tests" / "data" / "invalid" / "tj-fractional-exponent.yaml").read_text())
    tj["spec"]["resources"]["limits"] = {"cpu": "2"}
    errors = [str(e) for e in validate_object(tj)]
    assert errors and all("spec.resources.requests.cpu" in e for e in errors), errors


@pytest.mark.parametrize("source", ["s3://training-data/iris/2026-11.parquet", "s3://my.bucket-1/a.csv"])
def test_an_s3_training_source_is_accepted(source: str) -> None:
    """Training data on the store's object storage (the same endpoint and credentials) passes the schema."""
    spec = {"model": "m", "data": {"source": source}, "estimator": {"class": "sklearn.svm.SVC"}}
    tj = TrainingJob.model_validate({"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob",
                                     "metadata": {"name": "t"}, "spec": spec})
    assert tj.to_dict()["spec"]["data"]["source"] == source


@pytest.mark.parametrize("source", ["s3://bucket", "s3://bucket/", "s3://ab/key", "s3://Upper/key"])
def test_an_s3_source_without_a_key_or_with_a_bad_bucket_names_the_field(source: str) -> None:
    errors = validate_object({"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "t"},
                              "spec": {"model": "m", "data": {"source": source}, "estimator": {"class": "sklearn.svm.SVC"}}})
    assert any("spec.data.source" in str(e) for e in errors), errors
