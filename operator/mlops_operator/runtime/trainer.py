"""``mlops-operator train``: one TrainingJob run, data → pipeline → metrics → gate → store.

The library entry point is :func:`train`, a pipeline of named steps, each a
small function: :func:`target_of` → :func:`choose_estimator` (before any data
is read) → :func:`load_data` → :func:`split_data` → :func:`fit` →
:func:`evaluate` → :func:`judge` (the gate) → permutation importance → :func:`serialise` →
:func:`profile` (the drift reference) → :func:`compile_model` (the ONNX
twin, kept when it verifies) → :func:`describe` (metadata.json) →
:func:`store_version`.  :func:`main` is the command line the training Job runs.  A run that fails (bad spec or data, gate missed, crash)
writes no version.  Exit codes: 0 stored (or already stored), 2 invalid spec
or data, 3 quality gate failed, 1 anything unexpected.  The pod's
termination log gets a one-line JSON summary the operator turns into status.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import __version__
from ..api.trainingjob import Task, TrainingJob, metric_task
from ..store import MODEL_FILE, ArtifactError, ModelStore, S3ModelStore, StoreError, VersionNotFound, load_skops_bytes, open_store
from . import data as data_mod
from . import tracking
from .compiled import COMPILED_FILE, reference_rows
from .importance import TOP as IMPORTANCE_TOP, permutation_ranking
from .distributed import DaskRun, distributed_class, distributed_task, train_on_dask
from .onnx_conversion import Compilation, compile_pipeline
from .data import DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_PVC_ROOT, DataError, Dataset, to_matrix
from .metrics import Gate, baseline, better, check_bounds, compute_metrics
from .pipeline import (
    DEFAULT_ALLOWED_MODULES,
    SpecError,
    build_pipeline,
    categories_of,
    infer_task,
    json_value,
    make_estimator,
    normalize_prefixes,
    resolve_estimator,
)
from .tuning import SearchResult, check_space, scoring_metric, search

PARENT_LABEL = "mlops.dev/parent-version"
TRIGGERED_BY_LABEL = "mlops.dev/triggered-by"
TRIGGER_ANNOTATION = "mlops.dev/retrain-trigger"
MAX_SUMMARY_BYTES = 4096
DEFAULT_TERMINATION_LOG = "/dev/termination-log"

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_GATE = 0, 1, 2, 3

Log = Callable[..., None]

__all__ = [
    "DataError",
    "GateFailed",
    "SpecError",
    "TrainResult",
    "json_log",
    "load_manifest",
    "main",
    "model_version",
    "train",
]


class GateFailed(Exception):
    """The model missed its quality gate; nothing was stored."""

    def __init__(self, gate: Gate, metrics: dict[str, float]) -> None:
        super().__init__(gate.reason or "quality gate failed")
        self.gate = gate
        self.metrics = metrics


@dataclass
class TrainResult:
    """What a run produced (or found already stored)."""

    namespace: str
    model: str
    version: str
    path: Path
    uri: str
    sha256: str
    task: str
    metrics: dict[str, float]
    gate: dict[str, Any]
    data_digest: str
    rows: dict[str, int]
    metadata: dict[str, Any]
    created: bool
    """False when the version already existed and was left as it was."""
    pipeline: Any = None
    """The fitted pipeline in memory (None when the version already existed)."""
    X_test: np.ndarray | None = field(default=None, repr=False)
    y_test: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """The termination-log summary of a successful run."""
        out = {
            "version": self.version,
            "uri": self.uri,
            "sha256": self.sha256,
            "metrics": self.metrics,
            "gate": self.gate,
            "dataDigest": self.data_digest,
            "rows": self.rows,
            "task": self.task,
            "scikitLearn": (self.metadata.get("libraries") or {}).get("scikit-learn"),
            "inference": inference_path(self.metadata),
        }
        tuning = self.metadata.get("tuning")
        if isinstance(tuning, dict):
            out["tuning"] = {k: v for k, v in tuning.items() if k not in ("table", "cv")}
        importance = (self.metadata.get("importance") or {}).get("features")
        if importance:
            out["importance"] = importance[:IMPORTANCE_TOP]
        return out


def inference_path(metadata: dict[str, Any]) -> str:
    """``onnx`` when the version holds a verified compiled model, else ``skops``."""
    return "onnx" if (metadata.get("compiled") or {}).get("status") == "Verified" else "skops"


def model_version(name: str, generation: int | None) -> str:
    """The default version id: ``<TrainingJob name>-g<generation>``."""
    return f"{name}-g{int(generation or 1)}"


def json_log(stream: TextIO | None = None) -> Log:
    """A logger writing one JSON object per line: ``{"ts","level","event",...}``."""

    def log(event: str, level: str = "info", **fields: Any) -> None:
        rec = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": level, "event": event}
        rec.update(fields)
        out = stream if stream is not None else sys.stderr
        out.write(json.dumps(rec, default=str) + "\n")
        out.flush()

    return log


# -- what passes between the steps ----------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the version goes in the store (each part a checked path component)."""

    namespace: str
    model: str
    version: str


