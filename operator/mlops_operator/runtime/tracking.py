"""MLflow tracking and registry over its REST API: the trainer's run log and the operator's alias moves.

Why REST and not the ``mlflow`` client: ``mlflow-skinny`` would add 26
distributions and about 80 MiB to the image (and ~1.7 s to import) for
a dozen JSON calls; the standard library does them.  The calls are MLflow's
documented REST API (``/api/2.0/mlflow/...``), artifacts go through the
tracking server's artifact proxy (``mlflow-artifacts:``, the server's default).

What a run records: the version's params, held-out metrics, lineage tags, the
artifact (``model.skops`` and ``metadata.json`` under ``model/``); a version
that passed its gate is registered under the model's name with the alias
``challenger``.  The operator's own store stays the source of truth: every
failure here is caught and reported (:class:`TrackingError` with a reason),
never raised into the run.  Credentials come from ``MLFLOW_TRACKING_USERNAME``
/ ``MLFLOW_TRACKING_PASSWORD`` or ``MLFLOW_TRACKING_TOKEN`` (a pod gets them
from a Secret); they go into request headers only, never into a log line, an
error message or the summary.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CREDENTIAL_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
"""The environment variables (and Secret keys) MLflow's own client reads; the same names here."""
REQUEST_TIMEOUT_SECONDS = 10.0
BUDGET_SECONDS = 60.0
"""All of a run's tracking calls together: a slow or silent server delays the run at most this long."""
MAX_PARAM_CHARS = 6000
"""MLflow's limit on a param value."""
MAX_TAG_CHARS = 5000
MAX_ERROR_CHARS = 300
CHALLENGER, CHAMPION = "challenger", "champion"
ARTIFACT_DIR = "model"

Log = Callable[..., None]


class TrackingError(Exception):
    """Why MLflow did not get (all of) a run: ``reason`` is one CamelCase word for a condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TrackedRun:
    """Where a run went in MLflow."""

    experiment_id: str
    run_id: str
    registered_model: str | None = None
    registered_version: str | None = None
    artifacts: bool = True
    """False when the run's artifact location is not served by the tracking server (nothing uploaded)."""

    def to_summary(self) -> dict[str, Any]:
        out = {"logged": True, "experimentId": self.experiment_id, "runId": self.run_id,
               "registeredModel": self.registered_model, "registeredVersion": self.registered_version}
        if not self.artifacts:
            out["message"] = "artifacts not uploaded: the run's artifact location is not served by the tracking server"
        return {k: v for k, v in out.items() if v is not None}


def credentials_from(env: Mapping[str, str]) -> dict[str, str]:
    """The MLflow credentials in an environment (or a Secret's data), nothing else."""
    return {k: env[k] for k in CREDENTIAL_KEYS if env.get(k)}


