"""The trainer as a library: real scikit-learn data sets, artifacts loaded back, gates, champions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_operator.runtime.data import DataError
from mlops_operator.runtime.metrics import compute_metrics
from mlops_operator.runtime.pipeline import SpecError
from mlops_operator.runtime.trainer import GateFailed, TrainResult, train
from mlops_operator.store import ArtifactError, ModelStore


def quiet(*args: Any, **kwargs: Any) -> None:
    pass


def manifest(model: str = "iris", source: str = "sklearn://iris", target: str = "species", name: str | None = None,
             estimator: str = "sklearn.ensemble.RandomForestClassifier", params: dict | None = None,
             gate: dict | None = None, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name or f"{model}-v1", "namespace": "team-a", "generation": 1},
        "spec": {
            "model": model,
            "data": {"source": source, "target": target, "validation": {"fraction": 0.25, "seed": 0}},
            "estimator": {"class": estimator, "params": {"n_estimators": 20, "random_state": 0} if params is None else params},
            **spec,
        },
    }
    if gate is not None:
        doc["spec"]["qualityGate"] = gate
    return doc


def no_artifacts(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.is_file()]


def roundtrip(result: TrainResult, store: ModelStore) -> Any:
    """Load the stored version as the server will and check it predicts like the in-memory pipeline."""
    loaded = store.load_model(result.namespace, result.model, result.version, expected_sha256=result.sha256)
    assert result.X_test is not None
    np.testing.assert_array_equal(loaded.predict(result.X_test), result.pipeline.predict(result.X_test))
    if hasattr(loaded, "predict_proba"):
        np.testing.assert_array_equal(loaded.predict_proba(result.X_test), result.pipeline.predict_proba(result.X_test))
    return loaded


CASES = [
    ("iris", "species", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 20, "random_state": 0}, {"metric": "accuracy", "minimum": 0.85}),
    ("wine", "cultivar", "sklearn.linear_model.LogisticRegression", {"max_iter": 500}, {"metric": "f1_macro", "minimum": 0.85}),
    ("breast_cancer", "diagnosis", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 20, "random_state": 0}, {"metric": "roc_auc_ovr", "minimum": 0.9}),
    ("diabetes", "progression", "sklearn.ensemble.GradientBoostingRegressor", {"n_estimators": 30, "max_depth": 2, "random_state": 0}, {"metric": "rmse", "maximum": 70}),
]


@pytest.mark.parametrize(("dataset", "target", "estimator", "params", "gate"), CASES, ids=[c[0] for c in CASES])
def test_trains_real_datasets_and_loads_back(tmp_path: Path, dataset: str, target: str, estimator: str, params: dict, gate: dict) -> None:
    store = ModelStore(tmp_path)
    doc = manifest(model=dataset.replace("_", "-"), source=f"sklearn://{dataset}", target=target, estimator=estimator, params=params, gate=gate)
    result = train(doc, store, log=quiet)
    assert result.created and result.gate["result"] == "Passed"
    assert result.version == f"{dataset.replace('_', '-')}-v1-g1"
    assert result.path == tmp_path / "team-a" / result.model / result.version
    roundtrip(result, store)

    meta = store.read_metadata("team-a", result.model, result.version)
    assert meta["format"] == 1 and meta["estimator"] == estimator and meta["target"] == target
    assert meta["sha256"]["model.skops"] == result.sha256
    assert meta["dataDigest"].startswith("sha256:") and len(meta["dataDigest"]) == 71
    assert meta["rows"]["train"] + meta["rows"]["test"] == meta["rows"]["total"]
    assert meta["inputDtype"] == "float64"
    assert all(f["kind"] == "numeric" for f in meta["features"])
    assert set(meta["libraries"]) >= {"python", "scikit-learn", "numpy", "skops"}
    assert meta["lineage"]["parent"] is None
    ref = store.read_reference("team-a", result.model, result.version)
    assert set(ref["features"]) == {f["name"] for f in meta["features"]}
    if dataset == "diabetes":
        assert meta["task"] == "regression" and meta["classes"] is None
        assert set(meta["metrics"]) == {"rmse", "mae", "r2"}
        assert meta["baseline"]["rmse"] == meta["metrics"]["rmse"]
    else:
        assert meta["task"] == "classification"
        assert set(meta["metrics"]) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "log_loss"}
        assert meta["baseline"]["errorRate"] == pytest.approx(1 - meta["metrics"]["accuracy"])
        assert all(isinstance(c, str) for c in meta["classes"])
    if dataset == "iris":
        assert meta["classes"] == ["setosa", "versicolor", "virginica"]
        assert set(result.pipeline.predict(result.X_test)) <= {"setosa", "versicolor", "virginica"}
    if dataset == "breast_cancer":
        assert meta["classes"] == ["benign", "malignant"]


def test_examples_train_as_written(tmp_path: Path) -> None:
    """The shipped iris example passes its own gate (with fewer trees to keep the test light)."""
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "iris" / "trainingjob.yaml").read_text())
    doc["spec"]["estimator"]["params"]["n_estimators"] = 25
    result = train(doc, tmp_path, log=quiet)
    assert result.version == "iris-v1-g1" and result.namespace == "default"
    assert result.gate["result"] == "Passed" and result.metrics["accuracy"] >= 0.9


def test_digest_is_stable_and_retry_is_idempotent(tmp_path: Path) -> None:
    a = train(manifest(), tmp_path / "a", log=quiet)
    b = train(manifest(), tmp_path / "b", log=quiet)
    assert a.data_digest == b.data_digest
    assert a.metrics == b.metrics
    again = train(manifest(), tmp_path / "a", log=quiet)
    assert not again.created and again.sha256 == a.sha256 and again.pipeline is None
    other = train(manifest(source="sklearn://wine", target="cultivar", model="wine"), tmp_path / "a", log=quiet)
    assert other.data_digest != a.data_digest


def test_version_override_and_lineage_labels(tmp_path: Path) -> None:
    doc = manifest()
    doc["metadata"]["labels"] = {"mlops.dev/parent-version": "iris-v1-g1", "mlops.dev/triggered-by": "iris-drift"}
    doc["metadata"]["generation"] = 4
    result = train(doc, tmp_path, log=quiet)
    assert result.version == "iris-v1-g4"
    assert result.metadata["lineage"] == {"trainingJob": "iris-v1", "generation": 4, "parent": "iris-v1-g1", "triggeredBy": "iris-drift"}
    pinned = train(manifest(), tmp_path, version="retrain-7", log=quiet)
    assert pinned.path.name == "retrain-7"


def write_csv(path: Path, frame: pd.DataFrame) -> str:
    frame.to_csv(path, index=False)
    return path.as_uri()


def tabular(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    size = rng.integers(1, 5, size=n)
    label = np.where(x + (color == "red") * 1.5 > 0.3, "yes", "no")
    df = pd.DataFrame({"x": x, "color": color, "size": size, "label": label})
    df.loc[3, "x"] = np.nan
    df.loc[5, "color"] = np.nan
    return df


def test_mixed_csv_with_categories_roundtrips(tmp_path: Path) -> None:
    df = tabular()
    df.loc[7, "label"] = np.nan
    uri = write_csv(tmp_path / "data.csv", df)
    store = ModelStore(tmp_path / "store")
    doc = manifest(model="shop", source=uri, target="label", gate={"metric": "accuracy", "minimum": 0.6})
    result = train(doc, store, log=quiet)
    meta = result.metadata
    assert meta["rows"]["droppedMissingTarget"] == 1 and meta["rows"]["total"] == 119
    kinds = {f["name"]: f["kind"] for f in meta["features"]}
    assert kinds == {"x": "numeric", "color": "categorical", "size": "numeric"}
    assert [f["name"] for f in meta["features"]] == ["x", "color", "size"]
    assert next(f for f in meta["features"] if f["name"] == "color")["categories"] == ["blue", "green", "red"]
    assert meta["inputDtype"] == "object" and result.X_test.dtype == object
    loaded = roundtrip(result, store)
    # What the model server builds: a plain object array, NaN for missing, an unseen category.
    X = np.array([[0.5, "red", 2.0], [np.nan, np.nan, np.nan], [-1.0, "purple", 3.0]], dtype=object)
    assert list(loaded.predict(X)) == list(result.pipeline.predict(X))


def test_declared_features_and_categorical(tmp_path: Path) -> None:
    uri = write_csv(tmp_path / "data.csv", tabular())
    doc = manifest(model="shop", source=uri, target="label",
                   preprocessing={"categorical": {"encode": "ordinal", "impute": "constant"}, "numeric": {"impute": "mean", "scale": "none"}})
    doc["spec"]["data"].update(features=["size", "color"], categorical=["color", "size"])
    result = train(doc, tmp_path / "store", log=quiet)
    assert [(f["name"], f["kind"]) for f in result.metadata["features"]] == [("size", "categorical"), ("color", "categorical")]
    assert next(f for f in result.metadata["features"] if f["name"] == "size")["categories"] == ["1", "2", "3", "4"]
    roundtrip(result, ModelStore(tmp_path / "store"))


def test_regression_without_scaling_or_imputation(tmp_path: Path) -> None:
    doc = manifest(model="diabetes", source="sklearn://diabetes", target="progression",
                   estimator="sklearn.linear_model.Ridge", params={"alpha": 1.0}, task="regression",
                   preprocessing={"numeric": {"impute": "none", "scale": "none"}})
    result = train(doc, tmp_path, log=quiet)
    assert result.task == "regression" and result.metrics["r2"] > 0.3
    roundtrip(result, ModelStore(tmp_path))


def test_feedback_rows_are_appended_and_counted(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    fb = iris.frame.drop(columns="target").iloc[:30].copy()
    fb["species"] = [iris.target_names[i] for i in iris.target.iloc[:30]]
    fb.loc[0, "species"] = np.nan  # unlabelled: dropped
    fb["sepal width (cm)"] = fb["sepal width (cm)"].astype(object)
    fb.loc[1, "sepal width (cm)"] = "oops"  # the server never writes this, but if it did: left out
    fb.loc[2, "species"] = "virgin"  # not a class (a torn line): left out
    folder = tmp_path / "feedback" / "team-a" / "iris"
    folder.mkdir(parents=True)
    fb.to_csv(folder / "part-0001.csv", index=False)
    pd.DataFrame({"unrelated": [1, 2]}).to_csv(folder / "part-0002.csv", index=False)  # skipped: no target

    doc = manifest()
    doc["spec"]["data"]["includeFeedback"] = True
    result = train(doc, tmp_path / "store", feedback_dir=tmp_path / "feedback", log=quiet)
    rows = result.rows
    assert rows["feedback"] == 28 and rows["feedbackRejected"] == 2
    assert rows["droppedMissingTarget"] == 1
    assert rows["total"] == 150 + 27
    plain = train(manifest(), tmp_path / "store2", feedback_dir=tmp_path / "feedback", log=quiet)
    assert plain.rows["feedback"] == 0  # includeFeedback is false: the directory is ignored


# -- failures: clear error, nothing stored ----------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "params", "match"),
    [
        ("sklearn.ensemble.NoSuchForest", {}, "has no 'NoSuchForest'"),
        ("sklearn.nosuchmodule.Thing", {}, "cannot be imported"),
        ("os.system", {}, "'os.system' is outside the allowed modules"),
        ("subprocess.Popen", {}, "'subprocess.Popen' is outside the allowed modules"),
        ("sklearnx.Evil", {}, "outside the allowed modules"),
        ("sklearn.base.clone", {}, "is not a class"),
        ("sklearn.preprocessing.StandardScaler", {}, "is not an estimator: it has no predict"),
        ("sklearn.ensemble.RandomForestClassifier", {"n_trees": 5}, "unknown parameter.*'n_trees'"),
        ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": -3}, "n_estimators"),
        ("sklearn.ensemble.RandomForestRegressor", {"n_estimators": 5}, "accuracy does not fit the task regression"),
    ],
)
def test_bad_estimators_are_refused_before_training(tmp_path: Path, estimator: str, params: dict, match: str) -> None:
    doc = manifest(estimator=estimator, params=params, gate={"metric": "accuracy", "minimum": 0.5})
    with pytest.raises(SpecError, match=match):
        train(doc, tmp_path, log=quiet)
    assert no_artifacts(tmp_path)


def test_invalid_manifest_is_a_spec_error(tmp_path: Path) -> None:
    doc = manifest()
    doc["spec"]["data"]["validation"]["fraction"] = 0.9
    with pytest.raises(SpecError, match="spec.data.validation.fraction"):
        train(doc, tmp_path, log=quiet)


def test_allow_module_extends_the_list(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="outside"):
        train(manifest(estimator="mlops_fake_pkg.Model"), tmp_path, log=quiet)
    # Allowed, but it does not exist: now the import is attempted and fails cleanly.
    with pytest.raises(SpecError, match="cannot be imported"):
        train(manifest(estimator="mlops_fake_pkg.Model"), tmp_path, allow_modules=["mlops_fake_pkg"], log=quiet)


EXTRA_ESTIMATOR = """
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class LeastSquares(RegressorMixin, BaseEstimator):
    \"\"\"A regressor from outside scikit-learn, as an operator's allowed module would provide.\"\"\"

    def __init__(self, ridge=0.0):
        self.ridge = ridge

    def fit(self, X, y):
        X1 = np.c_[np.asarray(X, dtype=float), np.ones(len(X))]
        self.coef_ = np.linalg.solve(X1.T @ X1 + self.ridge * np.eye(X1.shape[1]), X1.T @ np.asarray(y, dtype=float))
        return self

    def predict(self, X):
        return np.c_[np.asarray(X, dtype=float), np.ones(len(X))] @ self.coef_