@dataclass(frozen=True)
class Choice:
    """The estimator the spec names, built but not fitted, and the task it does."""

    class_path: str
    estimator: Any
    task: Task


@dataclass(frozen=True)
class Split:
    """The held-out split of a dataset: row indices (sorted), matrices and counts."""

    train_idx: np.ndarray
    test_idx: np.ndarray
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    rows: dict[str, int]
    """The ``rows`` of metadata.json and the summary."""


@dataclass(frozen=True)
class Fitted:
    """The fitted pipeline, how long ``fit`` took, and the search that chose its parameters (spec.tuning)."""

    pipeline: Any
    seconds: float
    search: SearchResult | None = None


# -- the run --------------------------------------------------------------------------


def train(
    job: TrainingJob | dict[str, Any],
    store: ModelStore | str | os.PathLike[str],
    *,
    version: str | None = None,
    champion: str | None = None,
    feedback_dir: str | os.PathLike[str] | None = None,
    allow_modules: Sequence[str] = (),
    pvc_root: str | os.PathLike[str] = DEFAULT_PVC_ROOT,
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    log: Log | None = None,
) -> TrainResult:
    """Train, evaluate, gate and store one version.

    ``allow_modules`` adds module prefixes to the estimator allow-list
    (``sklearn.`` is always in it) and to the types a stored model may hold
    (on top of the store's explicit list; a prefix never reaches scikit-learn,
    numpy, scipy or the standard library).
    Raises :class:`SpecError` or :class:`DataError` (permanent, exit 2),
    :class:`GateFailed` (exit 3); nothing is stored in any of these cases.
    When the version already exists it is returned as is (``created=False``).
    """
    log = log or json_log()
    job = job if isinstance(job, TrainingJob) else validate_manifest(job)
    store = store if isinstance(store, (ModelStore, S3ModelStore)) else open_store(store)
    spec = job.spec
    target = target_of(job, store, version)
    if store.exists(target.namespace, target.model, target.version):
        return already_stored(store, target, log)
    # The estimator first: a bad class path or parameter fails before any data is read.
    choice = choose_estimator(spec, allow_modules)
    trusted = normalize_prefixes((*store.trusted_modules, *allow_modules))  # extra prefixes; the rest is the store's list

    started = time.monotonic()
    log("start", trainingJob=job.metadata.name, namespace=target.namespace, model=target.model, version=target.version,
        estimator=choice.class_path, task=choice.task)
    metric = scoring_metric(spec.tuning, spec.quality_gate.metric if spec.quality_gate else None, choice.task)
    dask_run: DaskRun | None = None
    if spec.distributed is not None:
        dask_run = train_on_dask(choice.estimator, choice.class_path, choice.task, spec.data, spec.preprocessing,
                                 spec.distributed, read_feedback_rows(spec.data, target, feedback_dir, None, log),
                                 pvc_root, max_download_bytes, log)
        ds, split, fitted = dask_run.dataset, split_of(dask_run), Fitted(dask_run.pipeline, dask_run.seconds)
    else:
        ds, feedback_used = load_data(spec.data, target, choice.task, feedback_dir, pvc_root, max_download_bytes, log)
        split = split_data(ds, choice.task, spec.data.validation, log, feedback_used=feedback_used)
        fitted = fit(choice, ds, split, spec.preprocessing, log, tuning=spec.tuning, metric=metric)
    metrics = evaluate(fitted, split, choice.task, log)
    gate = judge(spec.quality_gate, metrics, champion, store, target, ds, split, choice.task, trusted, log)
    importance = permutation_ranking(fitted.pipeline, split.X_test, split.y_test, ds.features, metric,
                                     seed=spec.data.validation.seed, log=log)
    model_bytes = serialise(fitted, split, choice.class_path, trusted)
    reference = profile(fitted, ds, split, choice.task)
    compiled = compile_model(fitted, split, choice.task, reference, ds.features, log)
    metadata = describe(job, target, choice, ds, split, fitted, metrics, gate, started)
    metadata["compiled"] = compiled.info
    metadata["importance"] = importance
    if dask_run is not None and spec.distributed is not None:
        # Over every row, partition by partition: the runner's rows are only samples.
        metadata["dataDigest"] = dask_run.digest
        metadata["distributed"] = {**spec.distributed.to_dict(), "partitions": dask_run.partitions}
    return store_version(store, target, model_bytes, metadata, reference, fitted, split, log, compiled)


