"""The compiled inference path: the fitted pipeline as ONNX, run by onnxruntime.

Why: for one row, scikit-learn spends almost all of a ``predict`` call on
per-call work (input validation, a joblib task per tree, warning filters),
not on the model; onnxruntime runs the same imputer, scaler and estimator
in microseconds.  Why ONNX and not compiled trees (treelite/tl2cgen): it
covers the whole pipeline and most estimators, not only tree ensembles, and
loading it runs no generated native code (a compiled tree library is a
shared object that must be ``dlopen``-ed).

The trainer converts the pipeline (:mod:`.onnx_conversion`), runs both on
the held-out rows and keeps the ONNX file only when it **verifies**: the
same class on every row, probabilities within :data:`PROBA_ATOL`, values
within :data:`VALUE_RTOL` (relative).  The measured maximum deviations go
into ``metadata.json`` (``compiled``); the server serves the ONNX model by
default when it verified and falls back to the skops model otherwise, saying
why.  Before loading, :func:`check_onnx` refuses a file that names an
operator outside the standard ONNX domains (a custom operator is native
code) or keeps tensors in external files (a path to read).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

COMPILED_FILE = "model.onnx"
FORMAT = "onnx"
PROBA_ATOL = 1e-4
"""Largest absolute difference of a class probability that still verifies."""
VALUE_RTOL = 1e-4
"""Largest difference of a regression value, relative to max(1, |value|), that still verifies."""
ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
"""Operator sets onnxruntime implements itself; anything else would be a custom (native) operator."""
VERIFIED, FAILED, UNSUPPORTED = "Verified", "Failed", "Unsupported"


class CompiledError(Exception):
    """The ONNX bytes cannot be (safely) loaded."""


@dataclass(frozen=True)
class Verification:
    """How the compiled predictor compares with the pipeline on some rows."""

    ok: bool
    rows: int
    reason: str | None
    deviation: dict[str, float]
    """``probabilities`` (absolute) for classifiers with probabilities; ``values`` (absolute) and
    ``relative`` for regressors."""


def tolerance() -> dict[str, Any]:
    return {"classes": "exact", "probabilities": PROBA_ATOL, "valuesRelative": VALUE_RTOL}


# -- loading -------------------------------------------------------------------


def check_onnx(data: bytes) -> None:
    """Refuse ONNX bytes that would run or read anything beyond the standard operators."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx comes with the project
        raise CompiledError(f"onnx is not installed: {exc}") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise CompiledError(f"{COMPILED_FILE} is not a readable ONNX model: {exc}") from None
    domains = {op.domain for op in model.opset_import} | _node_domains(model.graph)
    domains |= {n.domain for f in model.functions for n in f.node} | {f.domain for f in model.functions}
    bad = sorted(d for d in domains if d not in ALLOWED_DOMAINS)
    if bad:
        raise CompiledError(f"{COMPILED_FILE} uses operator domain(s) {', '.join(map(repr, bad))}; only the standard ONNX ones load")
    if _has_external_data(model.graph):
        raise CompiledError(f"{COMPILED_FILE} keeps tensors in external files; only self-contained models load")


def _node_domains(graph: Any) -> set[str]:
    out = set()
    for node in graph.node:
        out.add(node.domain)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                out |= _node_domains(sub)
    return out


def _has_external_data(graph: Any) -> bool:
    tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute if a.HasField("t")]
    if any(t.data_location == 1 or len(t.external_data) for t in tensors):  # 1 = TensorProto.EXTERNAL
        return True
    return any(
        _has_external_data(sub)
        for n in graph.node for a in n.attribute for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs)
    )


class CompiledPredictor:
    """An onnxruntime session behind the interface the server uses of a pipeline.

    ``predict``, ``predict_proba`` (only when the pipeline has it), ``classes_``
    and :meth:`predict_with_proba`, which gets both from one run.  Labels come
    back as the pipeline's own ``classes_`` values (same dtype), so the
    responses do not change with the path.
    """

    def __init__(self, data: bytes, task: str, classes: Any = None, has_proba: bool = False) -> None:
        check_onnx(data)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # the server runs one predict at a time; more threads only contend
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4  # failures surface as exceptions; no stderr noise
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CompiledError(f"onnxruntime cannot load {COMPILED_FILE}: {type(exc).__name__}: {exc}") from None
        self.task = task
        self.input_name = self.session.get_inputs()[0].name
        self.n_features_in_ = int(self.session.get_inputs()[0].shape[1])
        self.input_dtype = np.float64 if self.session.get_inputs()[0].type == "tensor(double)" else np.float32
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.classes_ = None if classes is None else np.asarray(classes)
        self._has_proba = bool(has_proba and task == "classification" and len(self.outputs) > 1)
        self._order = None if self.classes_ is None else np.argsort(self.classes_, kind="stable")

    def _run(self, X: Any, names: list[str]) -> list[np.ndarray]:
        x = np.asarray(X, dtype=self.input_dtype)
        return self.session.run(names, {self.input_name: x})

    def _labels(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw).reshape(-1)
        if self.classes_ is None:
            return raw
        assert self._order is not None
        sorted_classes = self.classes_[self._order]
        pos = np.searchsorted(sorted_classes, raw)
        pos = np.clip(pos, 0, len(sorted_classes) - 1)
        if not np.all(sorted_classes[pos] == raw):
            raise RuntimeError("the compiled model returned a label outside the model's classes")
        return self.classes_[self._order[pos]]

    def predict(self, X: Any) -> np.ndarray:
        if self.task == "classification":
            return self._labels(self._run(X, self.outputs[:1])[0])
        return np.asarray(self._run(X, self.outputs[:1])[0], dtype=np.float64).reshape(-1)

    def _proba(self, X: Any) -> np.ndarray:
        return np.asarray(self._run(X, self.outputs[1:2])[0], dtype=np.float64)

    @property
    def predict_proba(self) -> Any:
        if not self._has_proba:
            raise AttributeError("this model has no predict_proba")
        return self._proba

    def predict_with_proba(self, X: Any, want_proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and probabilities when asked and available) from one run."""
        if not (want_proba and self._has_proba):
            return self.predict(X), None
        label, proba = self._run(X, self.outputs[:2])
        return self._labels(label), np.asarray(proba, dtype=np.float64)


# -- comparing with scikit-learn -------------------------------------------------


def one_line(exc: Exception) -> str:
    """An exception as one line of at most 300 characters (converter messages can hold whole arrays)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}"


