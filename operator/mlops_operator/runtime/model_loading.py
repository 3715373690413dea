"""Loading one model version for serving: digest and type checks, schema, warm-up probes.

Every failure is a :class:`StartupError` whose message the server prints as
one line before exiting 2.  Warnings raised while unpickling are kept, not
silenced: scikit-learn's ``InconsistentVersionWarning`` (the model was trained
by another scikit-learn) is logged and exported, so the operator can say so.

When the version holds a verified compiled model (``model.onnx``, see
:mod:`.compiled`) it is served by default: ``LoadedModel.pipeline`` is then a
:class:`~.compiled.CompiledPredictor` with the same ``predict`` /
``predict_proba`` / ``classes_``.  The skops model is loaded and checked all
the same: it is the pinned artifact, the start-up check compares the compiled
model with it on rows drawn from the drift reference, and the warm-up probes
decide the input policy on it, so the accepted inputs do not depend on the
path.  ``LoadedModel.inference`` says which path serves and
``inference_reason`` why not the compiled one.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .protocol import Schema


class StartupError(Exception):
    """The server cannot start; the message is printed as one line."""


@dataclass(frozen=True)
class VersionMismatch:
    """A stored estimator pickled by another scikit-learn than the one serving it."""

    estimator: str
    trained_with: str
    serving_with: str

    def to_dict(self) -> dict[str, str]:
        return {"estimator": self.estimator, "trained_with": self.trained_with, "serving_with": self.serving_with}


@dataclass
class LoadedModel:
    namespace: str
    name: str
    version: str
    sha256: str
    metadata: dict[str, Any]
    reference: Any
    pipeline: Any
    schema: Schema
    version_mismatches: tuple[VersionMismatch, ...] = field(default=())
    skops_pipeline: Any = None
    """The model loaded from model.skops (the same object as ``pipeline`` on the skops path)."""
    inference: str = "skops"
    """``onnx`` or ``skops``: which model answers."""
    inference_reason: str | None = None
    """Why the compiled model does not serve (None when it does)."""

    @property
    def task(self) -> str:
        return self.schema.task

    def trim_memory(self) -> None:
        """After the warm-up probes: drop the skops model when the compiled one serves (nothing uses it
        any more) and hand the memory loading freed back to the system.

        Loading a forest through skops leaves ~100 MB of freed heap that glibc keeps
        (measured on the bench's RandomForest(100): 387 MB resident before, 287 MB after).
        """
        if self.inference == "onnx":
            self.skops_pipeline = None
        import gc

        gc.collect()
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: the memory stays with the process, nothing else changes
            pass

    def predict(self, rows: np.ndarray, want_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        both = getattr(self.pipeline, "predict_with_proba", None)
        if both is not None:  # the compiled model gives labels and probabilities from one run
            return both(rows, want_proba)  # type: ignore[no-any-return]
        preds = np.asarray(self.pipeline.predict(rows))
        proba = np.asarray(self.pipeline.predict_proba(rows), dtype=np.float64) if want_proba else None
        return preds, proba


def _mismatches(caught: Sequence[warnings.WarningMessage]) -> tuple[VersionMismatch, ...]:
    """Pick scikit-learn's InconsistentVersionWarning out of the warnings of a load."""
    try:
        from sklearn.exceptions import InconsistentVersionWarning
    except ImportError:  # scikit-learn before 1.3 has no such class
        return ()
    out: list[VersionMismatch] = []
    for w in caught:
        msg = w.message
        if isinstance(msg, InconsistentVersionWarning):
            found = VersionMismatch(str(msg.estimator_name), str(msg.original_sklearn_version), str(msg.current_sklearn_version))
            if found not in out:
                out.append(found)
    return tuple(out)


MODEL_CACHE_ENV = "MLOPS_MODEL_CACHE"


def model_cache_dir() -> str:
    """Where a server keeps its copy of an object-store version (``$MLOPS_MODEL_CACHE``, else under the temp dir)."""
    return os.environ.get(MODEL_CACHE_ENV) or os.path.join(tempfile.gettempdir(), "mlops-models")


def load_model(
    store_root: str,
    namespace: str,
    name: str,
    version: str | None,
    sha256: str | None,
    allow_modules: Sequence[str] = (),
    compiled: bool = True,
) -> LoadedModel:
    """Load and check one version (``None`` or ``latest``: the newest in the store).

    ``allow_modules`` are the operator's extra trusted module prefixes (the
    same list ``train --allow-module`` gets), added to the store's own.
    ``compiled=False`` serves the skops model even when a verified compiled one exists.
    """
    from ..store import ArtifactError, S3ModelStore, open_store
    from .pipeline import normalize_prefixes  # imports scikit-learn: not before the server listens

    try:
        store: Any = open_store(store_root)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    trusted = (*store.trusted_modules, *normalize_prefixes(allow_modules))  # "pkg" means the package pkg., as for train
    try:
        if not version or version == "latest":
            versions = store.list_versions(namespace, name)
            if not versions:
                raise StartupError(f"no version of model {namespace}/{name} in the store {store_root}")
            version = versions[-1]
        if isinstance(store, S3ModelStore):  # serve from a verified copy on the pod's own disk
            store = store.download_version(namespace, name, version, model_cache_dir(), expected_sha256=sha256)
        meta = store.read_metadata(namespace, name, version)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipeline = store.load_model(namespace, name, version, expected_sha256=sha256, trusted_modules=trusted)
    except ArtifactError as exc:
        # A refused type is most often an estimator the operator allowed for training but not here.
        hint = " (serve --allow-module PREFIX trusts another package, as train --allow-module did)" if "type" in str(exc) else ""
        raise StartupError(f"{exc}{hint}") from None
    except (ValueError, OSError) as exc:
        raise StartupError(str(exc)) from None
    for w in caught:  # warnings are reported, never dropped
        print(f"warning: {namespace}/{name}/{version}: {w.category.__name__}: {w.message}", file=sys.stderr)
    digest = str((meta.get("sha256") or {}).get("model.skops", ""))
    try:
        schema = Schema.from_metadata(meta)
    except (ValueError, KeyError, TypeError) as exc:
        raise StartupError(f"{namespace}/{name}/{version}: metadata.json: {exc}") from None
    if schema.task not in ("classification", "regression"):
        raise StartupError(f"{namespace}/{name}/{version}: unknown task {schema.task!r}")
    reference = _reference(store, namespace, name, version, schema)
    model = LoadedModel(namespace, name, version, digest.split(":")[-1], meta, reference, pipeline, schema,
                        _mismatches(caught), skops_pipeline=pipeline)
    served, reason = _compiled(store, model, compiled)
    if served is not None:
        model.pipeline, model.inference = served, "onnx"
    model.inference_reason = reason
    return model


def _compiled(store: Any, model: LoadedModel, wanted: bool) -> tuple[Any, str | None]:
    """The verified compiled predictor, or None and why the skops model serves instead."""
    from ..store import ArtifactError
    from .compiled import COMPILED_FILE, VERIFIED, CompiledError, CompiledPredictor, reference_rows, verification_rows, verify

    info = model.metadata.get("compiled")
    if not wanted:
        return None, "compiled inference turned off (serve --no-compiled)"
    if not isinstance(info, dict):
        return None, "the version has no compiled model (stored before compiled inference)"
    if info.get("status") != VERIFIED:
        return None, f"not compiled at training time: {info.get('reason') or info.get('status')}"
    where = f"{model.namespace}/{model.name}/{model.version}"
    skops = model.skops_pipeline
    try:
        data = store.read_artifact(model.namespace, model.name, model.version, str(info.get("file") or COMPILED_FILE))
        predictor = CompiledPredictor(data, model.task, getattr(skops, "classes_", None), hasattr(skops, "predict_proba"))
    except (ArtifactError, CompiledError, ImportError, ValueError) as exc:
        print(f"warning: {where}: compiled model not used: {exc}", file=sys.stderr)
        return None, f"compiled model not loadable: {exc}"
    rows = reference_rows(model.reference, list(model.schema.names))
    check = verify(predictor, skops, verification_rows(skops, rows), model.task)
    if not check.ok:
        print(f"warning: {where}: compiled model disagrees with model.skops at start-up: {check.reason}", file=sys.stderr)
        return None, f"compiled model disagrees with model.skops at start-up: {check.reason}"
    return predictor, None


def _reference(store: Any, namespace: str, name: str, version: str, schema: Schema) -> Any:
    """The drift reference, or None (the model still serves; drift sensing and prediction bins are off)."""
    from ..drift.profile import Reference

    where = f"{namespace}/{name}/{version}"
    try:
        reference = Reference.from_dict(store.read_reference(namespace, name, version))
    except Exception as exc:  # any defect of reference.json only turns the sensor off
        print(f"warning: {where}: no usable drift reference ({exc}); drift sensor off", file=sys.stderr)
        return None
    if not set(reference.features) <= set(schema.names):
        print(f"warning: {where}: reference features differ from the model's; drift sensor off", file=sys.stderr)
        return None
    return reference


def _base_row(model: LoadedModel) -> list[Any]:
    row: list[Any] = []
    ref_feats = model.reference.features if model.reference is not None else {}
    for f in model.schema.features:
        prof = ref_feats.get(f.name)
        if f.numeric:
            mean = getattr(prof, "mean", math.nan)
            row.append(float(mean) if mean is not None and math.isfinite(mean) else (1.0 if f.boolean else 0.0))
        else:
            cats = list(f.categories or ()) or list(getattr(prof, "levels", ()))
            row.append(cats[0] if cats else {"str": "", "int": 0, "bool": False}[f.value_type])
    return row


def warm_up(model: LoadedModel) -> Schema:
    """Run a warm-up prediction and probe how the pipeline treats missing values and unseen levels.

    Returns the schema with the probed policy: numeric ``null`` is accepted only
    if the pipeline predicts a finite value for a row whose numeric features are
    all NaN (it imputes or handles NaN natively); unseen category levels only if
    the pipeline accepts one (e.g. ``OneHotEncoder(handle_unknown="ignore")``).
    """
    schema = model.schema
    where = f"{model.namespace}/{model.name}/{model.version}"
    base = _base_row(model)
    x = np.array([base], dtype=schema.dtype)
    try:
        preds, _ = model.predict(x, schema.task == "classification" and hasattr(model.pipeline, "predict_proba"))
    except Exception as exc:
        raise StartupError(f"{where}: warm-up prediction failed: {type(exc).__name__}: {exc}") from None
    if preds.shape[:1] != (1,):
        raise StartupError(f"{where}: predict returned shape {preds.shape} for one row")

    def accepts(row: list[Any]) -> bool:
        # The probes feed NaN and made-up levels on purpose: what the pipeline warns about them is expected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:  # on the skops model: what it accepts decides the input policy on either path
                p = np.asarray((model.pipeline if model.skops_pipeline is None else model.skops_pipeline).predict(np.array([row], dtype=schema.dtype)))
            except Exception:
                return False
        return p.dtype.kind != "f" or bool(np.isfinite(p).all())

    numeric = [i for i, f in enumerate(schema.features) if f.numeric]
    allow_missing = False
    if numeric:
        row = list(base)
        for i in numeric:
            row[i] = math.nan
        allow_missing = accepts(row)
    categorical = [i for i, f in enumerate(schema.features) if not f.numeric]
    allow_unseen = True
    allow_missing_cat = False
    if categorical:
        row = list(base)
        for i in categorical:
            vt = schema.features[i].value_type
            row[i] = {"str": "\u0000unseen-probe", "int": -(2**62) + 7, "bool": base[i]}[vt]
        allow_unseen = accepts(row)
        row = list(base)
        for i in categorical:
            row[i] = math.nan
        allow_missing_cat = accepts(row)
    return schema.with_policy(
        allow_missing=allow_missing, allow_unseen=allow_unseen, allow_missing_categorical=allow_missing_cat
    )