def target_of(job: TrainingJob, store: ModelStore, version: str | None) -> Target:
    """The version id (``--version`` or the default) and its place in the store."""
    namespace = job.metadata.namespace or "default"
    target = Target(namespace, job.spec.model, version or model_version(job.metadata.name, _generation(job)))
    try:
        store.version_dir(target.namespace, target.model, target.version)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return target


def _generation(job: TrainingJob) -> int | None:
    """``metadata.generation``: set by the API server, absent from a manifest on disk."""
    return getattr(job.metadata, "generation", None)


def already_stored(store: ModelStore, target: Target, log: Log) -> TrainResult:
    """A version is never rewritten: a retried run returns what is there."""
    meta = store.read_metadata(target.namespace, target.model, target.version)
    log("exists", version=target.version, path=str(store.version_dir(target.namespace, target.model, target.version)),
        message="this version is already stored; left as it is")
    return _result_from_metadata(store, target, meta, created=False)


def choose_estimator(spec: Any, allow_modules: Sequence[str]) -> Choice:
    """Import (inside the allow-list) and build the estimator; check the gate fits its task."""
    class_path = spec.estimator.class_path
    distributed = getattr(spec, "distributed", None) is not None
    if distributed:
        cls = distributed_class(class_path)  # a fixed, vetted list (api/distributed.py)
    else:
        cls = resolve_estimator(class_path, normalize_prefixes((*DEFAULT_ALLOWED_MODULES, *allow_modules)))
    estimator = make_estimator(cls, spec.estimator.params, class_path)
    if spec.tuning is not None:
        check_space(spec.tuning, estimator, class_path)
    task = distributed_task(class_path, spec.task) if distributed else infer_task(estimator, spec.task, class_path)
    gate_spec = spec.quality_gate
    if gate_spec is not None and metric_task(gate_spec.metric) != task:
        raise SpecError(f"qualityGate.metric {gate_spec.metric} does not fit the task {task}")
    return Choice(class_path, estimator, task)


def load_data(
    data: Any,
    target: Target,
    task: Task,
    feedback_dir: str | os.PathLike[str] | None,
    pvc_root: str | os.PathLike[str],
    max_download_bytes: int,
    log: Log,
) -> tuple[Dataset, bool]:
    """Read the source (and the feedback rows, when asked for) into typed columns.

    Returns the dataset and whether feedback was read.
    """
    frame = data_mod.read_source(data.source, target=data.target, pvc_root=pvc_root, max_bytes=max_download_bytes)
    log("loaded_data", source=data.source, rows=len(frame), columns=int(frame.shape[1]))
    feedback = read_feedback_rows(data, target, feedback_dir, [str(c) for c in frame.columns], log)
    ds = data_mod.prepare(
        frame,
        target=data.target,
        features=data.features,
        categorical=data.categorical,
        task=task,
        feedback=feedback,
    )
    for w in ds.warnings:
        log("data", level="warning", message=w)
    if ds.dropped_missing_target:
        log("data", level="warning", message=f"{ds.dropped_missing_target} row(s) without a target were dropped")
    return ds, feedback is not None


def read_feedback_rows(data: Any, target: Target, feedback_dir: str | os.PathLike[str] | None, columns: Sequence[str] | None,
                       log: Log) -> Any:
    """The feedback rows the spec asks for (None without a feedback location or with includeFeedback false).

    ``columns`` are the source's, for the feature list when the spec has none (None: keep every column).
    """
    if feedback_dir is None:
        return None
    if not data.include_feedback:
        log("feedback", level="warning", message="feedback ignored: spec.data.includeFeedback is false")
        return None
    needed = data.features or ([c for c in columns if c != data.target] if columns is not None else None)
    feedback, warns = data_mod.read_feedback(feedback_dir, target.namespace, target.model, needed, data.target)
    for w in warns:
        log("feedback", level="warning", message=w)
    return feedback


