"""The trainer's distributed path on a real Dask cluster (two local worker processes, shared by the module).

The trainer reaches the cluster through ``DASK_SCHEDULER_ADDRESS``, as the
runner of a DaskJob does. Statistics computed over partitions must equal what
scikit-learn learns on all the rows at once; the stored model must be the plain
in-memory one, loaded back through the store's skops check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes

pytest.importorskip("distributed", reason="the dask extra is not installed")

from distributed import Client, LocalCluster  # noqa: E402

from mlops_operator.api.distributed import Distributed  # noqa: E402
from mlops_operator.api.trainingjob import Preprocessing  # noqa: E402
from mlops_operator.runtime import data as data_mod  # noqa: E402
from mlops_operator.runtime.distributed import SCHEDULER_ENV, _fit_prepare  # noqa: E402
from mlops_operator.runtime.pipeline import build_pipeline  # noqa: E402
from mlops_operator.runtime.trainer import DataError, SpecError, train  # noqa: E402
from mlops_operator.store import ModelStore  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture
def on_cluster(client, monkeypatch):
    monkeypatch.setenv(SCHEDULER_ENV, client.scheduler.address)
    return client


def _mixed_frame(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    """Numbers on different scales with holes, and a categorical column with holes."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "a": rng.normal(10, 3, rows), "b": rng.exponential(100, rows), "c": rng.integers(0, 5, rows).astype(float),
        "color": rng.choice(["red", "green", "blue"], rows),
    })
    for col, share in (("a", 0.1), ("b", 0.2), ("color", 0.15)):
        frame.loc[rng.random(rows) < share, col] = np.nan
    frame["target"] = (rng.random(rows) > 0.5).astype(int)
    return frame


@pytest.mark.parametrize(("numeric", "categorical"), [
    ({"impute": "mean", "scale": "standard"}, {"impute": "most_frequent", "encode": "onehot"}),
    ({"impute": "most_frequent", "scale": "minmax"}, {"impute": "constant", "encode": "ordinal"}),
    ({"impute": "none", "scale": "standard"}, {"impute": "most_frequent", "encode": "ordinal"}),
    ({"impute": "mean", "scale": "none"}, {"impute": "constant", "encode": "onehot"}),
])
def test_dask_preprocessing_statistics_equal_scikit_learns(on_cluster, numeric, categorical) -> None:
    import dask.dataframe as dd

    frame = _mixed_frame()
    ds = data_mod.prepare(frame, target="target", features=None, categorical=["color"], task="classification")
    pre = Preprocessing.model_validate({"numeric": numeric, "categorical": categorical})
    reference = build_pipeline(None, ds.features, ds.categorical, pre).named_steps["prepare"]
    X = ds.matrix()
    reference.fit(X)
    ddf = dd.from_pandas(ds.frame[ds.features], npartitions=3, sort=False)
    ours = _fit_prepare(build_pipeline(None, ds.features, ds.categorical, pre).named_steps["prepare"], ddf, ds, ds.frame)
    np.testing.assert_allclose(ours.transform(X).astype(float), reference.transform(X).astype(float), rtol=1e-9, atol=1e-9,
                               equal_nan=True)
    # Unseen categories are ignored (onehot) or -1 (ordinal), as in the single-pod pipeline.
    unseen = X[:3].copy()
    unseen[:, ds.features.index("color")] = "purple"
    np.testing.assert_allclose(ours.transform(unseen).astype(float), reference.transform(unseen).astype(float),
                               rtol=1e-9, atol=1e-9, equal_nan=True)


