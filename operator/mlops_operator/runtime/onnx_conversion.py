"""Converting a fitted pipeline to ONNX at training time, kept only when it verifies (see :mod:`.compiled`).

skl2onnx converts the estimator; the trainer's numeric preprocessing (imputer,
scalers) is written out here in float64 and cast to float32 only in front of
the estimator, exactly as scikit-learn's trees cast their input: a float32
scaler would move a value across a split threshold now and then (forests and
trees then failed verification).  Any other pipeline is converted whole by
skl2onnx in float32.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np

from .compiled import (
    COMPILED_FILE,
    FAILED,
    FORMAT,
    UNSUPPORTED,
    VERIFIED,
    CompiledError,
    CompiledPredictor,
    one_line,
    tolerance,
    verification_rows,
    verify,
)


@dataclass(frozen=True)
class Compilation:
    """The outcome of :func:`compile_pipeline`: the bytes to store (only when verified) and the metadata."""

    data: bytes | None
    info: dict[str, Any]

    @property
    def verified(self) -> bool:
        return self.data is not None


def libraries() -> dict[str, str]:
    out = {}
    for dist in ("skl2onnx", "onnx", "onnxruntime"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def compile_pipeline(pipeline: Any, X_check: np.ndarray, task: str, extra_rows: np.ndarray | None = None) -> Compilation:
    """Convert ``pipeline`` to ONNX and verify it on ``X_check`` (the held-out rows) and ``extra_rows``.

    Never raises: a pipeline that cannot be converted or does not verify
    gives ``data=None`` and the reason in ``info``.
    """
    info: dict[str, Any] = {"format": FORMAT, "tolerance": tolerance(), "libraries": libraries()}
    X = np.asarray(X_check)
    if X.dtype == object:
        return Compilation(None, {**info, "status": UNSUPPORTED, "reason":
                                  "categorical features: the pipeline takes one mixed-type matrix, which ONNX cannot hold"})
    started = time.monotonic()
    try:
        data = convert(pipeline, X.shape[1], task)
    except Exception as exc:  # the converter covers most, not all, estimators and options
        return Compilation(None, {**info, "status": UNSUPPORTED, "reason": f"skl2onnx cannot convert it: {one_line(exc)}"})
    info["seconds"] = round(time.monotonic() - started, 3)
    try:
        predictor = CompiledPredictor(data, task, getattr(pipeline, "classes_", None), hasattr(pipeline, "predict_proba"))
    except CompiledError as exc:
        return Compilation(None, {**info, "status": FAILED, "reason": str(exc)})
    rows = verification_rows(pipeline, X if extra_rows is None else np.vstack([X, np.asarray(extra_rows, dtype=np.float64)]))
    check = verify(predictor, pipeline, rows, task)
    info.update(rows=check.rows, maxDeviation=check.deviation)
    if not check.ok:
        return Compilation(None, {**info, "status": FAILED, "reason": check.reason})
    return Compilation(data, {**info, "status": VERIFIED, "file": COMPILED_FILE, "bytes": len(data)})


def convert(pipeline: Any, n_features: int, task: str) -> bytes:
    """The ONNX bytes of ``pipeline`` for a float64 matrix of ``n_features`` columns.

    The trainer's numeric preprocessing (imputer, scaler) is written out in
    float64 and cast to float32 only in front of the estimator, as
    scikit-learn's trees do themselves: a float32 scaler would move a value
    across a split threshold now and then.  Any other pipeline is converted
    whole by skl2onnx in float32.
    """
    front = _numeric_front(pipeline, n_features)
    if front is None:
        return _skl2onnx(pipeline, n_features, task)
    graph_front, width = front
    estimator = pipeline.steps[-1][1]
    est = _skl2onnx_model(estimator, width, task)
    import onnx
    from onnx import compose, helper

    opsets = {o.domain: o.version for o in est.opset_import}
    front_model = helper.make_model(graph_front, opset_imports=[helper.make_opsetid("", opsets.get("", 15))])
    front_model.ir_version = est.ir_version
    merged = compose.merge_models(front_model, est, io_map=[("prepared", est.graph.input[0].name)], prefix1="prepare_")
    onnx.checker.check_model(merged)
    return bytes(merged.SerializeToString())


def _skl2onnx_model(model: Any, n_features: int, task: str) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {"zipmap": False} if task == "classification" and hasattr(model, "predict_proba") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_sklearn(model, initial_types=[("X", FloatTensorType([None, n_features]))], options=options)


def _skl2onnx(model: Any, n_features: int, task: str) -> bytes:
    return bytes(_skl2onnx_model(model, n_features, task).SerializeToString())


def _numeric_front(pipeline: Any, n_features: int) -> tuple[Any, int] | None:
    """The ``prepare`` step of a numeric-only trainer pipeline as a float64 ONNX graph, and its width.

    None when the pipeline is not one whose steps are known here (then skl2onnx converts it all).
    """
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) != 2 or not isinstance(steps[0][1], ColumnTransformer):
        return None
    ct = steps[0][1]
    live = [(name, t, cols) for name, t, cols in ct.transformers_ if name != "remainder" and t != "drop"]
    if len(live) != 1 or not isinstance(live[0][1], Pipeline):
        return None
    cols = [int(c) for c in live[0][2]]
    if not cols or any(c < 0 or c >= n_features for c in cols):
        return None
    nodes = [helper.make_node("Gather", ["X", "cols"], ["v0"], axis=1)]
    inits = [numpy_helper.from_array(np.asarray(cols, dtype=np.int64), "cols")]

    current = ["v0"]

    def op(kind: str, value: Any) -> None:
        """One of scikit-learn's in-place operations, in its order and in float64."""
        n = len(inits)
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float64), f"c{n}"))
        src, out = current[0], f"v{n}"
        if kind == "fill":
            nodes.append(helper.make_node("IsNaN", [src], [f"m{n}"]))
            nodes.append(helper.make_node("Where", [f"m{n}", f"c{n}", src], [out]))
        else:
            nodes.append(helper.make_node(kind, [src, f"c{n}"], [out]))
        current[0] = out

    for _, step in live[0][1].steps:
        if isinstance(step, SimpleImputer):
            stats = np.asarray(step.statistics_, dtype=np.float64)
            if step.add_indicator or stats.shape != (len(cols),) or not np.isfinite(stats).all():
                return None
            op("fill", stats)
        elif isinstance(step, (StandardScaler, RobustScaler)):  # X -= mean/center; X /= scale
            shift = step.mean_ if isinstance(step, StandardScaler) else step.center_
            if shift is not None:
                op("Sub", shift)
            if step.scale_ is not None:
                op("Div", step.scale_)
        elif isinstance(step, MinMaxScaler) and not step.clip:  # X *= scale_; X += min_
            op("Mul", step.scale_)
            op("Add", step.min_)
        else:
            return None
    nodes.append(helper.make_node("Cast", [current[0]], ["prepared"], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes, "prepare",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info("prepared", TensorProto.FLOAT, [None, len(cols)])],
        initializer=inits,
    )
    return graph, len(cols)
