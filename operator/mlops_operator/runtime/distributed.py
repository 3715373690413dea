"""The distributed run of a TrainingJob with ``spec.distributed``: Dask workers read and fit, the runner keeps a plain model.

No pod holds the whole data set. The runner lists the source's partitions
(runtime/partitions.py) and types the columns from the first rows; then, on
the workers:

- each partition is read from the source, typed, and its rows drawn to
  training or held-out; one pass brings back the row counts, a digest, and
  uniform samples of both sides (at most EVALUATION_ROWS and PROFILE_ROWS);
- the preprocessing statistics are Dask reductions over the training rows
  (mean, variance, min/max, an approximate median, the most frequent values,
  the category levels) set on the same scikit-learn ColumnTransformer the
  single-pod trainer fits, so the served model is the usual pipeline;
- the estimator is fitted by its distributed implementation: xgboost's
  ``xgboost.dask`` (converted to the in-memory ``XGBClassifier``/``XGBRegressor``
  through its Booster), dask-ml's linear models (converted to scikit-learn's
  class with the same coefficients), or dask-ml's ``Incremental`` feeding a
  scikit-learn ``partial_fit`` estimator one partition at a time (its fitted
  ``estimator_`` is the model).

What follows (metrics, gate, importance, skops check, reference profile, ONNX)
is the single-pod trainer's, on the samples. The workers are the Dask
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..api.base import parse_quantity
from ..api.distributed import DASK_ML_ESTIMATORS, INCREMENTAL_ESTIMATORS, XGBOOST_ESTIMATORS, Distributed
from . import data as data_mod
from . import partitions
from .data import DataError, Dataset, to_matrix
from .pipeline import SpecError, build_pipeline

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_SECONDS = 120
"""How long the runner waits for the scheduler and for its workers (pods may still be pulling the image)."""
MAX_INCREMENTAL_PASSES = 50
"""Passes over the partitions for a ``partial_fit`` estimator (its ``max_iter``, capped: each pass visits every partition)."""
WORKER_MEMORY_CONFIG = {"distributed.worker.memory.pause": False}
"""Dask pauses a worker at 80 % of its memory limit until its memory falls; most of a worker's memory is its
libraries and its allocators' caches, which never fall, so a small worker (512 MiB, some 300 of them libraries)
could wait forever with nothing to do. The runs here stream the partitions and keep rows on the workers only when
they fit in a third of the memory, so a pause protects nothing; spilling and the restart at 95 % stay. A DaskJob's
workers get the same through their environment (controllers/daskjob.py)."""
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
    import dask

    with dask.config.set(WORKER_MEMORY_CONFIG), LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
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


# -- the run ------------------------------------------------------------------------------


EVALUATION_ROWS = 20_000
"""Held-out rows the runner evaluates, gates, explains and compiles on at most: a uniform sample of them all."""
PROFILE_ROWS = 20_000
"""Training rows the drift reference profile is made of at most: a uniform sample of them all."""
IN_MEMORY_PARTITIONS = 4
"""Pieces a source read whole by the runner is cut into (it is bounded by the download limit: small)."""
KEY = "__mlops_sample_key__"
MAX_CLASSES = 1_000
MERGE_FAN_IN = 4
"""Scans one merge task takes: it holds their samples at once, so few (a worker's memory bounds it)."""


@dataclass(frozen=True)
class DaskRun:
    """What a distributed run hands back to the trainer: the runner's rows and the fitted in-memory pipeline.

    ``dataset`` holds the held-out sample then the training sample (``test_idx`` and
    ``train_idx`` index it); ``rows`` counts every row of the source.
    """

    dataset: Dataset
    train_idx: np.ndarray
    test_idx: np.ndarray
    rows: dict[str, int]
    pipeline: Any
    seconds: float
    digest: str
    partitions: int


def train_on_dask(estimator: Any, class_path: str, task: str, data: Any, preprocessing: Any, spec: Distributed,
                  feedback: pd.DataFrame | None, pvc_root: Any, max_download_bytes: int, log: Any) -> DaskRun:
    """Read, split and fit on the workers; keep in the runner only samples of the rows.

    The workers read the partitions (runtime/partitions.py), type them as the
    first rows were typed, and split each row to training or held-out by a
    draw seeded with ``validation.seed`` and the partition's index (so every
    pass over the data splits it the same way). One pass counts the rows and
    brings back uniform samples of both sides; the fit then streams the
    training rows, or keeps them on the workers when they fit in a third of
    the workers' memory.
    """
    _require_dask()
    parts = _source_partitions(data, pvc_root, max_download_bytes, log)
    head = data_mod.prepare(partitions.read_head(parts[0]), target=data.target, features=data.features,
                            categorical=data.categorical, task=task, min_rows=1)  # the rows are counted later, all of them
    schema = data_mod.Schema.of(head, declared=data.features is not None, task=task)
    pieces: list[Any] = list(parts)
    warnings = list(head.warnings)
    feedback_rows = feedback_rejected = 0
    if feedback is not None and len(feedback):
        typed, feedback_rejected, warns = data_mod.type_feedback(feedback, head.frame, schema)
        warnings += warns
        if len(typed):
            pieces.append(typed)
            feedback_rows = len(typed)
    for w in warnings:
        log("data", level="warning", message=w)
    validation = data.validation
    try:
        with dask_client(spec, log) as client:
            scan = _scan(pieces, schema, validation.seed, validation.fraction)
            _check_rows(scan, task)
            runner_rows = pd.concat([scan.test_sample, scan.train_sample], ignore_index=True).drop(columns=[KEY])
            ds = Dataset(frame=runner_rows, target=head.target, features=head.features, categorical=head.categorical,
                         dtypes=head.dtypes, dropped_missing_target=scan.dropped, feedback_rows=feedback_rows,
                         feedback_rejected=feedback_rejected, warnings=warnings)
            rows = {"total": scan.train + scan.test, "train": scan.train, "test": scan.test,
                    "droppedMissingTarget": scan.dropped, "feedback": feedback_rows, "evaluated": len(scan.test_sample),
                    "profiled": len(scan.train_sample)}
            if feedback_rejected:
                rows["feedbackRejected"] = feedback_rejected
            log("split", **rows, partitions=len(pieces), feedbackUsed=feedback is not None)
            started = time.monotonic()
            pipeline = _fit(client, estimator, class_path, task, pieces, scan, schema, ds, preprocessing, validation)
            seconds = time.monotonic() - started
    except _killed_worker() as exc:
        raise DataError(f"a Dask worker died (out of memory?) on task {getattr(exc, 'task', exc)}, again and again: each partition (a file, or a Parquet row group) "
                        "must fit in one worker's memory; write smaller files or row groups, or give the workers "
                        "more memory (spec.distributed.resources)") from None
    log("fitted_on_dask", estimator=class_path, workers=spec.workers, partitions=len(pieces), seconds=round(seconds, 3))
    n_test = len(scan.test_sample)
    return DaskRun(ds, np.arange(n_test, len(ds.frame)), np.arange(n_test), rows, pipeline, seconds,
                   _digest(scan.digests), len(pieces))


def _source_partitions(data: Any, pvc_root: Any, max_download_bytes: int, log: Any) -> list[Any]:
    """The workers' partitions; a source they cannot read themselves is read here and cut in pieces."""
    if partitions.is_partitioned(data.source):
        parts: list[Any] = partitions.list_partitions(data.source, pvc_root=pvc_root)
        log("loaded_data", source=data.source, partitions=len(parts),
            rows=sum(p.rows for p in parts) if all(p.rows is not None for p in parts) else None)
        return parts
    frame = data_mod.read_source(data.source, target=data.target, pvc_root=pvc_root, max_bytes=max_download_bytes)
    log("loaded_data", source=data.source, rows=len(frame), columns=int(frame.shape[1]))
    size = max(1, math.ceil(len(frame) / IN_MEMORY_PARTITIONS))
    return [frame.iloc[i:i + size] for i in range(0, len(frame), size)]


def _check_rows(scan: Scan, task: str) -> None:
    total = scan.train + scan.test
    if total < data_mod.MIN_ROWS:
        raise DataError(f"only {total} row(s) with a target; at least {data_mod.MIN_ROWS} are needed")
    if scan.test == 0 or scan.train == 0:
        raise DataError(f"the validation split left {scan.train} training and {scan.test} held-out rows; "
                        "change spec.data.validation.fraction or add rows")
    if task == "classification" and len(scan.classes) < 2:
        raise DataError(f"the target has {len(scan.classes)} class(es); classification needs at least 2")


def _killed_worker() -> type[BaseException]:
    from distributed.scheduler import KilledWorker

    return KilledWorker


def _digest(digests: list[str]) -> str:
    """The data set's digest: over each partition's (typed rows, in order), so no one process reads them all."""
    import hashlib

    h = hashlib.sha256(f"partitions={len(digests)}\n".encode())
    for d in digests:
        h.update(d.encode() + b"\n")
    return "sha256:" + h.hexdigest()


# -- one pass over the partitions: counts, classes, digests and samples -----------------------


@dataclass
class Scan:
    """The pass over every partition before the fit (merged from the workers' pieces, in partition order)."""

    train_counts: list[int]
    test: int
    dropped: int
    train_bytes: int
    classes: set[Any]
    digests: list[str]
    train_sample: pd.DataFrame
    test_sample: pd.DataFrame

    @property
    def train(self) -> int:
        return sum(self.train_counts)


def _draws(rows: int, seed: int, index: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of partition ``index`` are held out, and each row's sampling key: the same on every pass."""
    rng = np.random.default_rng([seed, index])
    u = rng.random((2, rows))
    return u[0] < fraction, u[1]


def _typed(piece: Any, schema: data_mod.Schema) -> tuple[pd.DataFrame, int]:
    try:
        raw = partitions.read_partition(piece, columns=[*schema.features, schema.target])
        return data_mod.type_rows(raw, schema)
    except DataError as exc:
        raise DataError(f"{partitions.describe(piece)}: {exc}") from None


def _scan_piece(piece: Any, schema: data_mod.Schema, index: int, seed: int, fraction: float, caps: tuple[int, int]) -> Scan:
    rows, dropped = _typed(piece, schema)
    held, key = _draws(len(rows), seed, index, fraction)
    keyed = rows.assign(**{KEY: key})
    train, test = keyed[~held], keyed[held]
    classes: set[Any] = set()
    if schema.task == "classification":
        classes = set(rows[schema.target].unique().tolist())
        if len(classes) > MAX_CLASSES:
            raise DataError(f"the target has more than {MAX_CLASSES} classes")
    digest = data_mod.data_digest(Dataset(rows, schema.target, schema.features,
                                          [f for f, k in schema.kinds.items() if k == "categorical"], {}))
    return Scan([len(train)], len(test), dropped, int(train.memory_usage(deep=True).sum()), classes, [digest],
                train.nsmallest(caps[0], KEY), test.nsmallest(caps[1], KEY))


def _merge(caps: tuple[int, int], *scans: Scan) -> Scan:
    classes = set().union(*(s.classes for s in scans))
    if len(classes) > MAX_CLASSES:
        raise DataError(f"the target has more than {MAX_CLASSES} classes")
    return Scan(
        [n for s in scans for n in s.train_counts], sum(s.test for s in scans), sum(s.dropped for s in scans),
        sum(s.train_bytes for s in scans), classes, [d for s in scans for d in s.digests],
        pd.concat([s.train_sample for s in scans], ignore_index=True).nsmallest(caps[0], KEY),
        pd.concat([s.test_sample for s in scans], ignore_index=True).nsmallest(caps[1], KEY),
    )


def _scan(pieces: list[Any], schema: data_mod.Schema, seed: int, fraction: float) -> Scan:
    """Scan every partition on the workers and merge the results in a tree (no task holds more than a few samples)."""
    import dask

    caps = (PROFILE_ROWS, EVALUATION_ROWS)  # read here, in the runner: the workers get them as arguments
    level = [dask.delayed(_scan_piece, pure=True)(p, schema, i, seed, fraction, caps) for i, p in enumerate(pieces)]
    for _ in range(64):  # a tree of fan-in 4: 64 levels is far beyond MAX_PARTITIONS
        if len(level) == 1:
            break
        level = [dask.delayed(_merge, pure=True)(caps, *level[i:i + MERGE_FAN_IN]) for i in range(0, len(level), MERGE_FAN_IN)]
    (scan,) = dask.compute(level[0])
    scan.train_sample = scan.train_sample.sort_values(KEY, kind="stable").reset_index(drop=True)
    scan.test_sample = scan.test_sample.sort_values(KEY, kind="stable").reset_index(drop=True)
    return scan


def _training_rows(piece: Any, schema: data_mod.Schema, index: int, seed: int, fraction: float) -> pd.DataFrame:
    rows, _ = _typed(piece, schema)
    held, _ = _draws(len(rows), seed, index, fraction)
    return rows[~held].reset_index(drop=True)


# -- the fit ------------------------------------------------------------------------------


def _fit(client: Any, estimator: Any, class_path: str, task: str, pieces: list[Any], scan: Scan,
         schema: data_mod.Schema, ds: Dataset, preprocessing: Any, validation: Any) -> Any:
    """The fitted in-memory pipeline: preprocessing statistics and the estimator, both computed on the workers."""
    import dask
    import dask.dataframe as dd
    from sklearn.pipeline import Pipeline

    meta = ds.frame.iloc[:0]
    used = [i for i, n in enumerate(scan.train_counts) if n > 0]
    lengths = tuple(scan.train_counts[i] for i in used)
    ddf = dd.from_delayed([dask.delayed(_training_rows, pure=True)(pieces[i], schema, i, validation.seed, validation.fraction)
                           for i in used], meta=meta, verify_meta=False)
    keep = scan.train_bytes * 3 < _workers_memory(client)
    if keep:  # they fit: read the source once, not once per pass
        ddf = client.persist(ddf)
    sample = ds.frame.iloc[len(scan.test_sample):]
    pipeline = build_pipeline(estimator, ds.features, ds.categorical, preprocessing)
    prepare = _fit_prepare(pipeline.named_steps["prepare"], ddf, ds, sample)
    X = ddf.map_partitions(_transform_partition, prepare, list(ds.features), list(ds.categorical),
                           meta=pd.DataFrame(columns=range(_width(prepare, ds, sample)), dtype=float)).to_dask_array(lengths=lengths)
    classes = np.array(sorted(scan.classes)) if task == "classification" else None
    y = _target_array(ddf[ds.target], lengths, classes, task, class_path)
    if keep:
        X, y = client.persist([X, y])
    model = _fit_estimator(estimator, class_path, task, X, y, classes, client)
    return Pipeline([("prepare", prepare), ("model", model)])


def _workers_memory(client: Any) -> int:
    """The workers' memory limits together (0 when one has none: then nothing is kept)."""
    limits = [int(w.get("memory_limit") or 0) for w in client.scheduler_info()["workers"].values()]
    return 0 if not limits or 0 in limits else sum(limits)


def _transform_partition(part: pd.DataFrame, prepare: Any, features: list[str], categorical: list[str]) -> pd.DataFrame:
    out = prepare.transform(to_matrix(part, features, categorical))
    return pd.DataFrame(np.asarray(out, dtype=float), index=part.index)


def _width(prepare: Any, ds: Dataset, frame: pd.DataFrame) -> int:
    return int(prepare.transform(to_matrix(frame.head(1), ds.features, ds.categorical)).shape[1])


def _target_array(target: Any, lengths: Sequence[int], classes: np.ndarray | None, task: str, class_path: str) -> Any:
    """The training rows' target as a Dask array; dask-ml's logistic regression learns 0/1 (classes_ maps back)."""
    if task == "classification" and class_path in XGBOOST_ESTIMATORS:
        assert classes is not None
        if not np.array_equal(classes, np.arange(len(classes))):
            # As the in-memory XGBClassifier: it predicts 0..k-1 and stores no label names.
            raise DataError(f"{class_path} needs the classes 0..k-1 as the target (found {classes[:10].tolist()}); "
                            "use integer labels or a dask-ml/Incremental classifier, which keep the labels")
    if task == "classification" and class_path in DASK_ML_ESTIMATORS:
        assert classes is not None
        if len(classes) != 2:
            raise DataError(f"{class_path} is a binary classifier; the target has {len(classes)} classes")
        target = (target == classes[1]).astype(np.int64)
    return target.to_dask_array(lengths=list(lengths))


def _fit_estimator(estimator: Any, class_path: str, task: str, X: Any, y: Any, classes: np.ndarray | None, client: Any) -> Any:
    """Fit on the workers; return the in-memory model the server loads."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if class_path in XGBOOST_ESTIMATORS:
                return _fit_xgboost(estimator, class_path, X, y, client)
            if class_path in DASK_ML_ESTIMATORS:
                return _fit_dask_ml_linear(estimator, class_path, X, y, classes)
            return _fit_incremental(estimator, task, X, y, classes)
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


def _fit_dask_ml_linear(estimator: Any, class_path: str, X: Any, y: Any, classes: np.ndarray | None) -> Any:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    estimator.fit(X, y)
    coef = np.asarray(estimator.coef_, dtype=float).ravel()
    intercept = float(np.asarray(estimator.intercept_).ravel()[0]) if estimator.fit_intercept else 0.0
    if class_path.endswith("LogisticRegression"):
        model = LogisticRegression()
        model.coef_, model.intercept_ = coef.reshape(1, -1), np.array([intercept])
        model.classes_ = classes
    else:
        model = LinearRegression()
        model.coef_, model.intercept_ = coef, intercept
    model.n_features_in_ = coef.shape[0]
    return model


def _fit_incremental(estimator: Any, task: str, X: Any, y: Any, classes: np.ndarray | None) -> Any:
    """``max_iter`` passes (at most MAX_INCREMENTAL_PASSES) of ``partial_fit`` over every partition in turn.

    One pass is what ``Incremental.fit`` does: an epoch, too little for SGD. Naive Bayes has no
    ``max_iter``: its one pass is exact.
    """
    from dask_ml.wrappers import Incremental

    passes = max(1, min(int(getattr(estimator, "max_iter", 1) or 1), MAX_INCREMENTAL_PASSES))
    wrapper = Incremental(estimator, shuffle_blocks=False)
    extra = {"classes": classes} if task == "classification" else {}
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