def test_dask_median_imputation_is_close_to_the_exact_median(on_cluster) -> None:
    import dask.dataframe as dd

    frame = _mixed_frame(rows=2000)
    ds = data_mod.prepare(frame, target="target", features=None, categorical=["color"], task="classification")
    pre = Preprocessing.model_validate({"numeric": {"impute": "median", "scale": "none"}})
    ddf = dd.from_pandas(ds.frame[ds.features], npartitions=4, sort=False)
    ours = _fit_prepare(build_pipeline(None, ds.features, ds.categorical, pre).named_steps["prepare"], ddf, ds, ds.frame)
    fill = ours.named_transformers_["numeric"].named_steps["impute"].statistics_
    for value, col in zip(fill, ["a", "b", "c"]):
        observed = frame[col].dropna()
        # Dask's median is approximate: it must lie between the 45th and 55th percentiles.
        assert observed.quantile(0.45) <= value <= observed.quantile(0.55), (col, value)


def _job(name: str, source: str, cls: str, params: dict | None = None, **spec) -> dict:
    return {
        "apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name, "namespace": "ml"},
        "spec": {"model": name, "data": {"source": source, **spec.pop("data", {})},
                 "estimator": {"class": cls, "params": params or {}},
                 "distributed": {"engine": "dask", "workers": 2}, **spec},
    }


@pytest.fixture
def cancer_csv(tmp_path):
    """breast_cancer with its 0/1 target (xgboost's classes must be 0..k-1)."""
    path = tmp_path / "cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(path, index=False)
    return f"file://{path}"


def test_dask_xgboost_model_is_a_plain_xgbclassifier_loaded_through_skops(on_cluster, tmp_path, cancer_csv) -> None:
    import xgboost

    job = _job("cancer-xgb", cancer_csv, "xgboost.dask.DaskXGBClassifier", {"n_estimators": 20, "max_depth": 3},
               data={"target": "target"}, qualityGate={"metric": "accuracy", "minimum": 0.9},
               preprocessing={"numeric": {"impute": "mean", "scale": "none"}})
    store = ModelStore(tmp_path / "store")
    result = train(job, store, allow_modules=["xgboost."], log=lambda *a, **k: None)
    assert result.created and result.metrics["accuracy"] >= 0.9
    model = result.pipeline.named_steps["model"]
    assert type(model) is xgboost.XGBClassifier  # not the Dask estimator: no client, no cluster needed to predict
    loaded = store.load_model("ml", "cancer-xgb", result.version, trusted_modules=(*store.trusted_modules, "xgboost."))
    np.testing.assert_array_equal(loaded.predict(result.X_test), result.pipeline.predict(result.X_test))
    assert result.metadata["distributed"]["workers"] == 2


def test_dask_xgboost_without_trusting_xgboost_stores_nothing(on_cluster, tmp_path, cancer_csv) -> None:
    job = _job("cancer-xgb", cancer_csv, "xgboost.dask.DaskXGBClassifier", {"n_estimators": 5}, data={"target": "target"})
    store = ModelStore(tmp_path / "store")
    with pytest.raises(SpecError, match="cannot be stored safely"):
        train(job, store, log=lambda *a, **k: None)
    assert not store.exists("ml", "cancer-xgb", "cancer-xgb-g1")


def test_dask_xgboost_with_label_names_is_a_data_error(on_cluster, tmp_path) -> None:
    job = _job("cancer-xgb", "sklearn://breast_cancer", "xgboost.dask.DaskXGBClassifier", {"n_estimators": 5})
    with pytest.raises(DataError, match="needs the classes 0..k-1"):
        train(job, ModelStore(tmp_path / "store"), allow_modules=["xgboost."], log=lambda *a, **k: None)


def test_dask_incremental_regressor_is_scikit_learns_own(on_cluster, tmp_path) -> None:
    from sklearn.linear_model import SGDRegressor

    job = _job("diabetes-sgd", "sklearn://diabetes", "sklearn.linear_model.SGDRegressor", {"random_state": 0, "max_iter": 15})
    result = train(job, ModelStore(tmp_path / "store"), log=lambda *a, **k: None)
    assert type(result.pipeline.named_steps["model"]) is SGDRegressor
    assert result.task == "regression" and result.metrics["r2"] > 0.2
    X, _ = load_diabetes(return_X_y=True)
    assert result.pipeline.predict(X[:5]).shape == (5,)