"""


def test_an_allowed_non_sklearn_estimator_trains_and_loads_with_its_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--allow-module`` extends what a stored model may hold by the admin's prefix, on top of the list."""
    package = tmp_path / "lib" / "mlops_extra_estimators"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(EXTRA_ESTIMATOR)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    doc = manifest(model="diabetes", source="sklearn://diabetes", target="progression",
                   estimator="mlops_extra_estimators.LeastSquares", params={"ridge": 0.1}, gate={"metric": "r2", "minimum": 0.3})
    store = ModelStore(tmp_path / "store")
    with pytest.raises(SpecError, match="outside the allowed modules"):
        train(doc, store, log=quiet)
    result = train(doc, store, allow_modules=["sklearn.", "mlops_extra_estimators"], log=quiet)
    assert result.created and result.gate["result"] == "Passed"
    # The server, told the same modules, loads it; without them it refuses and names the type.
    served = ModelStore(store.root, trusted_modules=("mlops_extra_estimators.",))
    loaded = served.load_model(result.namespace, result.model, result.version, expected_sha256=result.sha256)
    np.testing.assert_allclose(loaded.predict(result.X_test), result.pipeline.predict(result.X_test))
    with pytest.raises(ArtifactError, match=r"untrusted type\(s\) mlops_extra_estimators\.LeastSquares"):
        store.load_model(result.namespace, result.model, result.version)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "empty"),
        ("x,label\n", "the data has no rows"),
        ("x,size,color\n1,2,red\n", "target column 'label' is not in the data; columns are: 'x', 'size', 'color'"),
        ("x,label\n" + "".join(f"{i},a\n" for i in range(3)), "at least 10"),
    ],
    ids=["empty", "header-only", "no-target", "too-few"],
)
def test_bad_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        train(manifest(source=path.as_uri(), target="label"), tmp_path / "store", log=quiet)
    assert no_artifacts(tmp_path / "store")


