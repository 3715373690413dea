"""TrainingJob: one training run, data → preprocessing → estimator → evaluation → gate → artifact."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import math

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from .base import DNS_LABEL, Name, ApiModel, Condition, Doc, ObjectMeta, Resources, Rule
from .tracking import Tracking, TrackingStatus
from .distributed import DISTRIBUTED_RULES, Distributed

Task = Literal["classification", "regression"]

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
UNIT_INTERVAL_METRICS = frozenset({"accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr"})
Metric = Literal["accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "log_loss", "rmse", "mae", "r2"]

# s3://: a bucket name by S3's rules (3-63 lower-case letters, digits, '.' and '-'), then a key.
SOURCE_PATTERN = (r"^(sklearn://[a-z_0-9]+|file:///.+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+"
                  r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|https://.+)$")


def metric_task(metric: str) -> Task:
    return "classification" if metric in CLASSIFICATION_METRICS else "regression"


class Validation(ApiModel):
    """How the held-out evaluation rows are drawn."""

    fraction: float = Doc("Share of rows held out for evaluation.", 0.2, ge=0.05, le=0.5)
    stratify: bool = Doc("Keep class proportions in the split (classification only).", True)
    seed: int = Doc("Seed of the split, so a run is reproducible.", 0, ge=0, le=2**31 - 1)


class Data(ApiModel):
    """Where the rows come from and which columns matter."""

    source: str = Doc(
        "sklearn://<dataset> (iris, wine, breast_cancer, digits, diabetes, ...), "
        "file:///path, pvc://<claim>/<path>, s3://<bucket>/<key> (the store's endpoint and credentials) "
        "or https://... to a CSV or Parquet file.",
        max_length=2048,
        pattern=SOURCE_PATTERN,
    )
    target: str = Doc("Column to predict. For sklearn:// data sets it names the target.", "target", min_length=1, max_length=253)
    features: list[Name] | None = Doc(
        "Columns to train on; all but the target when left out.",
        None,
        max_length=1000,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    categorical: list[Name] | None = Doc(
        "Columns to treat as categories; detected from the data types when left out.",
        None,
        max_length=1000,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    validation: Validation = Doc("The held-out split used for metrics and the gate.", default_factory=Validation)
    include_feedback: bool = Doc(
        "Append the labelled rows the model server collected for this model (DriftPolicy retrains set it).", False
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.features) || !(self.target in self.features)",
            message="the target column must not also be a feature",
            field=".features",
            check=lambda d: not d.features or d.target not in d.features,
        ),
    )


class NumericPreprocessing(ApiModel):
    """Steps applied to numeric columns."""

    impute: Literal["median", "mean", "most_frequent", "none"] = Doc("How missing values are filled.", "median")
    scale: Literal["standard", "minmax", "robust", "none"] = Doc("How values are scaled.", "standard")


class CategoricalPreprocessing(ApiModel):
    """Steps applied to categorical columns."""

    impute: Literal["most_frequent", "constant", "none"] = Doc("How missing values are filled.", "most_frequent")
    encode: Literal["onehot", "ordinal"] = Doc("How categories become numbers; unseen ones are ignored.", "onehot")


class Preprocessing(ApiModel):
    """The ColumnTransformer in front of the estimator."""

    numeric: NumericPreprocessing = Doc("Numeric columns.", default_factory=NumericPreprocessing)
    categorical: CategoricalPreprocessing = Doc("Categorical columns.", default_factory=CategoricalPreprocessing)


class Estimator(ApiModel):
    """The scikit-learn estimator to fit."""

    class_path: str = Field(
        alias="class",
        description="Import path of the estimator class, inside the operator's allow-list (scikit-learn by default).",
        max_length=256,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$",
    )
    params: dict[str, Any] = Doc(
        "Constructor parameters; each must be one of the estimator's get_params().",
        default_factory=dict,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class QualityGate(ApiModel):
    """The bar a run must clear before its model may serve."""

    metric: Metric = Doc("Metric on the held-out rows that decides.")
    minimum: float | None = Doc("Fail below this (for metrics where higher is better).", None)
    maximum: float | None = Doc("Fail above this (for metrics where lower is better).", None)
    must_beat: Literal["none", "current"] = Doc(
        "current: also score the serving version on the same held-out rows and fail unless this run is better.",
        "none",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.minimum) || has(self.maximum) || self.mustBeat != 'none'",
            message="a quality gate needs minimum, maximum or mustBeat",
            check=lambda g: g.minimum is not None or g.maximum is not None or g.must_beat != "none",
        ),
        Rule(
            cel="!has(self.minimum) || !(self.metric in ['log_loss', 'rmse', 'mae'])",
            message="lower is better for this metric: use maximum, not minimum",
            field=".minimum",
            check=lambda g: g.minimum is None or g.metric not in LOWER_IS_BETTER,
        ),
        Rule(
            cel="!has(self.maximum) || self.metric in ['log_loss', 'rmse', 'mae']",
            message="higher is better for this metric: use minimum, not maximum",
            field=".maximum",
            check=lambda g: g.maximum is None or g.metric in LOWER_IS_BETTER,
        ),
        Rule(
            cel="!has(self.minimum) || !(self.metric in ['accuracy', 'balanced_accuracy', 'f1_macro', 'roc_auc_ovr'])"
            " || (self.minimum >= 0.0 && self.minimum <= 1.0)",
            message="minimum must lie in [0, 1] for this metric",
            field=".minimum",
            check=lambda g: g.minimum is None or g.metric not in UNIT_INTERVAL_METRICS or 0.0 <= g.minimum <= 1.0,
        ),
        Rule(
            cel="!has(self.maximum) || self.maximum >= 0.0",
            message="maximum must not be negative",
            field=".maximum",
            check=lambda g: g.maximum is None or g.maximum >= 0.0,
        ),
    )


RANGE_KINDS = ("uniform", "loguniform", "int")
"""Ranges a random or halving search samples from (a grid takes lists only)."""


def _space_error(name: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("space", message, {"field": f".{name}"})


def _check_space(space: dict[str, Any]) -> dict[str, Any]:
    """Each parameter: a non-empty list of values, or one range ``{uniform|loguniform|int: [low, high]}``."""
    if not space:
        raise PydanticCustomError("space", "the search space needs at least one parameter")
    for name, values in space.items():
        if not isinstance(name, str) or not name or "__" in name:
            raise _space_error(str(name), "a parameter name of the estimator (no '__': the space tunes the estimator itself)")
        if isinstance(values, list):
            if not values or len(values) > 1000:
                raise _space_error(name, "a list of 1 to 1000 values")
            continue
        if not isinstance(values, dict) or len(values) != 1 or next(iter(values)) not in RANGE_KINDS:
            raise _space_error(name, "a list of values, or one range: {uniform: [low, high]}, {loguniform: [low, high]} or {int: [low, high]}")
        kind, bounds = next(iter(values.items()))
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)):
            raise _space_error(name, f"{kind} needs [low, high], two finite numbers")
        low, high = bounds
        if not low < high:
            raise _space_error(name, f"{kind}: low must be below high (got [{low}, {high}])")
        if kind == "loguniform" and low <= 0:
            raise _space_error(name, f"loguniform: low must be above 0 (got {low})")
        if kind == "int" and not all(float(b).is_integer() for b in bounds):
            raise _space_error(name, f"int: the bounds must be whole numbers (got [{low}, {high}])")
    return space


class Budget(ApiModel):
    """How much searching a run may do: candidates, seconds, or both (whichever ends first)."""

    candidates: int | None = Doc(
        "Most parameter combinations tried (random: how many are sampled; grid: a larger grid is refused; "
        "halving: how many start the first round). 20 for random and halving when left out.",
        None, ge=1, le=10_000,
    )
    seconds: float | None = Doc(
        "Wall time for the search (grid and random): candidates are evaluated in batches, and no new batch "
        "starts once this is spent. The best so far is refitted.",
        None, gt=0, le=7 * 24 * 3600,
    )


class Tuning(ApiModel):
    """A hyperparameter search around the estimator, scored by cross-validation on the training rows."""

    strategy: Literal["grid", "random", "halving"] = Doc(
        "grid: every combination (GridSearchCV); random: sampled combinations (RandomizedSearchCV); "
        "halving: successive halving of sampled combinations over growing shares of the rows (HalvingRandomSearchCV)."
    )
    space: Annotated[dict[str, Any], AfterValidator(_check_space)] = Doc(
        "Estimator parameter -> a list of values, or (random, halving) a range {uniform: [low, high]}, "
        "{loguniform: [low, high]} or {int: [low, high]}. Each name must be a parameter of the estimator; "
        "spec.estimator.params gives the rest.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    cv: int = Doc("Cross-validation folds on the training rows (stratified for classification).", 5, ge=2, le=20)
    budget: Budget = Doc("How much searching the run may do.", default_factory=Budget)
    scoring: Metric | None = Doc(
        "Metric the candidates are ranked by; the quality gate's metric when left out (else accuracy or rmse), "
        "so the search optimises what the gate judges.", None,
    )
    n_jobs: int | None = Doc("Candidates fitted in parallel; the CPUs the pod may use when left out.", None, ge=1, le=256)
    seed: int = Doc("Seed of the sampling and the folds, so a search is reproducible.", 0, ge=0, le=2**31 - 1)
    top: int = Doc("Best candidates listed in status (the whole table goes to the version's metadata.json).", 5, ge=1, le=20)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.strategy != 'halving' || !has(self.budget.seconds)",
            message="a halving search is bounded by budget.candidates, not seconds",
            field=".budget.seconds",
            check=lambda t: t.strategy != "halving" or t.budget.seconds is None,
        ),
    )


    @model_validator(mode="after")
    def _grid_takes_lists(self) -> "Tuning":
        # Python only: CEL cannot look inside a field that keeps unknown fields (the space's values are free-form).
        ranged = sorted(k for k, v in self.space.items() if not isinstance(v, list))
        if self.strategy == "grid" and ranged:
            raise PydanticCustomError("space", "a grid search takes lists of values; ranges need strategy random or halving",
                                      {"field": f".space.{ranged[0]}"})
        return self


class TrainingJobSpec(ApiModel):
    """What to train, on what, and how good it must be."""

    model: str = Doc(
        "The model lineage; versions of one model share it and a ModelDeployment selects by it.",
        max_length=63,
        pattern=DNS_LABEL,
        json_schema_extra={"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "model is immutable"}]},
    )
    task: Task | None = Doc("classification or regression; inferred from the estimator when left out.", None)
    data: Data = Doc("The training data.")
    preprocessing: Preprocessing = Doc("Imputation, scaling and encoding before the estimator.", default_factory=Preprocessing)
    estimator: Estimator = Doc("The scikit-learn estimator.")
    quality_gate: QualityGate | None = Doc("Fail the run when the model misses this bar.", None)
    tuning: Tuning | None = Doc("Search the estimator's parameters first; the best candidate is refitted, gated and stored.", None)
    resources: Resources | None = Doc("CPU and memory of the training container.", None)
    tracking: Tracking | None = Doc("Where else each run is recorded (MLflow).", None)
    backoff_limit: int = Doc("Retries of the training pod before the run fails.", 1, ge=0, le=10)
    active_deadline_seconds: int = Doc("Wall-clock limit of the run.", 3600, ge=10, le=7 * 24 * 3600)
    ttl_seconds_after_finished: int = Doc("How long the finished Job is kept.", 86400, ge=0, le=30 * 24 * 3600)
    distributed: Distributed | None = Doc("Train on a Dask cluster (a DaskJob) instead of in one pod.", None)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.task) || !has(self.qualityGate) || "
            "(self.task == 'classification') == (self.qualityGate.metric in "
            "['accuracy', 'balanced_accuracy', 'f1_macro', 'roc_auc_ovr', 'log_loss'])",
            message="the gate's metric does not fit the task",
            field=".qualityGate.metric",
            check=lambda s: s.task is None or s.quality_gate is None or metric_task(s.quality_gate.metric) == s.task,
        ),
        Rule(
            cel="!has(self.tuning) || !has(self.tuning.scoring) || !has(self.qualityGate) || "
            "self.tuning.scoring == self.qualityGate.metric",
            message="the search must rank candidates by the metric the gate judges: leave scoring out or set it to qualityGate.metric",
            field=".tuning.scoring",
            check=lambda s: s.tuning is None or s.tuning.scoring is None or s.quality_gate is None
            or s.tuning.scoring == s.quality_gate.metric,
        ),
        Rule(
            cel="!has(self.tuning) || !has(self.distributed)",
            message="a parameter search does not run on Dask workers yet: drop spec.tuning or spec.distributed",
            field=".tuning",
            check=lambda s: s.tuning is None or s.distributed is None,
        ),
        *DISTRIBUTED_RULES,
    )


class Artifact(ApiModel):
    uri: str | None = Doc("Where the version is stored.", None)
    sha256: str | None = Doc("Digest of model.skops; the server refuses any other.", None)


class GateResult(ApiModel):
    result: Literal["Passed", "Failed", "Skipped"] | None = Doc("Outcome of the quality gate.", None)
    metric: str | None = Doc("The deciding metric.", None)
    value: float | None = Doc("This run's score on the held-out rows.", None)
    bound: float | None = Doc("The gate's minimum or maximum.", None)
    champion_version: str | None = Doc("The serving version this run had to beat.", None)
    champion_value: float | None = Doc("The champion's score on the same rows.", None)
    reason: str | None = Doc("Why the gate failed.", None)


class Lineage(ApiModel):
    data_digest: str | None = Doc("sha256 of the training rows.", None)
    image: str | None = Doc("Image that trained the model.", None)
    parent: str | None = Doc("Version this run was retrained from.", None)
    triggered_by: str | None = Doc("DriftPolicy that asked for this run.", None)
    trigger: str | None = Doc("What made the policy retrain: 'schedule', or the drift checks that breached.", None)
    scikit_learn: str | None = Doc("scikit-learn version that trained the model; serving on another one is reported.", None)
    inference: str | None = Doc(
        "What serves the version: onnx (its compiled model verified at training) or skops "
        "(metadata.json's compiled.reason says why).",
        None,
    )


class Candidate(ApiModel):
    params: dict[str, Any] = Doc("The candidate's parameters.", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    score: float | None = Doc("Mean cross-validated score, in the metric's own units (rmse as rmse).", None)
    std: float | None = Doc("Its standard deviation over the folds.", None)


class TuningResult(ApiModel):
    strategy: str | None = Doc("grid, random or halving.", None)
    scoring: str | None = Doc("The metric candidates were ranked by.", None)
    best_params: dict[str, Any] | None = Doc("The winner's parameters (refitted on all training rows).", None,
                                             json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    best_score: float | None = Doc("The winner's mean cross-validated score.", None)
    default_score: float | None = Doc("spec.estimator.params' own cross-validated score on the same folds.", None)
    candidates: int | None = Doc("Candidates evaluated.", None)
    seconds: float | None = Doc("Wall time of the search.", None)
    n_jobs: int | None = Doc("Candidates fitted in parallel.", None)
    stopped: str | None = Doc("Why the search ended early (the time budget), if it did.", None)
    top: list[Candidate] | None = Doc("The best few, best first (all of them in metadata.json).", None, max_length=20)


class FeatureImportance(ApiModel):
    feature: str = Doc("Input column.")
    importance: float = Doc("Mean drop of the gate's metric when the column is shuffled on the held-out rows.")
    std: float | None = Doc("Its standard deviation over the repeats.", None)


class TrainingJobStatus(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    observed_generation: int | None = Doc("The .metadata.generation this status describes.", None)
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = Doc("Where the run is.", None)
    job_name: str | None = Doc("The batch/v1 Job running this generation.", None)
    model_version: str | None = Doc("The version this run produces.", None)
    artifact: Artifact | None = Doc("The stored model.", None)
    metrics: dict[str, float] | None = Doc("Metrics on the held-out rows.", None)
    gate: GateResult | None = Doc("The quality gate's verdict.", None)
    lineage: Lineage | None = Doc("Where the model came from.", None)
    tracking: TrackingStatus | None = Doc("Where the run was recorded besides the store.", None)
    tuning: TuningResult | None = Doc("The parameter search (spec.tuning): the winner, its score, the best few.", None)
    importance: list[FeatureImportance] | None = Doc(
        "Permutation importance on the held-out rows, most important first (the top 5; all in metadata.json).", None, max_length=20)
    start_time: str | None = Doc("When the run started.", None, json_schema_extra={"format": "date-time"})
    completion_time: str | None = Doc("When the run ended.", None, json_schema_extra={"format": "date-time"})
    conditions: list[Condition] | None = Doc(
        "Ready, Reconciling, Stalled, Succeeded, Failed, Tracked (with spec.tracking).",
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class TrainingJob(ApiModel):
    """A TrainingJob manifest."""

    model_config = ApiModel.model_config | {"alias_generator": None}

    apiVersion: Literal["mlops.dev/v1alpha1"]
    kind: Literal["TrainingJob"]
    metadata: ObjectMeta
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None