def split_of(run: DaskRun) -> Split:
    """The trainer's split of a distributed run: its held-out and training samples."""
    ds = run.dataset
    y = ds.y
    return Split(run.train_idx, run.test_idx, ds.matrix(run.train_idx), ds.matrix(run.test_idx), y[run.train_idx],
                 y[run.test_idx], run.rows)


def split_data(ds: Dataset, task: Task, validation: Any, log: Log, *, feedback_used: bool = False) -> Split:
    """Hold out ``validation.fraction`` of the rows (stratified when asked and possible)."""
    train_idx, test_idx = _split_indices(ds, task, validation, log)
    y = ds.y
    rows = {
        "total": len(ds.frame),
        "train": len(train_idx),
        "test": len(test_idx),
        "droppedMissingTarget": ds.dropped_missing_target,
        "feedback": ds.feedback_rows,
    }
    if ds.feedback_rejected:
        rows["feedbackRejected"] = ds.feedback_rejected
    log("split", **rows, feedbackUsed=feedback_used)
    return Split(train_idx, test_idx, ds.matrix(train_idx), ds.matrix(test_idx), y[train_idx], y[test_idx], rows)


def fit(choice: Choice, ds: Dataset, split: Split, preprocessing: Any, log: Log, *, tuning: Any = None,
        metric: str | None = None) -> Fitted:
    """Put the preprocessing in front of the estimator and fit both on the training rows.

    With ``tuning``, a cross-validated search on the training rows picks the
    estimator's parameters first; the winner is then fitted like any run.
    (A distributed run fits on Dask workers instead: runtime/distributed.py.)
    """
    pipeline = build_pipeline(choice.estimator, ds.features, ds.categorical, preprocessing)
    found = None
    if tuning is not None:
        found = search(pipeline, split.X_train, split.y_train, tuning, metric or scoring_metric(tuning, None, choice.task),
                       choice.task, log)
        pipeline.set_params(**{f"model__{k}": v for k, v in found.best_params.items()})
    started = time.monotonic()
    _fit(pipeline, split.X_train, split.y_train, choice.class_path)
    seconds = time.monotonic() - started
    log("fitted", estimator=choice.class_path, seconds=round(seconds, 3))
    return Fitted(pipeline, seconds, found)


def evaluate(fitted: Fitted, split: Split, task: Task, log: Log) -> dict[str, float]:
    """Every metric of the task on the held-out rows."""
    metrics = compute_metrics(fitted.pipeline, split.X_test, split.y_test, task)
    log("evaluated", metrics=metrics, rows=len(split.test_idx))
    return metrics


def judge(
    gate_spec: Any,
    metrics: dict[str, float],
    champion: str | None,
    store: ModelStore,
    target: Target,
    ds: Dataset,
    split: Split,
    task: Task,
    trusted: Sequence[str],
    log: Log,
) -> Gate:
    """The quality gate: the bounds, then (``mustBeat: current``) the champion on the same rows.

    Raises :class:`GateFailed` when the gate is missed.
    """
    gate = check_bounds(gate_spec, metrics)
    if gate_spec is not None and gate_spec.must_beat == "current":
        held_out = HeldOut(ds.frame.iloc[split.test_idx], ds.categorical, split.y_test)
        _challenge(gate, gate_spec.metric, metrics, champion, store, target, held_out, task, trusted, log)
    log("gate", level="info" if gate.passed else "warning", **gate.to_dict())
    if not gate.passed:
        raise GateFailed(gate, metrics)
    return gate


def serialise(fitted: Fitted, split: Split, class_path: str, trusted: Sequence[str]) -> bytes:
    """The skops bytes of the pipeline, loaded back the way the server will load them.

    A model the server would refuse (a type outside the trusted list) is a
    :class:`SpecError`, so it is never stored.
    """
    import skops.io as sio

    model_bytes: bytes = sio.dumps(fitted.pipeline)
    try:
        reloaded = load_skops_bytes(model_bytes, trusted)
    except ArtifactError as exc:
        raise SpecError(f"the fitted {class_path} cannot be stored safely: {exc}") from None
    if not _same_predictions(reloaded.predict(split.X_test), fitted.pipeline.predict(split.X_test)):
        raise RuntimeError("the model loaded back from skops predicts differently from the fitted one")
    return model_bytes