def test_garbage_in_a_declared_numeric_column_names_column_and_value(tmp_path: Path) -> None:
    df = tabular()
    df["x"] = df["x"].astype(object)
    df.loc[10, "x"] = "n/a?"
    uri = write_csv(tmp_path / "data.csv", df)
    doc = manifest(model="shop", source=uri, target="label")
    doc["spec"]["data"]["features"] = ["x", "size"]
    with pytest.raises(DataError, match=r"column 'x' .*non-numeric values such as 'n/a\?'"):
        train(doc, tmp_path / "store", log=quiet)
    # Detected from dtypes, too: a mostly numeric text column is an error, not a category.
    doc["spec"]["data"].pop("features")
    with pytest.raises(DataError, match=r"column 'x' looks numeric"):
        train(doc, tmp_path / "store", log=quiet)
    # Declared categorical: accepted as categories.
    doc["spec"]["data"]["categorical"] = ["x", "color"]
    assert train(doc, tmp_path / "store", log=quiet).created


def test_declared_column_missing(tmp_path: Path) -> None:
    uri = write_csv(tmp_path / "data.csv", tabular())
    doc = manifest(model="shop", source=uri, target="label")
    doc["spec"]["data"]["features"] = ["x", "weight"]
    with pytest.raises(DataError, match="'weight' not in the data"):
        train(doc, tmp_path / "store", log=quiet)
    assert no_artifacts(tmp_path / "store")