def test_dask_logistic_regression_keeps_label_names(on_cluster, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    job = _job("cancer-lr", "sklearn://breast_cancer", "dask_ml.linear_model.LogisticRegression",
               preprocessing={"numeric": {"impute": "mean", "scale": "standard"}})
    result = train(job, ModelStore(tmp_path / "store"), log=lambda *a, **k: None)
    model = result.pipeline.named_steps["model"]
    assert type(model) is LogisticRegression and list(model.classes_) == ["benign", "malignant"]
    assert result.metrics["accuracy"] > 0.9 and result.metadata["compiled"]["status"] == "Verified"
    assert set(result.pipeline.predict(result.X_test)) == {"benign", "malignant"}


def test_dask_multiclass_logistic_regression_is_refused(on_cluster, tmp_path) -> None:
    job = _job("iris-lr", "sklearn://iris", "dask_ml.linear_model.LogisticRegression")
    with pytest.raises(DataError, match="binary classifier; the target has 3 classes"):
        train(job, ModelStore(tmp_path / "store"), log=lambda *a, **k: None)


def test_dask_task_mismatch_is_a_spec_error_before_any_data(on_cluster, tmp_path) -> None:
    job = _job("x", "file:///nonexistent.csv", "sklearn.linear_model.SGDRegressor", task="classification")
    with pytest.raises(SpecError, match="spec.task is classification but sklearn.linear_model.SGDRegressor is a regressor"):
        train(job, ModelStore(tmp_path / "store"), log=lambda *a, **k: None)


def test_dask_unknown_estimator_params_name_the_parameter(on_cluster, tmp_path) -> None:
    job = _job("x", "sklearn://breast_cancer", "sklearn.linear_model.SGDClassifier", {"n_trees": 3})
    with pytest.raises(SpecError, match="'n_trees'"):
        train(job, ModelStore(tmp_path / "store"), log=lambda *a, **k: None)


def test_dask_distributed_model_rejects_unknown_class(tmp_path) -> None:
    from mlops_operator.runtime.distributed import distributed_class

    with pytest.raises(SpecError, match="no distributed form"):
        distributed_class("os.system")
    assert Distributed().workers == 2


# -- partitioned sources: the workers read them, the runner keeps samples ----------------------


def _write_parts(directory, frame: pd.DataFrame, files: int, row_group: int) -> int:
    """``frame`` as ``files`` Parquet files of ``row_group``-row groups plus its last rows as a CSV; returns the partitions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    tail = frame.iloc[-37:]
    chunks = np.array_split(np.arange(len(frame) - len(tail)), files)
    for n, idx in enumerate(chunks):
        pq.write_table(pa.Table.from_pandas(frame.iloc[idx], preserve_index=False), directory / f"part-{n}.parquet",
                       row_group_size=row_group)
    tail.to_csv(directory / "part-z.csv", index=False)
    (directory / "_SUCCESS").write_text("")
    return sum(-(-len(idx) // row_group) for idx in chunks) + 1


def _refuse_in_the_runner(piece, columns=None):
    raise AssertionError("the runner read a whole partition; only the workers may")


def test_dask_partitioned_source_is_read_by_the_workers_and_split_the_same_way_each_run(on_cluster, tmp_path,
                                                                                       monkeypatch) -> None:
    from mlops_operator.runtime import partitions

    frame = load_breast_cancer(as_frame=True).frame
    expected_parts = _write_parts(tmp_path / "data", frame, files=3, row_group=60)
    # The workers are other processes (spawned): this only stops the runner from reading partitions itself.
    monkeypatch.setattr(partitions, "read_partition", _refuse_in_the_runner)
    job = _job("cancer-parts", f"file://{tmp_path}/data", "sklearn.linear_model.SGDClassifier",
               {"max_iter": 20, "random_state": 0}, data={"target": "target"},
               qualityGate={"metric": "accuracy", "minimum": 0.9})
    store = ModelStore(tmp_path / "store")
    first = train(job, store, version="v1", log=lambda *a, **k: None)
    rows = first.metadata["rows"]
    assert rows["total"] == len(frame) and rows["train"] + rows["test"] == len(frame)
    assert 0.1 * len(frame) < rows["test"] < 0.3 * len(frame)  # validation.fraction 0.2, drawn row by row
    assert rows["evaluated"] == rows["test"] == len(first.y_test) and rows["profiled"] == rows["train"]
    assert first.metadata["distributed"]["partitions"] == expected_parts
    assert first.metrics["accuracy"] >= 0.9

    second = train(job, store, version="v2", log=lambda *a, **k: None)
    assert second.metadata["rows"] == rows and second.metadata["dataDigest"] == first.metadata["dataDigest"]
    np.testing.assert_array_equal(second.y_test, first.y_test)

    changed = frame.copy()
    changed.loc[100, "mean radius"] += 1.0
    _write_parts(tmp_path / "changed", changed, files=3, row_group=60)
    job["spec"]["data"]["source"] = f"file://{tmp_path}/changed"
    third = train(job, store, version="v3", log=lambda *a, **k: None)
    assert third.metadata["dataDigest"] != first.metadata["dataDigest"]


def test_dask_the_runner_evaluates_and_profiles_bounded_samples(on_cluster, tmp_path, monkeypatch) -> None:
    from mlops_operator.runtime import distributed

    monkeypatch.setattr(distributed, "EVALUATION_ROWS", 40)
    monkeypatch.setattr(distributed, "PROFILE_ROWS", 70)
    frame = load_breast_cancer(as_frame=True).frame
    _write_parts(tmp_path / "data", frame, files=2, row_group=100)
    job = _job("cancer-sample", f"file://{tmp_path}/data", "sklearn.naive_bayes.GaussianNB", data={"target": "target"})
    result = train(job, ModelStore(tmp_path / "store"), log=lambda *a, **k: None)
    rows = result.metadata["rows"]
    assert rows["test"] > 40 and rows["evaluated"] == 40 == len(result.X_test)
    assert rows["train"] > 70 and rows["profiled"] == 70
    assert result.metrics["accuracy"] > 0.8  # naive Bayes' one pass is exact: the sample only bounds the evaluation


def test_dask_a_bad_partition_is_a_data_error_naming_it(on_cluster, tmp_path) -> None:
    frame = load_breast_cancer(as_frame=True).frame
    _write_parts(tmp_path / "data", frame, files=2, row_group=100)
    bad = frame.head(30).astype({"mean radius": object})
    bad.loc[5, "mean radius"] = "twelve"
    bad.to_csv(tmp_path / "data" / "part-y.csv", index=False)
    job = _job("cancer-bad", f"file://{tmp_path}/data", "sklearn.naive_bayes.GaussianNB", data={"target": "target"})
    with pytest.raises(DataError, match=r"part-y\.csv: column 'mean radius' is numeric but holds non-numeric values such as 'twelve'"):
        train(job, ModelStore(tmp_path / "store"), log=lambda *a, **k: None)


def test_dask_local_workers_never_pause_and_keep_the_memory_limit(monkeypatch) -> None:
    """A paused worker whose memory is libraries and allocator caches waits forever: the local ones never pause."""
    import dask

    from mlops_operator.runtime.distributed import dask_client

    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    spec = Distributed.model_validate({"workers": 1, "resources": {"limits": {"memory": "512Mi"}}})
    with dask_client(spec, lambda *a, **k: None) as client:
        seen = client.run(lambda: dask.config.get("distributed.worker.memory.pause"))
        limits = [w["memory_limit"] for w in client.scheduler_info()["workers"].values()]
    assert list(seen.values()) == [False]
    assert limits == [512 * 2**20]
    assert dask.config.get("distributed.worker.memory.pause") == 0.8  # the runner's own configuration is left as it was
