"""The estimator (resolved inside an allow-list) and the pipeline around it.

The fitted object is ``Pipeline([("prepare", ColumnTransformer(...)), ("model",
estimator)])``.  The ColumnTransformer selects columns **by position**, so the
pipeline takes a plain 2-D numpy array whose columns are the features in the
order of ``metadata.json``: float64 when every feature is numeric, else object
(numbers as float, categories as str, missing as NaN).  The model server needs
no pandas and no column names.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

from ..api.trainingjob import Task

DEFAULT_ALLOWED_MODULES: tuple[str, ...] = ("sklearn.",)


class SpecError(ValueError):
    """The spec asks for something this trainer will not or cannot do (permanent)."""


def normalize_prefixes(prefixes: Sequence[str]) -> tuple[str, ...]:
    """``sklearn`` and ``sklearn.`` both mean the package sklearn and its submodules."""
    out = []
    for p in prefixes:
        p = p.strip()
        if not p or p == ".":
            continue
        out.append(p if p.endswith(".") else p + ".")
    return tuple(dict.fromkeys(out))


def resolve_estimator(class_path: str, allowed_modules: Sequence[str] = DEFAULT_ALLOWED_MODULES) -> type:
    """Import an estimator class, but only from inside the allowed module prefixes.

    Nothing outside the allow-list is imported, so naming ``os.system`` cannot
    run module code.  The result must be a class with ``fit``, ``predict`` and
    ``get_params`` defined in an allowed module.
    """
    prefixes = normalize_prefixes(allowed_modules)
    if not any(class_path.startswith(p) for p in prefixes):
        raise SpecError(
            f"estimator class {class_path!r} is outside the allowed modules ({', '.join(prefixes)}); "
            "the operator's allow-list decides which packages may be imported"
        )
    module_name, _, attr = class_path.rpartition(".")
    if not module_name or attr.startswith("_"):
        raise SpecError(f"estimator class {class_path!r} is not a public class path")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"estimator class {class_path!r}: module {module_name!r} cannot be imported ({exc})") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise SpecError(f"estimator class {class_path!r}: {module_name} has no {attr!r}")
    if not inspect.isclass(obj):
        raise SpecError(f"{class_path!r} is not a class")
    if not any(obj.__module__.startswith(p) or obj.__module__ + "." == p for p in prefixes):
        raise SpecError(f"{class_path!r} is defined in {obj.__module__}, outside the allowed modules ({', '.join(prefixes)})")
    missing = [m for m in ("fit", "predict", "get_params") if not callable(getattr(obj, m, None))]
    if missing:
        raise SpecError(f"{class_path!r} is not an estimator: it has no {', '.join(missing)}")
    return obj


def make_estimator(cls: type, params: Mapping[str, Any], class_path: str) -> Any:
    """Instantiate with ``params``, each of which must be one of ``get_params()``."""
    try:
        defaults = cls().get_params(deep=False)
    except TypeError:
        # An estimator with required arguments: read them from the signature.
        sig = inspect.signature(cls.__init__)
        defaults = {n: None for n in sig.parameters if n != "self" and sig.parameters[n].kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise SpecError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {class_path}; valid: {', '.join(sorted(defaults))}"
        )
    try:
        est = cls(**dict(params))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{class_path} rejected the parameters: {exc}") from None
    # scikit-learn's own check; a BaseEstimator from another package declares no constraints to check.
    validate = getattr(est, "_validate_params", None)
    if callable(validate) and hasattr(est, "_parameter_constraints"):
        try:
            validate()
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{class_path}: {exc}") from None
    return est


def infer_task(estimator: Any, declared: Task | None, class_path: str) -> Task:
    """The task from the spec, checked against what the estimator is."""
    kind: Task | None = "classification" if is_classifier(estimator) else "regression" if is_regressor(estimator) else None
    if declared is None:
        if kind is None:
            raise SpecError(f"cannot tell whether {class_path} classifies or regresses; set spec.task")
        return kind
    if kind is not None and kind != declared:
        raise SpecError(f"spec.task is {declared} but {class_path} is a {'classifier' if kind == 'classification' else 'regressor'}")
    return declared


def build_pipeline(
    estimator: Any,
    features: Sequence[str],
    categorical: Sequence[str],
    preprocessing: Any,
) -> Pipeline:
    """The preprocessing ColumnTransformer (by position) in front of ``estimator``."""
    cat = set(categorical)
    num_idx = [i for i, f in enumerate(features) if f not in cat]
    cat_idx = [i for i, f in enumerate(features) if f in cat]
    transformers = []
    if num_idx:
        transformers.append(("numeric", _numeric_steps(preprocessing.numeric), num_idx))
    if cat_idx:
        transformers.append(("categorical", _categorical_steps(preprocessing.categorical), cat_idx))
    prepare = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("prepare", prepare), ("model", estimator)])


def _numeric_steps(spec: Any) -> Pipeline:
    steps: list[tuple[str, Any]] = []
    if spec.impute != "none":
        steps.append(("impute", SimpleImputer(strategy=spec.impute)))
    scaler = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}.get(spec.scale)
    if scaler is not None:
        steps.append(("scale", scaler()))
    if not steps:
        # Identity that still turns an object column into float64 (and keeps NaN).
        steps.append(("as_float", StandardScaler(with_mean=False, with_std=False)))
    return Pipeline(steps)


def _categorical_steps(spec: Any) -> Pipeline:
    steps: list[tuple[str, Any]] = []
    if spec.impute == "most_frequent":
        steps.append(("impute", SimpleImputer(strategy="most_frequent")))
    elif spec.impute == "constant":
        steps.append(("impute", SimpleImputer(strategy="constant", fill_value="missing")))
    if spec.encode == "onehot":
        steps.append(("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)))
    else:
        steps.append(
            ("encode", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1))
        )
    return Pipeline(steps)


def categories_of(pipeline: Pipeline, features: Sequence[str], categorical: Sequence[str]) -> dict[str, list[Any]]:
    """The levels each categorical feature's encoder learnt (missing left out)."""
    if not categorical:
        return {}
    encoder = pipeline.named_steps["prepare"].named_transformers_["categorical"].named_steps["encode"]
    cat = [f for f in features if f in set(categorical)]
    out = {}
    for name, levels in zip(cat, encoder.categories_):
        out[name] = [json_value(v) for v in levels if not (isinstance(v, float) and np.isnan(v))]
    return out


def json_value(v: Any) -> Any:
    """A numpy scalar as the plain Python value ``json.dumps`` writes (class labels, categories)."""
    return v.item() if isinstance(v, np.generic) else v