def test_regression_needs_a_numeric_target(tmp_path: Path) -> None:
    uri = write_csv(tmp_path / "data.csv", tabular())
    doc = manifest(model="shop", source=uri, target="label", estimator="sklearn.linear_model.Ridge", params={})
    with pytest.raises(DataError, match="numeric target"):
        train(doc, tmp_path / "store", log=quiet)


def test_gate_missed_stores_nothing(tmp_path: Path) -> None:
    doc = manifest(estimator="sklearn.dummy.DummyClassifier", params={"strategy": "most_frequent"},
                   gate={"metric": "accuracy", "minimum": 0.9})
    with pytest.raises(GateFailed) as info:
        train(doc, tmp_path, log=quiet)
    gate = info.value.gate
    assert gate.result == "Failed" and gate.metric == "accuracy" and gate.bound == 0.9
    assert gate.value == pytest.approx(info.value.metrics["accuracy"]) and gate.value < 0.5
    assert "below the minimum 0.9" in gate.reason
    assert no_artifacts(tmp_path)


def test_gate_maximum_for_lower_is_better(tmp_path: Path) -> None:
    doc = manifest(model="diabetes", source="sklearn://diabetes", target="progression",
                   estimator="sklearn.linear_model.Ridge", params={}, gate={"metric": "rmse", "maximum": 10})
    with pytest.raises(GateFailed, match="above the maximum 10"):
        train(doc, tmp_path, log=quiet)
    assert no_artifacts(tmp_path)