def reference_rows(reference: Any, names: list[str], n: int = 64) -> np.ndarray:
    """Rows drawn from a drift reference: the means first, then every bin's mean value, column by column.

    The server compares the compiled model with model.skops on these rows at
    start-up, and the trainer verifies on them too, so both judge the same rows.
    """
    features = getattr(reference, "features", None) or {}
    columns = []
    for name in names:
        prof = features.get(name)
        mean = getattr(prof, "mean", None)
        values = np.asarray(getattr(prof, "values", ()), dtype=np.float64)
        values = values[np.isfinite(values)]
        columns.append((float(mean) if mean is not None and np.isfinite(mean) else 0.0, values))
    rows = np.empty((n, len(names)), dtype=np.float64)
    for j, (mean, values) in enumerate(columns):
        rows[0, j] = mean
        for k in range(1, n):
            rows[k, j] = values[(k * (j + 1) + j) % values.size] if values.size else mean
    return rows


def verification_rows(pipeline: Any, X: np.ndarray) -> np.ndarray:
    """The held-out rows, plus copies with a missing value when the pipeline takes missing values.

    The server accepts ``null`` exactly when the scikit-learn pipeline does, so
    the compiled one must agree on those rows too.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] == 0 or X.shape[1] == 0:
        return X
    holes = X.copy()
    holes[np.arange(X.shape[0]), np.arange(X.shape[0]) % X.shape[1]] = np.nan
    holes = np.vstack([holes, np.full((1, X.shape[1]), np.nan)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = np.asarray(pipeline.predict(holes))
    except Exception:
        return X  # the pipeline refuses missing values, and so will the server
    if pred.dtype.kind == "f" and not np.isfinite(pred).all():
        return X
    return np.vstack([X, holes])


def verify(predictor: CompiledPredictor, pipeline: Any, X: np.ndarray, task: str) -> Verification:
    """Compare the compiled predictor with the pipeline on ``X`` within the stated tolerance."""
    n = int(X.shape[0])
    if n == 0:
        return Verification(False, 0, "no rows to verify on", {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = np.asarray(pipeline.predict(X))
            want_proba = np.asarray(pipeline.predict_proba(X), dtype=np.float64) if predictor._has_proba else None
        got, got_proba = predictor.predict_with_proba(X, want_proba is not None)
    except Exception as exc:
        return Verification(False, n, f"the compiled model failed on the verification rows: {one_line(exc)}", {})
    if task == "classification":
        differ = int(np.sum(got != want))
        deviation: dict[str, float] = {}
        if want_proba is not None and got_proba is not None:
            if got_proba.shape != want_proba.shape:
                return Verification(False, n, f"probabilities of shape {got_proba.shape}, expected {want_proba.shape}", {})
            deviation["probabilities"] = float(np.max(np.abs(got_proba - want_proba)))
        if differ:
            return Verification(False, n, f"another class than scikit-learn's on {differ} of {n} rows", deviation)
        if deviation.get("probabilities", 0.0) > PROBA_ATOL:
            return Verification(False, n, f"probabilities differ by up to {deviation['probabilities']:.3g} (> {PROBA_ATOL:g})", deviation)
        return Verification(True, n, None, deviation)
    want_f = want.astype(np.float64).reshape(-1)
    got_f = got.astype(np.float64).reshape(-1)
    if got_f.shape != want_f.shape or not np.array_equal(np.isfinite(got_f), np.isfinite(want_f)):
        return Verification(False, n, "values missing or non-finite where scikit-learn's are not", {})
    fin = np.isfinite(want_f)
    diff = np.abs(got_f[fin] - want_f[fin])
    rel = diff / np.maximum(1.0, np.abs(want_f[fin]))
    deviation = {"values": float(diff.max(initial=0.0)), "relative": float(rel.max(initial=0.0))}
    if deviation["relative"] > VALUE_RTOL:
        return Verification(False, n, f"values differ by up to {deviation['relative']:.3g} relative (> {VALUE_RTOL:g})", deviation)
    return Verification(True, n, None, deviation)
