"""The distributed fit of a TrainingJob with ``spec.distributed``: Dask workers do the work, the runner keeps a plain model.

The runner (the trainer process) reads and splits the rows as the single-pod
trainer does, then sends the training rows to the Dask workers in partitions
(one or more per worker). There:

- the preprocessing statistics are computed by Dask reductions over the
  partitions (mean, variance, min/max, an approximate median, the most frequent
  values, the category levels) and set on the same scikit-learn
  ColumnTransformer the single-pod trainer fits, so the served model is the
  usual pipeline;
- the estimator is fitted by its distributed implementation: xgboost's
  ``xgboost.dask`` (converted to the in-memory ``XGBClassifier``/``XGBRegressor``
  through its Booster), dask-ml's linear models (converted to scikit-learn's
  class with the same coefficients), or dask-ml's ``Incremental`` feeding a
  scikit-learn ``partial_fit`` estimator one partition at a time (its fitted
  ``estimator_`` is the model).

What follows (metrics, gate, skops check, reference profile, ONNX) is the
single-pod trainer's, on the in-memory pipeline. The workers are the Dask
operator's (``DASK_SCHEDULER_ADDRESS``, set in a DaskJob's runner pod) or, with
no scheduler given, a ``LocalCluster`` of ``spec.distributed.workers`` local
processes: the local mode, and a distributed TrainingJob on a cluster whose
operator does not run DaskJobs.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..api.base import parse_quantity
from ..api.distributed import DASK_ML_ESTIMATORS, INCREMENTAL_ESTIMATORS, XGBOOST_ESTIMATORS, Distributed
from .data import DataError, Dataset, to_matrix
from .pipeline import SpecError, build_pipeline

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_SECONDS = 120
"""How long the runner waits for the scheduler and for its workers (pods may still be pulling the image)."""
MAX_INCREMENTAL_PASSES = 50
"""Passes over the partitions for a ``partial_fit`` estimator (its ``max_iter``, capped: each pass visits every partition)."""
SAMPLE_ROWS = 64
"""Rows the ColumnTransformer's structure is fitted on before the distributed statistics replace what it learnt."""


class DaskUnavailable(SpecError):
    """The image lacks the ``dask`` extra: a distributed run cannot start here."""


def _require_dask() -> None:
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise DaskUnavailable(f"spec.distributed needs the dask extra in the trainer's image ({exc})") from None


@contextlib.contextmanager
def dask_client(spec: Distributed, log: Any) -> Iterator[Any]:
    """A client of the DaskJob's scheduler, or of a LocalCluster of ``spec.workers`` processes."""
    _require_dask()
    from distributed import Client, LocalCluster

    address = os.environ.get(SCHEDULER_ENV)
    if address:
        with Client(address, timeout=CONNECT_TIMEOUT_SECONDS) as client:
            client.wait_for_workers(spec.workers, timeout=CONNECT_TIMEOUT_SECONDS)
            log("dask", scheduler=address, workers=len(client.scheduler_info()["workers"]))
            yield client
        return
    memory = _memory_limit(spec)
    with LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, memory_limit=memory if memory else "auto",
                      silence_logs=40) as cluster, Client(cluster) as client:
        log("dask", scheduler="local", workers=spec.workers, memoryLimit=memory)
        yield client


def _memory_limit(spec: Distributed) -> int | None:
    limits = spec.resources.limits if spec.resources else None
    return int(parse_quantity(limits.memory)) if limits is not None and limits.memory is not None else None


def distributed_class(class_path: str) -> Any:
    """The class of a distributed estimator: only the fixed, vetted list of the API is ever imported."""
    import importlib

    if class_path not in (*XGBOOST_ESTIMATORS, *DASK_ML_ESTIMATORS, *INCREMENTAL_ESTIMATORS):
        raise SpecError(f"spec.estimator.class: {class_path} has no distributed form")
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise DaskUnavailable(f"spec.estimator.class: {class_path} cannot be imported ({exc})") from None