# -- champion / challenger ------------------------------------------------------------------


def test_champion_tie_fails_better_passes_on_the_same_rows(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    weak = manifest(name="iris-a", estimator="sklearn.tree.DecisionTreeClassifier", params={"max_depth": 1, "random_state": 0})
    v1 = train(weak, store, log=quiet)
    assert v1.metrics["accuracy"] < 0.8

    # The same spec again: a tie with the champion, which is not better.
    tie = copy.deepcopy(weak)
    tie["metadata"]["name"] = "iris-b"
    tie["spec"]["qualityGate"] = {"metric": "accuracy", "minimum": 0.3, "mustBeat": "current"}
    with pytest.raises(GateFailed) as info:
        train(tie, store, champion=v1.version, log=quiet)
    gate = info.value.gate
    assert gate.championVersion == v1.version and gate.championValue == gate.value
    assert "does not beat champion" in gate.reason
    assert store.list_versions("team-a", "iris") == [v1.version]

    # A better model passes, and the champion's score is on this run's held-out rows.
    better = manifest(name="iris-c", gate={"metric": "accuracy", "minimum": 0.3, "mustBeat": "current"})
    v3 = train(better, store, champion=v1.version, log=quiet)
    assert v3.gate["result"] == "Passed" and v3.gate["championVersion"] == v1.version
    champ = store.load_model("team-a", "iris", v1.version)
    assert v3.gate["championValue"] == compute_metrics(champ, v3.X_test, v3.y_test, "classification")["accuracy"]
    assert v3.gate["value"] > v3.gate["championValue"]
    assert sorted(store.list_versions("team-a", "iris")) == sorted([v1.version, v3.version])


def test_lower_is_better_champion(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    base = dict(model="diabetes", source="sklearn://diabetes", target="progression")
    v1 = train(manifest(name="d-a", estimator="sklearn.dummy.DummyRegressor", params={}, **base), store, log=quiet)
    v2 = train(manifest(name="d-b", estimator="sklearn.linear_model.Ridge", params={},
                        gate={"metric": "rmse", "mustBeat": "current"}, **base), store, champion=v1.version, log=quiet)
    assert v2.gate["result"] == "Passed" and v2.gate["value"] < v2.gate["championValue"]


def test_missing_champion_decides_on_bounds(tmp_path: Path) -> None:
    doc = manifest(gate={"metric": "accuracy", "minimum": 0.8, "mustBeat": "current"})
    logged: list[dict] = []
    result = train(doc, tmp_path, champion="iris-v0-g1", log=lambda event, level="info", **kw: logged.append({"event": event, "level": level, **kw}))
    assert result.gate["result"] == "Passed" and result.gate["championVersion"] is None
    assert "not in the store" in result.gate["reason"]
    assert any(r["event"] == "champion" and r["level"] == "warning" for r in logged)
    assert [r["event"] for r in logged] == ["start", "loaded_data", "split", "fitted", "evaluated", "champion", "gate", "importance", "compiled", "stored"]


def test_corrupt_champion_fails_the_gate(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    v1 = train(manifest(name="iris-a"), store, log=quiet)
    (v1.path / "model.skops").write_bytes(b"tampered")
    with pytest.raises(GateFailed, match="could not be loaded.*sha256"):
        train(manifest(name="iris-b", gate={"metric": "accuracy", "minimum": 0.5, "mustBeat": "current"}), store, champion=v1.version, log=quiet)


def test_metadata_is_plain_json(tmp_path: Path) -> None:
    result = train(manifest(), tmp_path, log=quiet)
    text = (result.path / "metadata.json").read_text()
    meta = json.loads(text)
    for key in ("model", "version", "namespace", "task", "target", "estimator", "params", "features", "classes", "metrics",
                "gate", "rows", "dataDigest", "libraries", "lineage", "trainedAt", "trainingSeconds", "sha256", "baseline"):
        assert key in meta, key
    assert set(meta["gate"]) == {"result", "metric", "value", "bound", "championVersion", "championValue", "reason"}
    assert meta["trainedAt"].endswith("Z") and meta["trainingSeconds"] > 0
