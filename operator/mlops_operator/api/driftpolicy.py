"""DriftPolicy: what "the model went bad" means, and what to do about it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from .base import DNS_LABEL, Name, DURATION, ApiModel, Condition, Doc, ObjectMeta, Rule, parse_duration

CheckType = Literal["dataDrift", "predictionDrift", "labelDrift", "multivariateDrift", "errorRate", "rmse", "psi"]


def _duration(description: str, default: str) -> object:
    return Doc(description, default, max_length=32, pattern=DURATION)


class Window(ApiModel):
    """The rows a check looks at: everything the model saw since the window began."""

    min_samples: int = Doc("Fewest rows for a verdict; below it the check says NotEnoughData, never 'no drift'.", 500, ge=30, le=10_000_000)
    max_age: str | None = Doc("Start a new window after this long (a duration such as 6h); never when left out.", None, max_length=32, pattern=DURATION)


class FeatureSetting(ApiModel):
    """How one feature is judged by a drift check: its own effect floor and weight."""

    feature: Name = Doc(
        "The feature ('prediction' for a predictionDrift check, 'label' for labelDrift, "
        "a projection 'a~b' for multivariateDrift)."
    )
    effect: float | None = Doc(
        "This feature's effect floor (Wasserstein/std or Jensen-Shannon distance, after the window-size correction); "
        "the check's numericEffect/categoricalEffect when left out.",
        None, ge=0, le=10,
    )
    weight: float | None = Doc(
        "Share of the error budget of the correction relative to other features (weighted Benjamini-Hochberg, "
        "p / weight with the weights normalised to mean 1): 2 tests this feature at twice the level, 0 never flags it. 1 when left out.",
        None, ge=0, le=100,
    )


class Check(ApiModel):
    """One test; any breached check counts as a breach of the policy."""

    type: CheckType = Doc(
        "dataDrift: per-feature KS / chi-square with a multiple-testing correction and an effect size; "
        "predictionDrift: the same on the predicted class / value distribution; "
        "labelDrift: the same on feedback labels against the training labels; "
        "multivariateDrift: the same on projections of pairs of numeric features (a change in how they move together), "
        "corrected across projections; errorRate / rmse: from ground-truth feedback; "
        "psi: Population Stability Index per feature."
    )
    sensitivity: Literal["strict", "default", "lenient"] = Doc(
        "Preset of q, the effect floors and unseenShare (drift checks): strict (q 0.05, floors 0.02, unseen 0.5 %), "
        "default (q 0.05, floors 0.04, unseen 1 %), lenient (q 0.01, floors 0.08, unseen 5 %). "
        "Fields set explicitly override it; measured false-alarm and detection rates are in docs/drift.md.",
        "default",
    )
    correction: Literal["bh", "bonferroni"] = Doc("Multiple-testing correction across features (drift checks).", "bh")
    q: float | None = Doc("False discovery rate (bh) or family-wise error rate (bonferroni); from sensitivity when left out.", None, gt=0, le=0.5)
    numeric_effect: float | None = Doc(
        "Smallest Wasserstein distance / reference std, beyond what unchanged data shows at the window's size, "
        "that counts as drift; from sensitivity when left out.",
        None, ge=0, le=10,
    )
    categorical_effect: float | None = Doc(
        "Smallest Jensen-Shannon distance, beyond what unchanged data shows at the window's size and level count, "
        "that counts as drift; from sensitivity when left out.",
        None, ge=0, le=1,
    )
    unseen_share: float | None = Doc(
        "Share of a window's rows in categories never seen in training that counts as drift on its own "
        "(and at least 5 rows); from sensitivity when left out.",
        None, ge=0, le=1,
    )
    per_feature: list[FeatureSetting] | None = Doc(
        "Effect floors and weights of single features (drift checks).",
        None,
        max_length=1000,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["feature"]},
    )
    threshold: float = Doc("PSI above which a feature breaches (psi checks; 0.1 moderate, 0.25 major).", 0.25, gt=0, le=10)
    maximum: float | None = Doc("Absolute limit of the error rate or RMSE.", None, ge=0)
    max_increase: float | None = Doc("Limit of the error rate or RMSE above its training baseline.", None, ge=0)
    features: list[Name] | None = Doc(
        "Features to test (multivariateDrift: the projections that involve one of them); all when left out.",
        None,
        max_length=1000,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!(self.type in ['errorRate', 'rmse']) || has(self.maximum) || has(self.maxIncrease)",
            message="errorRate and rmse checks need maximum or maxIncrease",
            field=".maximum",
            check=lambda c: c.type not in ("errorRate", "rmse") or c.maximum is not None or c.max_increase is not None,
        ),
        Rule(
            cel="self.type != 'errorRate' || !has(self.maximum) || self.maximum <= 1.0",
            message="an error rate maximum must lie in [0, 1]",
            field=".maximum",
            check=lambda c: c.type != "errorRate" or c.maximum is None or c.maximum <= 1.0,
        ),
    )


class Trigger(ApiModel):
    """When breaches turn into action."""

    consecutive: int = Doc("Breaching checks in a row before acting.", 2, ge=1, le=100)
    cooldown: str = _duration("Quiet time after a trigger.", "30m")
    max_retrains_per_day: int = Doc("Most retrains in any 24 hours.", 4, ge=0, le=96)


class Retrain(ApiModel):
    """The TrainingJob to clone when retraining."""

    from_: str = Field(alias="from", description="Name of the TrainingJob whose spec is cloned.", max_length=52, pattern=DNS_LABEL)
    include_feedback: bool = Doc("Add the labelled feedback rows to the training data.", True)


class Promotion(ApiModel):
    """How a retrained model replaces the serving one."""

    mode: Literal["auto", "manual"] = Doc(
        "auto: a passing retrain serves at once; manual: it waits for the annotation mlops.dev/approved=true on its TrainingJob.",
        "auto",
    )
    must_beat: Literal["current", "none"] = Doc("current: the retrain must score better than the serving version on the same rows.", "current")


CRON_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
"""The macros Kubernetes CronJobs accept, as the five fields they stand for."""
CRON = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^\s]+(\s+[^\s]+){4})$"
"""The shape the API server checks (a macro or five fields); the fields themselves are checked by :func:`cron_fields`."""


def cron_fields(expr: str) -> str:
    """The five fields of a cron expression (macros expanded); raises ValueError saying which field is wrong."""
    fields = CRON_MACROS.get(expr.strip(), expr.strip())
    if len(fields.split()) != 5:
        raise ValueError("must be five fields (minute hour day-of-month month day-of-week) or a macro such as @weekly")
    try:
        CronSim(fields, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise ValueError(f"{str(exc).lower() or 'invalid expression'} field") from None
    return fields


def _check_cron(expr: str) -> str:
    try:
        cron_fields(expr)
    except ValueError as exc:
        raise PydanticCustomError("cron", "{why} (got '{expr}')", {"why": str(exc), "expr": expr}) from None
    return expr


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError("zone", "unknown time zone '{name}': use an IANA name such as Europe/Berlin or UTC",
                                  {"name": name}) from None
    return name


class Schedule(ApiModel):
    """Retrain at fixed times, in addition to the drift checks (the same cooldown, one-active and daily limits)."""

    cron: Annotated[str, AfterValidator(_check_cron)] = Doc(
        "When to retrain: five cron fields (minute hour day-of-month month day-of-week), e.g. '0 3 * * 1' "
        "for Mondays at 03:00, or a macro (@daily, @weekly, @monthly, ...). Times the operator was down for "
        "run once when it is back, not once each.",
        max_length=128, json_schema_extra={"pattern": CRON},
    )
    time_zone: Annotated[str, AfterValidator(_check_zone)] = Doc(
        "IANA time zone the cron fields are read in (Europe/Berlin, America/New_York). A time that daylight "
        "saving skips runs at the first minute after the gap; a time it repeats runs once.",
        "UTC", max_length=64,
    )


class DriftPolicySpec(ApiModel):
    """Watch a ModelDeployment and act when it drifts."""

    deployment: str = Doc("Name of the ModelDeployment to watch, in the same namespace.", max_length=63, pattern=DNS_LABEL)
    interval: str = _duration("Time between checks (at least 5s).", "60s")
    window: Window = Doc("The rows a check looks at.", default_factory=Window)
    checks: list[Check] = Doc(
        "The tests; any breach counts. One per type.",
        default_factory=lambda: [Check(type="dataDrift")],
        min_length=1,
        max_length=7,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "default": [{"type": "dataDrift"}],
        },
    )
    trigger: Trigger = Doc("When breaches turn into action.", default_factory=Trigger)
    action: Literal["retrain", "alert"] = Doc("retrain: start a retraining TrainingJob; alert: report only.", "retrain")
    retrain: Retrain | None = Doc("What to retrain (needed when action is retrain).", None)
    promotion: Promotion = Doc("How the retrained model takes over.", default_factory=Promotion)
    schedule: Schedule | None = Doc("Retrain at fixed times too (e.g. weekly on the latest data and feedback).", None)

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.action != 'retrain' || has(self.retrain)",
            message="action retrain needs spec.retrain.from",
            field=".retrain",
            check=lambda s: s.action != "retrain" or s.retrain is not None,
        ),
        Rule(
            cel="!has(self.schedule) || self.action == 'retrain'",
            message="a schedule retrains: it needs action retrain",
            field=".schedule",
            check=lambda s: s.schedule is None or s.action == "retrain",
        ),
        Rule(
            cel="duration(self.interval) >= duration('5s')",
            message="interval must be at least 5s",
            field=".interval",
            check=lambda s: parse_duration(s.interval) >= 5,
        ),
        Rule(
            cel="self.checks.all(c, self.checks.exists_one(d, d.type == c.type))",
            message="at most one check per type",
            field=".checks",
            check=lambda s: len({c.type for c in s.checks}) == len(s.checks),
        ),
    )


class FeatureScore(ApiModel):
    check: str = Doc("The check that scored it.")
    feature: str = Doc("Feature, 'prediction', 'label' or a projection 'a~b'.")
    statistic: float | None = Doc("KS statistic, chi-square or PSI.", None)
    p_value: float | None = Doc("Corrected (and weighted) p-value.", None)
    raw_p_value: float | None = Doc("The test's own p-value, before the correction across features.", None)
    effect: float | None = Doc("Effect beyond what unchanged data shows at this window size: what is compared with floor.", None)
    raw_effect: float | None = Doc("Wasserstein/std or Jensen-Shannon distance as measured, before that correction.", None)
    floor: float | None = Doc("The effect floor this feature was held to.", None)
    weight: float | None = Doc("The feature's weight in the correction (normalised to mean 1).", None)
    unseen_share: float | None = Doc("Share of rows in categories never seen in training.", None)
    psi: float | None = Doc("Population Stability Index.", None)
    importance: float | None = Doc(
        "The feature's permutation importance to the serving version (from its training run): a drifted feature "
        "the model hardly uses matters less than one it leans on.", None)
    drifted: bool = Doc("Whether it breached.", False)
    reason: str | None = Doc(
        "Why: drift (significant and effect >= floor), unseenLevels, notSignificant, belowFloor, psi, belowPsi, excluded (weight 0).",
        None,
    )


class RetrainRecord(ApiModel):
    name: str = Doc("The retraining TrainingJob.")
    trigger: str | None = Doc("What started it: 'schedule', or the drift checks that breached (dataDrift, errorRate, ...).", None)
    reason: str = Doc("What breached, or which scheduled time it ran for.", "")
    time: str | None = Doc("When it was created.", None, json_schema_extra={"format": "date-time"})
    result: str | None = Doc("Running, Succeeded, GateFailed, Failed.", None)
    promoted: bool = Doc("Whether it became the serving version.", False)


class ScheduleStatus(ApiModel):
    cron: str | None = Doc("The schedule the times below belong to (a changed schedule starts afresh).", None)
    time_zone: str | None = Doc("Its time zone.", None)
    last_schedule_time: str | None = Doc(
        "The last scheduled time acted on (retrain started or skipped); the next is computed from it, so "
        "times missed while the operator was down run once.", None, json_schema_extra={"format": "date-time"})
    next_schedule_time: str | None = Doc("The next scheduled retrain.", None, json_schema_extra={"format": "date-time"})
    last_result: str | None = Doc("What happened at the last scheduled time: the retrain started, or why it was skipped.", None)


class DriftPolicyStatus(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    observed_generation: int | None = Doc("The .metadata.generation this status describes.", None)
    last_check: str | None = Doc("When the last check ran.", None, json_schema_extra={"format": "date-time"})
    verdict: Literal["Drift", "NoDrift", "NotEnoughData", "Unavailable"] | None = Doc("Outcome of the last check.", None)
    samples: int | None = Doc("Rows in the current window.", None)
    score: float | None = Doc("Largest effect size in the last check.", None)
    scores: list[FeatureScore] | None = Doc("Per check and feature, most drifted first.", None, max_length=100)
    consecutive_breaches: int | None = Doc("Breaching checks in a row.", None)
    last_triggered: str | None = Doc("When the last retrain was started.", None, json_schema_extra={"format": "date-time"})
    active_retrain: str | None = Doc("The retraining TrainingJob still running.", None)
    retrain_count: int | None = Doc("Retrains started by this policy.", None)
    retrains: list[RetrainRecord] | None = Doc("The last retrains, newest first.", None, max_length=20)
    schedule: ScheduleStatus | None = Doc("Where spec.schedule stands: its last and next scheduled times.", None)
    conditions: list[Condition] | None = Doc(
        "Ready, Drifting, Retraining, SensorsReadable, Reconciling, Stalled.",
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class DriftPolicy(ApiModel):
    """A DriftPolicy manifest."""

    model_config = ApiModel.model_config | {"alias_generator": None}

    apiVersion: Literal["mlops.dev/v1alpha1"]
    kind: Literal["DriftPolicy"]
    metadata: ObjectMeta
    spec: DriftPolicySpec
    status: DriftPolicyStatus | None = None