def compile_model(fitted: Fitted, split: Split, task: Task, reference: dict[str, Any], features: Sequence[str], log: Log) -> Compilation:
    """The pipeline as ONNX, kept only when it predicts like the fitted one on the held-out rows
    and on the rows the server will check it on at start-up (drawn from the drift reference).

    The server serves it by default; a pipeline that cannot be converted or
    does not verify is served from model.skops, and ``metadata.json``'s
    ``compiled`` says why.  Never fails the run.
    """
    from ..drift.profile import Reference

    extra = None
    if split.X_test.dtype != object:
        extra = reference_rows(Reference.from_dict(reference), list(features))
    compiled = compile_pipeline(fitted.pipeline, split.X_test, task, extra)
    info = compiled.info
    log("compiled", level="info" if compiled.verified else "warning", status=info.get("status"),
        reason=info.get("reason"), rows=info.get("rows"), maxDeviation=info.get("maxDeviation"))
    return compiled


def profile(fitted: Fitted, ds: Dataset, split: Split, task: Task) -> dict[str, Any]:
    """The drift reference: the training rows' features, predictions and labels, binned (and projected)."""
    from ..drift.profile import build_reference

    train_pred = fitted.pipeline.predict(split.X_train)
    train_frame = ds.frame.iloc[split.train_idx]
    return build_reference({f: train_frame[f].to_numpy() for f in ds.features}, set(ds.categorical), train_pred, task,
                           labels=split.y_train)


def describe(
    job: TrainingJob,
    target: Target,
    choice: Choice,
    ds: Dataset,
    split: Split,
    fitted: Fitted,
    metrics: dict[str, float],
    gate: Gate,
    started: float,
) -> dict[str, Any]:
    """The ``metadata.json`` of the version (the store adds ``format`` and ``sha256``)."""
    spec = job.spec
    cats = categories_of(fitted.pipeline, ds.features, ds.categorical)
    labels = job.metadata.labels or {}
    params = dict(spec.estimator.params)
    if fitted.search is not None:
        params.update(fitted.search.best_params)
    out = {
        "model": target.model,
        "version": target.version,
        "namespace": target.namespace,
        "task": choice.task,
        "target": ds.target,
        "estimator": choice.class_path,
        "params": params,
        "preprocessing": spec.preprocessing.to_dict(),
        "features": [
            {"name": f, "dtype": ds.dtypes[f], "kind": kind, **({"categories": cats.get(f, [])} if kind == "categorical" else {})}
            for f, kind in ds.kinds.items()
        ],
        "inputDtype": "object" if ds.categorical else "float64",
        "classes": [json_value(c) for c in fitted.pipeline.classes_] if choice.task == "classification" else None,
        "metrics": metrics,
        "gate": gate.to_dict(),
        "rows": split.rows,
        "dataDigest": data_mod.data_digest(ds),
        "source": spec.data.source,
        "validation": spec.data.validation.to_dict(),
        "libraries": _libraries(choice.class_path),
        "lineage": {
            "trainingJob": job.metadata.name,
            "generation": int(_generation(job) or 1),
            "parent": labels.get(PARENT_LABEL),
            "triggeredBy": labels.get(TRIGGERED_BY_LABEL),
            **({"trigger": trigger} if (trigger := (job.metadata.annotations or {}).get(TRIGGER_ANNOTATION)) else {}),
        },
        "trainedAt": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "trainingSeconds": round(fitted.seconds, 4),
        "runSeconds": round(time.monotonic() - started, 4),
        "baseline": baseline(metrics, choice.task, len(split.test_idx)),
    }
    if fitted.search is not None and spec.tuning is not None:
        out["tuning"] = {**fitted.search.summary(spec.tuning.top), "cv": fitted.search.cv, "table": fitted.search.table}
    return out


def store_version(
    store: ModelStore,
    target: Target,
    model_bytes: bytes,
    metadata: dict[str, Any],
    reference: dict[str, Any],
    fitted: Fitted,
    split: Split,
    log: Log,
    compiled: Compilation | None = None,
) -> TrainResult:
    """Write the version atomically; when a concurrent run stored it first, keep theirs."""
    extra = {COMPILED_FILE: compiled.data} if compiled is not None and compiled.data is not None else None
    written = store.write_version(target.namespace, target.model, target.version, model_bytes, metadata, reference, extra)
    if not written.created:
        log("exists", version=target.version, path=str(written.path), message="another run stored this version first; left as it is")
        return _result_from_metadata(store, target, written.metadata, created=False)
    log("stored", version=target.version, path=str(written.path), sha256=written.metadata["sha256"][MODEL_FILE])
    result = _result_from_metadata(store, target, written.metadata, created=True)
    result.pipeline = fitted.pipeline
    result.X_test, result.y_test = split.X_test, split.y_test
    return result


