"""``TrainingJob.spec.distributed``: train on a Dask cluster instead of in one pod.

Only estimators and preprocessing steps that have a real distributed form are
accepted; the rules name the refused field, so a spec that would silently
fall back to one machine's memory never starts.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import WithJsonSchema

from .base import ApiModel, Doc, Resources, Rule

XGBOOST_ESTIMATORS = ("xgboost.dask.DaskXGBClassifier", "xgboost.dask.DaskXGBRegressor")
"""Trained by xgboost's own Dask integration; stored as the equivalent in-memory XGBClassifier/XGBRegressor."""
DASK_ML_ESTIMATORS = ("dask_ml.linear_model.LogisticRegression", "dask_ml.linear_model.LinearRegression")
"""dask-ml's linear models (solved over the partitions); stored as scikit-learn's own class with the fitted coefficients."""
INCREMENTAL_ESTIMATORS = (
    "sklearn.linear_model.SGDClassifier",
    "sklearn.linear_model.SGDRegressor",
    "sklearn.linear_model.Perceptron",
    "sklearn.naive_bayes.GaussianNB",
    "sklearn.naive_bayes.MultinomialNB",
    "sklearn.naive_bayes.BernoulliNB",
    "sklearn.neural_network.MLPClassifier",
    "sklearn.neural_network.MLPRegressor",
)
"""scikit-learn estimators with ``partial_fit``: dask-ml's ``Incremental`` feeds them one partition at a time."""
DISTRIBUTED_ESTIMATORS = XGBOOST_ESTIMATORS + DASK_ML_ESTIMATORS + INCREMENTAL_ESTIMATORS

DISTRIBUTED_NUMERIC_IMPUTE = ("mean", "median", "most_frequent", "none")
DISTRIBUTED_NUMERIC_SCALE = ("standard", "minmax", "none")
"""``robust`` is missing on purpose: it needs exact quantiles of every column, which Dask only approximates."""


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


DISTRIBUTED_RULES: tuple[Rule, ...] = (
    Rule(
        cel=f"!has(self.distributed) || self.estimator.class in {_cel_list(DISTRIBUTED_ESTIMATORS)}",
        message="this estimator has no distributed form; with spec.distributed use one of "
        + ", ".join(DISTRIBUTED_ESTIMATORS),
        field=".estimator.class",
        check=lambda s: s.distributed is None or s.estimator.class_path in DISTRIBUTED_ESTIMATORS,
    ),
    Rule(
        cel=f"!has(self.distributed) || self.preprocessing.numeric.scale in {_cel_list(DISTRIBUTED_NUMERIC_SCALE)}",
        message="robust scaling has no distributed form (it needs exact quantiles of every column); "
        "with spec.distributed use standard, minmax or none",
        field=".preprocessing.numeric.scale",
        check=lambda s: s.distributed is None or s.preprocessing.numeric.scale in DISTRIBUTED_NUMERIC_SCALE,
    ),
)
"""Rules of TrainingJobSpec (they read the estimator and preprocessing next to ``distributed``)."""


class DaskResources(ApiModel):
    """The scheduler's container."""

    resources: Resources | None = Doc("CPU and memory of the Dask scheduler's container.", None)


class Distributed(ApiModel):
    """Where a distributed run's work happens: a Dask cluster of ``workers`` worker pods (or local processes)."""

    engine: Annotated[Literal["dask"], WithJsonSchema({"type": "string", "enum": ["dask"]})] = Doc("The distributed engine; only dask (through the Dask operator's DaskJob).", "dask")
    workers: int = Doc("Number of Dask workers (pods on a cluster, processes locally).", 2, ge=1, le=64)
    resources: Resources | None = Doc(
        "CPU and memory of each worker; its memory limit is also the worker's own memory bound "
        "(Dask spills and pauses below it).",
        None,
    )
    scheduler: DaskResources | None = Doc("The Dask scheduler's pod.", None)

    rules: ClassVar[tuple[Rule, ...]] = ()


def is_distributed(spec: Any) -> bool:
    """Whether a TrainingJob spec (model or wire dict) asks for a distributed run."""
    if isinstance(spec, dict):
        return bool(spec.get("distributed"))
    return getattr(spec, "distributed", None) is not None