def distributed_task(class_path: str, declared: str | None) -> Any:
    """The task of a distributed estimator, known from the vetted list (dask-ml's classes carry no scikit-learn tags)."""
    kind = "classification" if class_path.endswith(("Classifier", "LogisticRegression", "Perceptron", "NB")) else "regression"
    if declared is not None and declared != kind:
        raise SpecError(f"spec.task is {declared} but {class_path} is a {'classifier' if kind == 'classification' else 'regressor'}")
    return kind


# -- the fit ------------------------------------------------------------------------------


def fit_on_dask(estimator: Any, class_path: str, task: str, ds: Dataset, train_idx: np.ndarray, y_train: np.ndarray,
                preprocessing: Any, spec: Distributed, log: Any) -> tuple[Any, float]:
    """The fitted in-memory pipeline and the seconds the distributed fit took."""
    import dask.dataframe as dd

    train_frame = ds.frame.iloc[train_idx]
    with dask_client(spec, log) as client:
        started = time.monotonic()
        partitions = max(spec.workers, math.ceil(len(train_frame) / 250_000))
        ddf = client.persist(dd.from_pandas(train_frame[list(ds.features)].reset_index(drop=True), npartitions=partitions,
                                            sort=False))
        pipeline = build_pipeline(estimator, ds.features, ds.categorical, preprocessing)
        prepare = _fit_prepare(pipeline.named_steps["prepare"], ddf, ds, train_frame)
        X = ddf.map_partitions(_transform_partition, prepare, list(ds.features), list(ds.categorical),
                               meta=pd.DataFrame(columns=range(_width(prepare, ds, train_frame)), dtype=float))
        X = client.persist(X.to_dask_array(lengths=True))
        y = _target_array(y_train, X.chunks[0], task, class_path)
        model = _fit_estimator(estimator, class_path, task, X, y, y_train, client)
        seconds = time.monotonic() - started
    from sklearn.pipeline import Pipeline

    log("fitted_on_dask", estimator=class_path, workers=spec.workers, partitions=partitions, seconds=round(seconds, 3))
    return Pipeline([("prepare", prepare), ("model", model)]), seconds


def _transform_partition(part: pd.DataFrame, prepare: Any, features: list[str], categorical: list[str]) -> pd.DataFrame:
    out = prepare.transform(to_matrix(part, features, categorical))
    return pd.DataFrame(np.asarray(out, dtype=float), index=part.index)


def _width(prepare: Any, ds: Dataset, frame: pd.DataFrame) -> int:
    return int(prepare.transform(to_matrix(frame.head(1), ds.features, ds.categorical)).shape[1])


def _target_array(y_train: np.ndarray, chunks: Sequence[int], task: str, class_path: str) -> Any:
    """The target in the training rows' partitions; dask-ml's logistic regression learns 0/1 (classes_ maps back)."""
    import dask.array as da

    y = np.asarray(y_train)
    if task == "classification" and class_path in XGBOOST_ESTIMATORS:
        classes = np.unique(y)
        if not np.array_equal(classes, np.arange(len(classes))):
            # As the in-memory XGBClassifier: it predicts 0..k-1 and stores no label names.
            raise DataError(f"{class_path} needs the classes 0..k-1 as the target (found {classes[:10].tolist()}); "
                            "use integer labels or a dask-ml/Incremental classifier, which keep the labels")
    if task == "classification" and class_path in DASK_ML_ESTIMATORS:
        classes = np.unique(y)
        if len(classes) != 2:
            raise DataError(f"{class_path} is a binary classifier; the target has {len(classes)} classes")
        y = (y == classes[1]).astype(np.int64)
    return da.from_array(y, chunks=(tuple(chunks),))