def _same_predictions(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=0, equal_nan=True))
    return a.shape == b.shape and bool(np.all(a == b))


def _result_from_metadata(store: ModelStore, target: Target, meta: dict[str, Any], *, created: bool) -> TrainResult:
    namespace, model, version = target.namespace, target.model, target.version
    return TrainResult(
        namespace=namespace,
        model=model,
        version=version,
        path=store.version_dir(namespace, model, version),
        uri=store.uri(namespace, model, version),
        sha256=(meta.get("sha256") or {}).get(MODEL_FILE, ""),
        task=meta.get("task", ""),
        metrics=meta.get("metrics") or {},
        gate=meta.get("gate") or {},
        data_digest=meta.get("dataDigest", ""),
        rows=meta.get("rows") or {},
        metadata=meta,
        created=created,
    )


def _split_indices(ds: Dataset, task: Task, validation: Any, log: Log) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(ds.frame))
    y = ds.y
    stratify = y if task == "classification" and validation.stratify else None
    try:
        train_idx, test_idx = train_test_split(idx, test_size=validation.fraction, random_state=validation.seed, stratify=stratify)
    except ValueError as exc:
        if stratify is None:
            raise DataError(f"cannot split the data: {exc}") from None
        log("split", level="warning", message=f"stratified split impossible ({exc}); splitting without stratification")
        train_idx, test_idx = train_test_split(idx, test_size=validation.fraction, random_state=validation.seed)
    if task == "classification":
        classes = np.unique(y[train_idx].astype(str) if y.dtype == object else y[train_idx])
        if len(classes) < 2:
            raise DataError(f"classification needs at least two classes in the training rows; found {len(classes)}")
    return np.sort(train_idx), np.sort(test_idx)