class MlflowClient:
    """The few MLflow REST calls the operator needs, each bounded in time."""

    def __init__(self, tracking_uri: str, credentials: Mapping[str, str] | None = None, *,
                 budget_seconds: float = BUDGET_SECONDS, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.base = tracking_uri.rstrip("/")
        self._headers = _auth_headers(credentials or {})
        self._deadline = time.monotonic() + budget_seconds
        self._timeout = timeout

    # -- transport ---------------------------------------------------------------------------------------

    def call(self, method: str, endpoint: str, body: Any = None, *, query: Mapping[str, str] | None = None,
             data: bytes | None = None, raw_path: str | None = None) -> dict[str, Any]:
        """One request; a JSON answer, or TrackingError (reason, message: never a header or a credential)."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TrackingError("Timeout", f"MLflow at {self.base} took longer than {BUDGET_SECONDS:.0f}s in all")
        url = self.base + (raw_path or f"/api/2.0/mlflow/{endpoint}")
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = dict(self._headers)
        if data is None and body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=min(self._timeout, remaining)) as response:  # noqa: S310 - http(s) only (API validation)
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(self.base, endpoint or raw_path or "", exc) from None
        except (urllib.error.URLError, OSError) as exc:
            cause = getattr(exc, "reason", exc)
            if isinstance(cause, TimeoutError):
                raise TrackingError("Timeout", f"MLflow at {self.base} did not answer {endpoint or raw_path} in time") from None
            raise TrackingError("Unreachable", f"MLflow at {self.base} is unreachable: {cause}"[:MAX_ERROR_CHARS]) from None
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            raise TrackingError("BadResponse", f"MLflow at {self.base} answered {endpoint} with something not JSON") from None

    # -- experiments, runs ----------------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        """The id of the experiment called ``name``, created when missing."""
        try:
            found = self.call("GET", "experiments/get-by-name", query={"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except TrackingError as exc:
            if exc.reason != "NotFound":
                raise
        try:
            return str(self.call("POST", "experiments/create", {"name": name})["experiment_id"])
        except TrackingError as exc:
            if exc.reason != "AlreadyExists":  # created meanwhile by another run
                raise
            return str(self.call("GET", "experiments/get-by-name", query={"experiment_name": name})["experiment"]["experiment_id"])

    def find_run(self, experiment_id: str, tags: Mapping[str, str]) -> dict[str, Any] | None:
        """A finished run carrying all these tags (a retried pod finds its first attempt's run)."""
        clauses = " and ".join(f"tags.`{k}` = '{_quote(v)}'" for k, v in tags.items())
        found = self.call("POST", "runs/search", {"experiment_ids": [experiment_id], "filter": clauses,
                                                  "run_view_type": "ACTIVE_ONLY", "max_results": 10})
        for run in found.get("runs") or []:
            if run.get("info", {}).get("status") == "FINISHED":
                return run
        return None

    def create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> dict[str, Any]:
        body = {"experiment_id": experiment_id, "run_name": run_name, "start_time": _millis(),
                "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        return self.call("POST", "runs/create", body)["run"]

    def log_batch(self, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float]) -> None:
        now = _millis()
        items = [{"key": k, "value": v} for k, v in params.items()]
        values = [{"key": k, "value": v, "timestamp": now, "step": 0} for k, v in metrics.items()]
        for start in range(0, max(len(items), len(values), 1), 100):  # MLflow takes at most 100 params per batch
            self.call("POST", "runs/log-batch", {"run_id": run_id, "params": items[start:start + 100],
                                                 "metrics": values[start:start + 100]})

    def upload(self, artifact_uri: str, name: str, data: bytes) -> bool:
        """Put one file under the run's artifacts through the server's proxy; False when the run's
        artifact location is not served by the tracking server (an ``s3://`` root the pod has no keys for)."""
        path = _proxied_path(artifact_uri)
        if path is None:
            return False
        quoted = urllib.parse.quote(f"{path}/{ARTIFACT_DIR}/{name}")
        self.call("PUT", name, data=data, raw_path=f"/api/2.0/mlflow-artifacts/artifacts/{quoted}")
        return True

    def finish_run(self, run_id: str, status: str) -> None:
        self.call("POST", "runs/update", {"run_id": run_id, "status": status, "end_time": _millis()})

    # -- registry ----------------------------------------------------------------------------------------------

    def register(self, name: str, source: str, run_id: str, tags: Mapping[str, str]) -> str:
        """The registry version of this run under ``name``: the existing one, or a new one."""
        try:
            self.call("POST", "registered-models/create", {"name": name})
        except TrackingError as exc:
            if exc.reason != "AlreadyExists":
                raise
        found = self.call("GET", "model-versions/search", query={"filter": f"name='{_quote(name)}' and run_id='{_quote(run_id)}'"})
        for mv in found.get("model_versions") or []:
            return str(mv["version"])
        body = {"name": name, "source": source, "run_id": run_id, "tags": [{"key": k, "value": v} for k, v in tags.items()]}
        return str(self.call("POST", "model-versions/create", body)["model_version"]["version"])

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call("POST", "registered-models/alias", {"name": name, "alias": alias, "version": version})


# -- the trainer's side ----------------------------------------------------------------------------------------


def run_tags(metadata: Mapping[str, Any], training_job: str, gate: str) -> dict[str, str]:
    """Lineage as MLflow tags: what a person filtering runs in MLflow's UI asks about."""
    lineage = metadata.get("lineage") or {}
    tags = {
        "mlflow.runName": str(metadata.get("version", "")),
        "mlflow.source.type": "JOB",
        "mlflow.source.name": "mlops-operator train",
        "mlops.model": metadata.get("model"),
        "mlops.version": metadata.get("version"),
        "mlops.namespace": metadata.get("namespace"),
        "mlops.training_job": f"{metadata.get('namespace')}/{training_job}",
        "mlops.parent_version": lineage.get("parent"),
        "mlops.trigger": f"DriftPolicy/{lineage['triggeredBy']}" if lineage.get("triggeredBy") else "manual",
        "mlops.retrain_trigger": lineage.get("trigger"),  # a retrain's reason: "schedule" or the breached checks
        "mlops.data_digest": metadata.get("dataDigest"),
        "mlops.estimator": metadata.get("estimator"),
        "mlops.task": metadata.get("task"),
        "mlops.gate": gate,
        "mlops.sha256": (metadata.get("sha256") or {}).get("model.skops"),
        "mlops.source": metadata.get("source"),
    }
    return {k: str(v)[:MAX_TAG_CHARS] for k, v in tags.items() if v not in (None, "")}


def run_params(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The estimator's parameters under their own names, the rest of the recipe under dotted names."""
    params: dict[str, Any] = dict(metadata.get("params") or {})
    params["estimator"] = metadata.get("estimator")
    for key, value in _flatten("preprocessing", metadata.get("preprocessing") or {}).items():
        params.setdefault(key, value)
    for key, value in _flatten("validation", metadata.get("validation") or {}).items():
        params.setdefault(key, value)
    params.setdefault("data.source", metadata.get("source"))
    params.setdefault("data.target", metadata.get("target"))
    return {k[:250]: _text(v)[:MAX_PARAM_CHARS] for k, v in params.items() if v is not None}


def run_metrics(metadata: Mapping[str, Any]) -> dict[str, float]:
    out = {k: float(v) for k, v in (metadata.get("metrics") or {}).items() if isinstance(v, (int, float)) and v == v}
    if isinstance(metadata.get("trainingSeconds"), (int, float)):
        out["training_seconds"] = float(metadata["trainingSeconds"])
    return out


def log_version(client: MlflowClient, experiment: str, metadata: Mapping[str, Any], files: Mapping[str, bytes],
                training_job: str, *, register: bool, log: Log) -> TrackedRun:
    """Log a stored version as a finished run and register it (alias ``challenger``); idempotent per version.

    Raises TrackingError; the caller turns it into the summary's ``tracking``.
    """
    experiment_id = client.experiment_id(experiment)
    gate = str((metadata.get("gate") or {}).get("result") or "Skipped")
    tags = run_tags(metadata, training_job, gate)
    identity = {k: tags[k] for k in ("mlops.namespace", "mlops.model", "mlops.version") if k in tags}
    run = client.find_run(experiment_id, identity)
    uploaded = True
    if run is None:
        run = client.create_run(experiment_id, tags["mlflow.runName"], tags)
        run_id = run["info"]["run_id"]
        try:
            client.log_batch(run_id, run_params(metadata), run_metrics(metadata))
            for name, data in files.items():
                uploaded = client.upload(run["info"]["artifact_uri"], name, data) and uploaded
        except TrackingError:
            _finish_quietly(client, run_id, "FAILED")
            raise
        client.finish_run(run_id, "FINISHED")
    run_id, artifact_uri = run["info"]["run_id"], run["info"]["artifact_uri"]
    log("tracked", runId=run_id, experimentId=experiment_id, artifacts=uploaded)
    name = version = None
    if register and gate in ("Passed", "Skipped"):
        name = str(metadata["model"])
        version = client.register(name, f"{artifact_uri}/{ARTIFACT_DIR}", run_id,
                                  {k: tags[k] for k in ("mlops.version", "mlops.namespace", "mlops.training_job") if k in tags})
        client.set_alias(name, CHALLENGER, version)
        log("registered", registeredModel=name, registeredVersion=version, alias=CHALLENGER)
    return TrackedRun(experiment_id, run_id, name, version, uploaded)


def log_failed_run(client: MlflowClient, experiment: str, metadata: Mapping[str, Any], training_job: str, log: Log) -> TrackedRun:
    """A run whose gate failed: its params, metrics and tags, status FAILED, nothing registered."""
    experiment_id = client.experiment_id(experiment)
    tags = run_tags(metadata, training_job, "Failed")
    run = client.create_run(experiment_id, tags["mlflow.runName"], tags)
    run_id = run["info"]["run_id"]
    try:
        client.log_batch(run_id, run_params(metadata), run_metrics(metadata))
    finally:
        _finish_quietly(client, run_id, "FAILED")
    log("tracked", runId=run_id, experimentId=experiment_id, gate="Failed")
    return TrackedRun(experiment_id, run_id)


def track(spec: Any, metadata: Mapping[str, Any], files: Mapping[str, bytes], training_job: str, log: Log,
          env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The summary's ``tracking`` entry for one run (``{}`` without ``spec.tracking.mlflow``); never raises.

    ``spec`` is the TrainingJob spec; ``files`` the artifact's files (empty for a
    run that stored nothing, which is then logged as FAILED).
    """
    mlflow = getattr(getattr(spec, "tracking", None), "mlflow", None)
    if mlflow is None:
        return {}
    client = MlflowClient(mlflow.tracking_uri, credentials_from(os.environ if env is None else env))
    try:
        if files:
            tracked = log_version(client, mlflow.experiment, metadata, files, training_job, register=mlflow.register_model, log=log)
        else:
            tracked = log_failed_run(client, mlflow.experiment, metadata, training_job, log)
        return {"tracking": {"mlflow": tracked.to_summary()}}
    except TrackingError as exc:
        log("tracking", level="warning", reason=exc.reason, message=exc.message)
        return {"tracking": {"mlflow": {"logged": False, "reason": exc.reason, "message": exc.message}}}
    except Exception as exc:  # noqa: BLE001 - MLflow must never fail the run; say what happened instead
        message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        log("tracking", level="warning", reason="Error", message=message)
        return {"tracking": {"mlflow": {"logged": False, "reason": "Error", "message": message}}}


def track_result(job: Any, store: Any, result: Any, log: Log) -> dict[str, Any]:
    """The trainer's hook after a stored (or already stored) version: ``{"tracking": ...}`` or ``{}``."""
    if getattr(getattr(job.spec, "tracking", None), "mlflow", None) is None:
        return {}
    files: dict[str, bytes] = {"metadata.json": json.dumps(result.metadata, indent=2, sort_keys=True).encode()}
    try:
        read = getattr(store, "read_artifact", None) or store.read_file
        files["model.skops"] = read(result.namespace, result.model, result.version, "model.skops")
    except Exception as exc:  # noqa: BLE001 - the run stays tracked without its artifact; the log says why
        log("tracking", level="warning", message=f"model.skops not read back for MLflow: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
    return track(job.spec, result.metadata, files, job.metadata.name, log)


def track_gate_failure(job: Any, version: str, metrics: Mapping[str, float], gate: Mapping[str, Any], log: Log) -> dict[str, Any]:
    """The trainer's hook after a missed gate: the run is logged FAILED with its metrics; nothing is registered."""
    if getattr(getattr(job.spec, "tracking", None), "mlflow", None) is None:
        return {}
    spec, meta = job.spec, job.metadata
    labels = meta.labels or {}
    metadata = {
        "model": spec.model, "version": version, "namespace": meta.namespace or "default",
        "estimator": spec.estimator.class_path, "params": spec.estimator.params, "metrics": dict(metrics),
        "gate": dict(gate), "source": spec.data.source, "target": spec.data.target,
        "preprocessing": spec.preprocessing.to_dict(), "validation": spec.data.validation.to_dict(),
        "lineage": {"parent": labels.get("mlops.dev/parent-version"), "triggeredBy": labels.get("mlops.dev/triggered-by"),
                    "trigger": (meta.annotations or {}).get("mlops.dev/retrain-trigger")},
    }
    return track(spec, metadata, {}, meta.name, log)


# -- the operator's side: the champion alias --------------------------------------------------------------------


ALIAS_BUDGET_SECONDS = 10.0
"""An alias move holds a ModelDeployment's reconcile at most this long (a worker of its lane, not the others)."""


async def move_alias(tracking_uri: str, credentials: Mapping[str, str], name: str, alias: str, version: str,
                     budget_seconds: float = ALIAS_BUDGET_SECONDS) -> tuple[str, str] | None:
    """Point ``alias`` of registered model ``name`` at ``version``: None when done, else (reason, message)."""
    client = MlflowClient(tracking_uri, credentials, budget_seconds=budget_seconds, timeout=budget_seconds)
    try:
        await asyncio.to_thread(client.set_alias, name, alias, version)
    except TrackingError as exc:
        return exc.reason, exc.message
    return None


# -- helpers ----------------------------------------------------------------------------------------------------


def _auth_headers(credentials: Mapping[str, str]) -> dict[str, str]:
    """Basic auth from a username and password, else a bearer token: what MLflow's own client sends."""
    user, password = credentials.get("MLFLOW_TRACKING_USERNAME"), credentials.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    token = credentials.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _http_error(base: str, endpoint: str, exc: urllib.error.HTTPError) -> TrackingError:
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        body = {}
    code = str(body.get("error_code") or "") if isinstance(body, dict) else ""
    detail = str(body.get("message") or "")[:200] if isinstance(body, dict) else ""
    if exc.code in (401, 403):
        return TrackingError("Unauthorized", f"MLflow at {base} refused the credentials (HTTP {exc.code}) on {endpoint}; "
                                             "check the Secret's MLFLOW_TRACKING_* keys")
    reason = {"RESOURCE_DOES_NOT_EXIST": "NotFound", "RESOURCE_ALREADY_EXISTS": "AlreadyExists"}.get(code)
    if reason is None:
        reason = "NotFound" if exc.code == 404 and not code else ("ServerError" if exc.code >= 500 else "Rejected")
    return TrackingError(reason, f"MLflow at {base} answered {endpoint} with HTTP {exc.code} {code}: {detail}".strip()[:MAX_ERROR_CHARS])


def _proxied_path(artifact_uri: str) -> str | None:
    """``mlflow-artifacts:/1/abc/artifacts`` (or ``mlflow-artifacts://host/...``) -> ``1/abc/artifacts``."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme != "mlflow-artifacts":
        return None
    return parsed.path.strip("/")


def _finish_quietly(client: MlflowClient, run_id: str, status: str) -> None:
    try:
        client.finish_run(run_id, status)
    except TrackingError:
        pass


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_flatten(f"{prefix}.{k}", v))
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _quote(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def _millis() -> int:
    return int(time.time() * 1000)
