"""Metrics on the held-out rows and the quality gate.

Classification: accuracy, balanced_accuracy, f1_macro, and when the model
has ``predict_proba``: roc_auc_ovr (one-vs-rest macro AUC; for two classes
the plain ROC AUC of the positive class, under the same key) and log_loss.
Regression: rmse, mae, r2.  A metric that cannot be computed on these rows
(e.g. AUC when the held-out rows lack a class) is left out, never NaN.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from ..api.trainingjob import LOWER_IS_BETTER


def compute_metrics(model: Any, X: np.ndarray, y: np.ndarray, task: str) -> dict[str, float]:
    """Every metric of ``task`` that can be computed for ``model`` on ``(X, y)``."""
    pred = model.predict(X)
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "regression":
            y_f = np.asarray(y, dtype=np.float64)
            p_f = np.asarray(pred, dtype=np.float64)
            _put(out, "rmse", lambda: math.sqrt(skm.mean_squared_error(y_f, p_f)))
            _put(out, "mae", lambda: skm.mean_absolute_error(y_f, p_f))
            if len(y_f) >= 2:
                _put(out, "r2", lambda: skm.r2_score(y_f, p_f))
            return out
        _put(out, "accuracy", lambda: skm.accuracy_score(y, pred))
        _put(out, "balanced_accuracy", lambda: skm.balanced_accuracy_score(y, pred))
        _put(out, "f1_macro", lambda: skm.f1_score(y, pred, average="macro"))
        if callable(getattr(model, "predict_proba", None)):
            try:
                proba = model.predict_proba(X)
            except (AttributeError, NotImplementedError, ValueError):
                proba = None  # e.g. SVC(probability=False) exposes the method but cannot
            if proba is not None:
                classes = list(getattr(model, "classes_", []))
                if proba.shape[1] == 2:
                    _put(out, "roc_auc_ovr", lambda: skm.roc_auc_score(np.asarray(y) == classes[1], proba[:, 1]))
                else:
                    _put(out, "roc_auc_ovr", lambda: skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))
                _put(out, "log_loss", lambda: skm.log_loss(y, proba, labels=classes))
    return out


def _put(out: dict[str, float], name: str, fn: Any) -> None:
    try:
        value = float(fn())
    except (ValueError, IndexError, TypeError):
        return
    if math.isfinite(value):
        out[name] = value


def baseline(metrics: dict[str, float], task: str, rows: int) -> dict[str, Any]:
    """What the DriftPolicy compares live feedback with."""
    if task == "classification":
        acc = metrics.get("accuracy")
        return {"errorRate": None if acc is None else 1.0 - acc, "rows": rows}
    return {"rmse": metrics.get("rmse"), "mae": metrics.get("mae"), "rows": rows}


@dataclass
class Gate:
    """The gate's verdict, in the shape of TrainingJob ``status.gate``."""

    result: str
    metric: str | None = None
    value: float | None = None
    bound: float | None = None
    championVersion: str | None = None
    championValue: float | None = None
    reason: str | None = None

    @property
    def passed(self) -> bool:
        return self.result != "Failed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def better(metric: str, challenger: float, champion: float) -> bool:
    """Strictly better; a tie is not better."""
    return challenger < champion if metric in LOWER_IS_BETTER else challenger > champion


def check_bounds(gate_spec: Any, metrics: dict[str, float]) -> Gate:
    """The gate on the bounds alone (``mustBeat`` is applied by the caller)."""
    if gate_spec is None:
        return Gate(result="Skipped", reason="no quality gate in the spec")
    metric = gate_spec.metric
    bound = gate_spec.minimum if gate_spec.minimum is not None else gate_spec.maximum
    value = metrics.get(metric)
    gate = Gate(result="Passed", metric=metric, value=value, bound=bound)
    if value is None:
        gate.result = "Failed"
        gate.reason = f"{metric} could not be computed on the held-out rows"
    elif gate_spec.minimum is not None and value < gate_spec.minimum:
        gate.result = "Failed"
        gate.reason = f"{metric} {value:.6g} is below the minimum {gate_spec.minimum:g}"
    elif gate_spec.maximum is not None and value > gate_spec.maximum:
        gate.result = "Failed"
        gate.reason = f"{metric} {value:.6g} is above the maximum {gate_spec.maximum:g}"
    return gate