def _fit(pipeline: Any, X: np.ndarray, y: np.ndarray, class_path: str) -> None:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    try:
        from sklearn.utils._param_validation import InvalidParameterError
    except ImportError:  # pragma: no cover - older scikit-learn
        InvalidParameterError = ()  # type: ignore[assignment,misc]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(X, y)
    except InvalidParameterError as exc:  # type: ignore[misc]
        raise SpecError(f"{class_path}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise DataError(f"fitting {class_path} failed: {exc}") from None


# -- the champion (qualityGate.mustBeat: current) ---------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """The held-out rows as a frame (so a champion can pick its own columns) and their targets."""

    frame: Any
    categorical: Sequence[str]
    y: np.ndarray


def _challenge(
    gate: Gate,
    metric: str,
    metrics: dict[str, float],
    champion: str | None,
    store: ModelStore,
    target: Target,
    held_out: HeldOut,
    task: Task,
    trusted: Sequence[str],
    log: Log,
) -> None:
    """mustBeat current: score the champion on the same held-out rows; fail unless strictly better."""
    if champion is None:
        log("champion", level="warning", message="mustBeat is current but no champion version was given; deciding on the bounds only")
        gate.reason = gate.reason or "no serving version to beat; decided on the bounds only"
        return
    try:
        meta = store.read_metadata(target.namespace, target.model, champion)
    except VersionNotFound:
        log("champion", level="warning", version=champion, message="champion version not in the store; deciding on the bounds only")
        gate.reason = gate.reason or f"champion {champion} not in the store; decided on the bounds only"
        return
    gate.championVersion = champion
    scored = _score_champion(store, target, champion, meta, held_out, task, trusted)
    if isinstance(scored, str):
        _fail(gate, scored)
        return
    value, champ_value = metrics.get(metric), scored.get(metric)
    gate.championValue = champ_value
    rows = len(held_out.y)
    log("champion", version=champion, metric=metric, value=champ_value, challenger=value, rows=rows)
    if value is None:
        return  # already failed in check_bounds
    if champ_value is None:
        _fail(gate, f"{metric} of champion {champion} could not be computed on the held-out rows")
    elif not better(metric, value, champ_value):
        _fail(gate, f"{metric} {value:.6g} does not beat champion {champion} ({champ_value:.6g}) on the same {rows} held-out rows")


def _score_champion(
    store: ModelStore,
    target: Target,
    champion: str,
    meta: dict[str, Any],
    held_out: HeldOut,
    task: Task,
    trusted: Sequence[str],
) -> dict[str, float] | str:
    """The champion's metrics on the held-out rows, or why it cannot be scored."""
    try:
        model = store.load_model(target.namespace, target.model, champion, trusted_modules=trusted)
    except ArtifactError as exc:
        return f"champion {champion} could not be loaded: {exc}"
    if meta.get("task") != task:
        return f"champion {champion} is a {meta.get('task')} model; this run is {task}"
    feats = [f.get("name") for f in meta.get("features") or []]
    cat = [f.get("name") for f in meta.get("features") or [] if f.get("kind") == "categorical"]
    missing = [f for f in feats if f not in held_out.frame.columns]
    if missing:
        return f"champion {champion} needs column(s) {', '.join(map(repr, missing))} that this run's data lacks"
    frame = held_out.frame.copy()
    for f in cat:
        if f not in held_out.categorical:
            frame[f] = data_mod.as_categories(frame[f])
    try:
        return compute_metrics(model, to_matrix(frame, feats, cat), held_out.y, task)
    except Exception as exc:  # the champion cannot score these rows at all
        return f"champion {champion} could not score the held-out rows: {type(exc).__name__}: {exc}"


def _fail(gate: Gate, reason: str) -> None:
    gate.result = "Failed"
    gate.reason = reason if gate.reason is None else f"{gate.reason}; {reason}"


def _libraries(class_path: str) -> dict[str, str]:
    out = {"python": platform.python_version(), "mlops-operator": __version__}
    for dist in ("scikit-learn", "numpy", "scipy", "pandas", "skops"):
        out[dist] = _dist_version(dist)
    top = class_path.split(".")[0]
    if top != "sklearn":
        out[top] = _dist_version(top)
    return {k: v for k, v in out.items() if v}


def _dist_version(name: str) -> str:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        mod = sys.modules.get(name)
        return str(getattr(mod, "__version__", "")) if mod else ""


# -- command line -------------------------------------------------------------------


def load_manifest(path: str) -> dict[str, Any]:
    """The TrainingJob document of a YAML/JSON file (``-`` = stdin)."""
    import yaml

    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML/JSON: {exc}") from None
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == "TrainingJob"]
    if len(jobs) != 1:
        if len(docs) == 1 and isinstance(docs[0], dict):
            return docs[0]  # let validation say what is wrong with it
        raise SpecError(f"{path}: expected one TrainingJob, found {len(jobs)} among {len(docs)} document(s)")
    return jobs[0]


def validate_manifest(doc: dict[str, Any]) -> TrainingJob:
    from ..api.validation import validate_object

    errors = validate_object(doc)
    if errors:
        raise SpecError("; ".join(str(e) for e in errors))
    return TrainingJob.model_validate(doc)