def _fit_estimator(estimator: Any, class_path: str, task: str, X: Any, y: Any, y_local: np.ndarray, client: Any) -> Any:
    """Fit on the workers; return the in-memory model the server loads."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if class_path in XGBOOST_ESTIMATORS:
                return _fit_xgboost(estimator, class_path, X, y, client)
            if class_path in DASK_ML_ESTIMATORS:
                return _fit_dask_ml_linear(estimator, class_path, X, y, y_local)
            return _fit_incremental(estimator, task, X, y, y_local)
    except (ValueError, TypeError) as exc:
        raise DataError(f"fitting {class_path} on Dask failed: {exc}") from None


def _fit_xgboost(estimator: Any, class_path: str, X: Any, y: Any, client: Any) -> Any:
    import xgboost

    estimator.client = client
    estimator.fit(X, y)
    local_cls = xgboost.XGBClassifier if class_path.endswith("Classifier") else xgboost.XGBRegressor
    params = {k: v for k, v in estimator.get_params().items() if k != "client"}
    model = local_cls(**params)
    model.load_model(bytearray(estimator.get_booster().save_raw("json")))
    return model


def _fit_dask_ml_linear(estimator: Any, class_path: str, X: Any, y: Any, y_local: np.ndarray) -> Any:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    estimator.fit(X, y)
    coef = np.asarray(estimator.coef_, dtype=float).ravel()
    intercept = float(np.asarray(estimator.intercept_).ravel()[0]) if estimator.fit_intercept else 0.0
    if class_path.endswith("LogisticRegression"):
        model = LogisticRegression()
        model.coef_, model.intercept_ = coef.reshape(1, -1), np.array([intercept])
        model.classes_ = np.unique(y_local)
    else:
        model = LinearRegression()
        model.coef_, model.intercept_ = coef, intercept
    model.n_features_in_ = coef.shape[0]
    return model


def _fit_incremental(estimator: Any, task: str, X: Any, y: Any, y_local: np.ndarray) -> Any:
    """``max_iter`` passes (at most MAX_INCREMENTAL_PASSES) of ``partial_fit`` over every partition in turn.

    One pass is what ``Incremental.fit`` does: an epoch, too little for SGD. Naive Bayes has no
    ``max_iter``: its one pass is exact.
    """
    from dask_ml.wrappers import Incremental

    passes = max(1, min(int(getattr(estimator, "max_iter", 1) or 1), MAX_INCREMENTAL_PASSES))
    wrapper = Incremental(estimator, shuffle_blocks=False)
    extra = {"classes": np.unique(y_local)} if task == "classification" else {}
    for _ in range(passes):
        wrapper.partial_fit(X, y, **extra)
    return wrapper.estimator_


# -- the preprocessing statistics ------------------------------------------------------------


def _fit_prepare(prepare: Any, ddf: Any, ds: Dataset, frame: pd.DataFrame) -> Any:
    """The ColumnTransformer with its statistics computed on the workers over every training row.

    Its structure (columns, output width) comes from a fit on a few rows; each
    statistic it learnt there is then replaced by the one of all the rows.
    """
    import dask

    cat = [f for f in ds.features if f in set(ds.categorical)]
    num = [f for f in ds.features if f not in set(ds.categorical)]
    numeric_ddf = ddf[num].astype(float) if num else None
    wanted: dict[str, Any] = {"rows": ddf.map_partitions(len).sum()}
    if num:
        wanted.update(mean=numeric_ddf.mean(), var=numeric_ddf.var(ddof=0), min=numeric_ddf.min(), max=numeric_ddf.max(),
                      count=numeric_ddf.count(), median=numeric_ddf.quantile(0.5))
        if _step(prepare, "numeric", "impute") is not None and _step(prepare, "numeric", "impute").strategy == "most_frequent":
            wanted["num_mode"] = {c: numeric_ddf[c].value_counts() for c in num}
    if cat:
        wanted["levels"] = {c: ddf[c].dropna().astype(str).unique() for c in cat}
        wanted["cat_mode"] = {c: ddf[c].dropna().astype(str).value_counts() for c in cat}
    (stats,) = dask.compute(wanted)

    if cat:
        encoder = _step(prepare, "categorical", "encode")
        encoder.set_params(categories=[sorted(str(v) for v in stats["levels"][c]) for c in cat])
        imputer = _step(prepare, "categorical", "impute")
        if imputer is not None and imputer.strategy == "constant":
            encoder.set_params(categories=[sorted({*map(str, stats["levels"][c]), "missing"}) for c in cat])
    numeric_imputer = _step(prepare, "numeric", "impute")
    if numeric_imputer is not None:
        numeric_imputer.set_params(keep_empty_features=True)
    sample = _sample(frame, ds, stats.get("levels", {}))
    prepare.fit(to_matrix(sample, ds.features, ds.categorical))

    if num:
        empty = [c for c in num if int(stats["count"][c]) == 0]
        if empty and numeric_imputer is not None:
            raise DataError(f"column(s) {', '.join(empty)} have no value in the training rows")
        _set_numeric(prepare, num, stats)
    if cat:
        imputer = _step(prepare, "categorical", "impute")
        if imputer is not None and imputer.strategy == "most_frequent":
            imputer.statistics_ = np.array([_mode(stats["cat_mode"][c]) for c in cat], dtype=object)
    return prepare


def _sample(frame: pd.DataFrame, ds: Dataset, levels: dict[str, Any]) -> pd.DataFrame:
    """A few rows whose categorical columns hold real levels (the encoder checks them against its categories)."""
    sample = frame.head(SAMPLE_ROWS).copy()
    for c, values in levels.items():
        known = [str(v) for v in values]
        if known:
            sample[c] = [known[i % len(known)] for i in range(len(sample))]
    return sample


def _step(prepare: Any, part: str, name: str) -> Any:
    for tname, pipe, _ in prepare.transformers:
        if tname == part:
            return dict(pipe.steps).get(name)
    return None


def _fitted_step(prepare: Any, part: str, name: str) -> Any:
    pipe = prepare.named_transformers_.get(part)
    return None if pipe is None else pipe.named_steps.get(name)


def _mode(counts: pd.Series) -> Any:
    return counts.sort_index().idxmax() if len(counts) else np.nan


def _set_numeric(prepare: Any, num: list[str], stats: dict[str, Any]) -> None:
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    mean = stats["mean"][num].to_numpy(dtype=float)
    var = stats["var"][num].to_numpy(dtype=float)
    lo, hi = stats["min"][num].to_numpy(dtype=float), stats["max"][num].to_numpy(dtype=float)
    count = stats["count"][num].to_numpy(dtype=float)
    seen: Any = count.astype(np.int64)
    imputer = _fitted_step(prepare, "numeric", "impute")
    if imputer is not None:
        fill = {"mean": mean, "median": stats["median"][num].to_numpy(dtype=float)}.get(imputer.strategy)
        if fill is None:  # most_frequent
            fill = np.array([_mode(stats["num_mode"][c]) for c in num], dtype=float)
        imputer.statistics_ = fill
        # The scaler sees the imputed columns: the moments and the range of n observed values
        # plus N - n copies of the fill value, as scikit-learn's fit on the imputed rows computes them.
        rows = float(stats["rows"])
        missing = rows - count
        new_mean = (count * mean + missing * fill) / rows
        var = (count * (var + (mean - new_mean) ** 2) + missing * (fill - new_mean) ** 2) / rows
        mean = new_mean
        lo = np.where(missing > 0, np.fmin(lo, fill), lo)
        hi = np.where(missing > 0, np.fmax(hi, fill), hi)
        seen = int(rows)
    scaler = _fitted_step(prepare, "numeric", "scale")
    if isinstance(scaler, StandardScaler):
        scaler.mean_, scaler.var_ = mean, var
        scale = np.sqrt(var)
        scaler.scale_ = np.where(scale == 0.0, 1.0, scale)
        scaler.n_samples_seen_ = seen
    elif isinstance(scaler, MinMaxScaler):
        lo_out, hi_out = scaler.feature_range
        data_range = hi - lo
        scaler.data_min_, scaler.data_max_, scaler.data_range_ = lo, hi, data_range
        scaler.scale_ = (hi_out - lo_out) / np.where(data_range == 0.0, 1.0, data_range)
        scaler.min_ = lo_out - lo * scaler.scale_
        scaler.n_samples_seen_ = seen if isinstance(seen, int) else int(seen.max())
