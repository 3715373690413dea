"""MLflow tracking, the pure part: the trainer's credentials, the ``Tracked`` condition, the champion alias.

The trainer logs each run and registers each passing version itself (it has
the artifact and the Secret); its summary says how that went, and
:func:`record_tracking` turns that into the TrainingJob's status.  When a
ModelDeployment has rolled a version out, :func:`champion_move` says which
MLflow alias to move where; the reconcile loop makes the call through the
injected :data:`AliasMover` (``k8s/`` and ``local/`` bind it to their way of
finding credentials) and :func:`champion_condition` records the outcome.
MLflow being down never fails a run nor holds a rollout: it is a condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Awaitable, Callable

from .cluster import Obj
from .conditions import get_condition, set_condition
from .decision import Event

TRACKED = "Tracked"
"""Condition type: on a TrainingJob, whether MLflow got the run; on a ModelDeployment, the champion alias."""
CHAMPION = "champion"
CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
RETRY_SECONDS = 60.0
"""How soon to try an alias move again after MLflow refused or could not be reached."""


def mlflow_spec(spec: Obj | None) -> Obj | None:
    """``spec.tracking.mlflow`` of a TrainingJob spec (wire form), or None."""
    return ((spec or {}).get("tracking") or {}).get("mlflow") or None


def trainer_env(spec: Obj) -> list[Obj]:
    """The Secret's MLflow keys as the trainer's environment, by reference (each optional: a token alone
    is enough, and a missing Secret makes an unauthenticated attempt the Tracked condition reports)."""
    secret = (mlflow_spec(spec) or {}).get("credentialsSecret")
    if not secret:
        return []
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
            for key in CREDENTIAL_KEYS]


def record_tracking(status: Obj, spec: Obj, summary: Obj | None, now: datetime, generation: int | None) -> Obj:
    """``status.tracking`` and the ``Tracked`` condition from the trainer's summary (status unchanged without tracking)."""
    if mlflow_spec(spec) is None:
        return status
    report = ((summary or {}).get("tracking") or {}).get("mlflow")
    conds = status.get("conditions")
    if not isinstance(report, dict):
        msg = "the trainer's summary says nothing about MLflow; the run may not be logged there"
        status["conditions"] = set_condition(conds, TRACKED, "Unknown", "NoReport", msg, now, generation)
        return status
    if not report.get("logged"):
        reason = str(report.get("reason") or "NotLogged")
        msg = f"not logged to MLflow: {report.get('message') or reason}; the run itself is unaffected"
        status["conditions"] = set_condition(conds, TRACKED, False, reason, msg, now, generation)
        status.pop("tracking", None)
        return status
    run = {k: str(report[k]) for k in ("experimentId", "runId", "registeredModel", "registeredVersion") if report.get(k)}
    status["tracking"] = {"mlflow": run}
    msg = f"MLflow run {run.get('runId')} in experiment {run.get('experimentId')}"
    if run.get("registeredVersion"):
        msg += f"; registered as {run.get('registeredModel')} version {run['registeredVersion']} (alias challenger)"
    if report.get("message"):
        msg += f"; {report['message']}"
    status["conditions"] = set_condition(conds, TRACKED, True, "Logged", msg, now, generation)
    return status


# -- the champion alias ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AliasMove:
    """Point ``alias`` of ``registered_model`` at ``registered_version`` on the server of ``tracking_uri``."""

    tracking_uri: str
    credentials_secret: str | None
    registered_model: str
    registered_version: str
    version: str
    """The operator's version behind it (for messages)."""
    alias: str = CHAMPION

    def message(self) -> str:
        return (f"MLflow alias {self.alias} of {self.registered_model} points at version {self.registered_version} "
                f"({self.version})")


AliasMover = Callable[[str, AliasMove], Awaitable[tuple[str, str] | None]]
"""``(namespace, move) -> None`` when done, else ``(reason, message)``: the I/O the reconcile loop is given."""


def champion_move(md_status: Obj, training_jobs: list[Obj]) -> AliasMove | None:
    """The alias move a ModelDeployment's new status asks for, or None (nothing serves, no MLflow, already done).

    Due once the version serves (Ready); done when the ``Tracked`` condition
    already says so for that very version.  A version that was not registered
    at training time has nothing to point at: None too (its TrainingJob's
    Tracked condition says why).
    """
    ready = get_condition(md_status.get("conditions"), "Ready") or {}
    version = md_status.get("modelVersion")
    if ready.get("status") != "True" or not version:
        return None
    tj = next((t for t in training_jobs if (t.get("status") or {}).get("modelVersion") == version), None)
    mlflow = mlflow_spec((tj or {}).get("spec"))
    registered = (((tj or {}).get("status") or {}).get("tracking") or {}).get("mlflow") or {}
    if mlflow is None or mlflow.get("registerModel") is False or not registered.get("registeredVersion"):
        return None
    move = AliasMove(mlflow["trackingUri"], mlflow.get("credentialsSecret"), str(registered.get("registeredModel")),
                     str(registered["registeredVersion"]), version)
    done = get_condition(md_status.get("conditions"), TRACKED) or {}
    if done.get("status") == "True" and done.get("message") == move.message():
        return None
    return move


def champion_condition(status: Obj, move: AliasMove, problem: tuple[str, str] | None, now: datetime,
                       generation: int | None) -> list[Event]:
    """Set the ModelDeployment's ``Tracked`` condition after an alias move (the serving itself is unaffected);
    the event to post when that is news."""
    before = get_condition(status.get("conditions"), TRACKED) or {}
    if problem is None:
        status["conditions"] = set_condition(status.get("conditions"), TRACKED, True, "ChampionMoved", move.message(),
                                             now, generation)
    else:
        reason, detail = problem
        msg = (f"MLflow alias {move.alias} of {move.registered_model} not moved to version {move.registered_version} "
               f"({move.version}): {detail}; trying again in {RETRY_SECONDS:.0f}s")
        status["conditions"] = set_condition(status.get("conditions"), TRACKED, False, reason, msg, now, generation)
    after = get_condition(status["conditions"], TRACKED) or {}
    if (before.get("status"), before.get("reason"), before.get("message")) == (after["status"], after["reason"], after["message"]):
        return []
    return [Event("Normal" if problem is None else "Warning", after["reason"], after["message"])]


def tracking_events(status: Obj) -> list[Event]:
    """A Warning when a finished run was not (or maybe not) logged: said once, with the run's outcome."""
    tracked = get_condition(status.get("conditions"), TRACKED)
    if tracked is None or tracked["status"] == "True":
        return []
    return [Event("Warning", "NotTracked", tracked["message"])]