def _fit_summary(summary: dict[str, Any]) -> str:
    """One line of at most 4 KiB: metrics and long messages are trimmed first."""
    text = json.dumps(summary, separators=(",", ":"), default=str)
    if len(text.encode()) <= MAX_SUMMARY_BYTES:
        return text
    summary = dict(summary)
    for key in ("tuning", "importance"):  # the search's best few, then the top features; metadata.json keeps them all
        part = summary.get(key)
        if key == "tuning" and isinstance(part, dict):
            part = dict(part)
            summary[key] = part
            while part.get("top") and len(json.dumps(summary, separators=(",", ":"), default=str).encode()) > MAX_SUMMARY_BYTES:
                part["top"] = part["top"][:-1]
        while isinstance(summary.get(key), list) and summary[key] and \
                len(json.dumps(summary, separators=(",", ":"), default=str).encode()) > MAX_SUMMARY_BYTES:
            summary[key] = summary[key][:-1]
    metrics = dict(summary.get("metrics") or {})
    while metrics and len(json.dumps(summary, separators=(",", ":"), default=str).encode()) > MAX_SUMMARY_BYTES:
        metrics.pop(next(reversed(metrics)))
        summary["metrics"] = metrics
    for key in ("message",):
        while isinstance(summary.get(key), str) and len(json.dumps(summary, separators=(",", ":"), default=str).encode()) > MAX_SUMMARY_BYTES:
            summary[key] = summary[key][: max(0, len(summary[key]) // 2)] + "…"
    if isinstance(summary.get("gate"), dict) and len(json.dumps(summary, separators=(",", ":"), default=str).encode()) > MAX_SUMMARY_BYTES:
        gate = dict(summary["gate"])
        gate["reason"] = (gate.get("reason") or "")[:500]
        summary["gate"] = gate
    text = json.dumps(summary, separators=(",", ":"), default=str)
    return text if len(text.encode()) <= MAX_SUMMARY_BYTES else text.encode()[:MAX_SUMMARY_BYTES].decode(errors="ignore")


def write_termination_log(path: str | None, summary: dict[str, Any], log: Log) -> None:
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(_fit_summary(summary) + "\n")
    except OSError as exc:
        log("termination_log", level="warning", path=path, message=f"cannot write the termination log: {exc}")


PERMANENT_STORE_REASONS = frozenset({"StoreAccessDenied", "StoreBucketMissing", "InvalidStoreSettings", "StoreTLSError"})
"""Object-store failures a retried pod would meet again (an unreachable endpoint may come back)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlops-operator train",
        description="Train, evaluate, gate and store one model version from a TrainingJob manifest.",
        epilog="Exit codes: 0 stored (or already stored), 2 invalid spec or data, 3 quality gate failed, 1 unexpected error.",
    )
    p.add_argument("--spec", required=True, help="TrainingJob manifest (YAML or JSON); '-' reads stdin")
    p.add_argument("--store", required=True, help="the model store: a directory, file:///path or s3://bucket/prefix")
    p.add_argument("--version", help="version id (default: <metadata.name>-g<metadata.generation or 1>)")
    p.add_argument("--champion", help="serving version to beat when qualityGate.mustBeat is current")
    p.add_argument("--feedback", help="labelled feedback rows: DIR/<namespace>/<model>/*.csv, or s3://bucket/prefix (objects under <namespace>/<model>/)")
    p.add_argument("--termination-log", default=DEFAULT_TERMINATION_LOG, help="where the one-line JSON summary goes (default: %(default)s)")
    p.add_argument("--allow-module", action="append", default=[], metavar="PREFIX",
                   help="also allow estimator classes (and stored types) from this module prefix; repeatable (sklearn. is always allowed)")
    p.add_argument("--pvc-root", default=DEFAULT_PVC_ROOT, help="where pvc://<claim>/<path> claims are mounted (default: %(default)s)")
    p.add_argument("--max-download-bytes", type=int, default=DEFAULT_MAX_DOWNLOAD_BYTES, help="size limit of https:// sources (default: 100 MiB)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    log = json_log()
    term = args.termination_log

    def failed(reason: str, message: str, code: int, **extra: Any) -> int:
        log("failed", level="error", reason=reason, message=message, **extra)
        write_termination_log(term, {"reason": reason, "message": message, **extra}, log)
        return code

    try:
        job = validate_manifest(load_manifest(args.spec))
    except SpecError as exc:
        return failed("InvalidSpec", str(exc), EXIT_INVALID)
    except OSError as exc:
        return failed("InvalidSpec", f"cannot read {args.spec}: {exc}", EXIT_INVALID)
    try:
        store = open_store(args.store)
    except ValueError as exc:
        return failed("InvalidSpec", f"--store: {exc}", EXIT_INVALID)
    try:
        result = train(
            job,
            store,
            version=args.version,
            champion=args.champion,
            feedback_dir=args.feedback,
            allow_modules=args.allow_module,
            pvc_root=args.pvc_root,
            max_download_bytes=args.max_download_bytes,
            log=log,
        )
    except SpecError as exc:
        return failed("InvalidSpec", str(exc), EXIT_INVALID)
    except DataError as exc:
        return failed("DataError", str(exc), EXIT_INVALID)
    except GateFailed as exc:
        return failed("GateFailed", str(exc), EXIT_GATE, gate=exc.gate.to_dict(), metrics=exc.metrics,
                      **tracking.track_gate_failure(job, args.version or model_version(job.metadata.name, _generation(job)),
                                                    exc.metrics, exc.gate.to_dict(), log))
    except StoreError as exc:  # refused credentials or a missing bucket: a retry with the same Secret cannot help
        permanent = exc.reason in PERMANENT_STORE_REASONS
        return failed(exc.reason, str(exc), EXIT_INVALID if permanent else EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - the summary must say something
        import traceback

        traceback.print_exc(file=sys.stderr)
        return failed("Error", f"{type(exc).__name__}: {exc}", EXIT_ERROR)
    write_termination_log(term, {**result.summary(), **tracking.track_result(job, store, result, log)}, log)
    print(result.path)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
