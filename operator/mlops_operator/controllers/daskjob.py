"""A distributed TrainingJob: the Dask operator's DaskJob that runs it, and its outcome read back.

The runner is the trainer container of the batch Job (same arguments, spec,
storage and summary); the scheduler and the workers run the same image. A
DaskJob has neither retries nor a deadline, so both stay here: a failed
attempt that a retry can fix gets a new DaskJob (``-r1``, ``-r2``...) while
``backoffLimit`` allows, and a run past ``activeDeadlineSeconds`` fails.
Every finished DaskJob is deleted (its cluster goes with it): the outcome is
recorded in the TrainingJob's status first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ..api.base import parse_quantity
from ..api.trainingjob import TrainingJobSpec
from . import labels
from .conditions import set_condition, summarize, timestamp
from .decision import Event
from .security import restricted_pod_spec
from .settings import Settings
from .storage import data_access
from .cluster import Obj

DASK_API_VERSION = "kubernetes.dask.org/v1"
SCHEDULER_PORT, DASHBOARD_PORT, WORKER_DASHBOARD_PORT = 8786, 8787, 8788
CLUSTER_LABEL = "dask.org/cluster-name"
COMPONENT_LABEL = "dask.org/component"
RUNNER_COMPONENT = "job-runner"

DASK_PHASES = {
    None: "Pending",
    "JobCreated": "Pending",
    "ClusterCreated": "Pending",
    "Running": "Running",
    "Successful": "Succeeded",
    "Failed": "Failed",
}
"""DaskJob ``status.jobStatus`` → the TrainingJob's phase; anything unknown counts as Pending."""

PERMANENT_EXIT_CODES = (2, 3)
"""The trainer's exit codes no retry can fix (invalid spec or data, gate missed): the batch Job's podFailurePolicy."""


WORKER_NO_PAUSE = {"name": "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE", "value": "False"}
"""No pause at 80 % of the worker's memory: see runtime/distributed.py (WORKER_MEMORY_CONFIG) for why."""


def daskjob_name(tj: Obj, attempt: int = 0) -> str:
    """``<name>-g<generation>`` for the first attempt, ``-r<n>`` after it."""
    base = f"{tj['metadata']['name']}-g{tj['metadata'].get('generation', 1)}"
    return base if attempt == 0 else f"{base}-r{attempt}"


def attempt_of(name: str) -> int:
    m = re.search(r"-r([0-9]+)$", name)
    return int(m.group(1)) if m else 0


def runner_selector(daskjob: str) -> dict[str, str]:
    """Labels of a DaskJob's runner pod (the Dask operator names its cluster after the DaskJob)."""
    return {CLUSTER_LABEL: daskjob, COMPONENT_LABEL: RUNNER_COMPONENT}


def _memory_bytes(resources: Obj | None) -> int | None:
    limit = ((resources or {}).get("limits") or {}).get("memory")
    return int(parse_quantity(limit)) if limit is not None else None


def _dask_container(name: str, image: str, settings: Settings, command: list[str], ports: list[Obj],
                    resources: Obj | None) -> Obj:
    container: Obj = {
        "name": name,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}],
        "ports": ports,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if resources:
        container["resources"] = resources
    return container


def build_daskjob(tj: Obj, batch_job: Obj, settings: Settings, attempt: int = 0) -> Obj:
    """The DaskJob for a distributed TrainingJob, from the batch Job the single-pod run would use.

    ``batch_job`` is :func:`..trainingjob.build_job`'s output: its pod template
    becomes the runner, so both paths share arguments, storage and the spec.
    """
    spec = TrainingJobSpec.model_validate(tj["spec"])
    assert spec.distributed is not None
    meta = tj["metadata"]
    name = daskjob_name(tj, attempt)
    image = settings.dask_image or settings.image
    template = batch_job["spec"]["template"]
    runner_spec = dict(template["spec"])
    runner_spec["containers"] = [dict(c, image=image) for c in runner_spec["containers"]]
    common_labels = dict(batch_job["metadata"]["labels"])
    worker_resources = spec.distributed.resources.to_dict() if spec.distributed.resources else None
    scheduler_resources = (spec.distributed.scheduler.resources.to_dict()
                           if spec.distributed.scheduler and spec.distributed.scheduler.resources else None)
    memory = _memory_bytes(worker_resources)
    worker_cmd = ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "1",
                  "--dashboard-address", str(WORKER_DASHBOARD_PORT),
                  "--memory-limit", str(memory) if memory else "auto", "--local-directory", "/tmp"]
    worker = _dask_container("worker", image, settings, worker_cmd,
                             [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}],
                             worker_resources)
    worker["env"].append(WORKER_NO_PAUSE)
    # The workers read the data's partitions themselves: an s3:// source needs the store's settings and Secret
    # (by reference), a pvc:// one its claim (read-only), nothing else of the runner's (no store mount, no MLflow
    # credentials).
    access = data_access(settings, spec.data.source)
    worker["env"] += access.env
    worker["volumeMounts"] += access.mounts
    scheduler = _dask_container(
        "scheduler", image, settings, ["dask", "scheduler"],
        [{"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
         {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"}],
        scheduler_resources,
    )
    scheduler["readinessProbe"] = {"httpGet": {"port": "http-dashboard", "path": "/health"},
                                   "initialDelaySeconds": 0, "periodSeconds": 5, "timeoutSeconds": 5}
    tmp = [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}]
    return {
        "apiVersion": DASK_API_VERSION,
        "kind": "DaskJob",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace", "default"),
            "labels": common_labels,
            "ownerReferences": [labels.owner_reference(tj)],
        },
        "spec": {
            "job": {
                "metadata": {"labels": dict(template["metadata"]["labels"]),
                             "annotations": dict(template["metadata"]["annotations"])},
                "spec": runner_spec,
            },
            "cluster": {
                "metadata": {"labels": common_labels},
                "spec": {
                    "worker": {
                        "replicas": spec.distributed.workers,
                        "spec": restricted_pod_spec([worker], [*tmp, *access.volumes],
                                                    settings.service_account),
                    },
                    "scheduler": {
                        "spec": restricted_pod_spec([scheduler], list(tmp), settings.service_account),
                        "service": {
                            "type": "ClusterIP",
                            "selector": {CLUSTER_LABEL: name, COMPONENT_LABEL: "scheduler"},
                            "ports": [
                                {"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": "tcp-comm"},
                                {"name": "http-dashboard", "protocol": "TCP", "port": DASHBOARD_PORT,
                                 "targetPort": "http-dashboard"},
                            ],
                        },
                    },
                },
            },
        },
    }


# -- reading the outcome back ----------------------------------------------------------


@dataclass(frozen=True)
class DaskOutcome:
    """What a DaskJob's status and its runner's summary say, before retries and deadlines."""

    phase: str
    """Pending, Running, Succeeded or Failed (of this attempt)."""
    reason: str
    message: str
    permanent: bool = False
    """A failure no new attempt can fix (bad spec or data, gate missed)."""


def runner_exit_code(pods: list[Obj]) -> int | None:
    """The exit code of the runner's terminated trainer container, if it has one."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == "trainer" and term and term.get("exitCode") is not None:
                return int(term["exitCode"])
    return None


def dask_outcome(daskjob: Obj, summary: Obj | None, exit_code: int | None = None, oom: str | None = None) -> DaskOutcome:
    """Pure: the phase of one attempt from the DaskJob's ``jobStatus``, the runner's summary and exit code."""
    status = daskjob.get("status") or {}
    job_status = status.get("jobStatus")
    phase = DASK_PHASES.get(job_status, "Pending")
    name = daskjob["metadata"]["name"]
    if phase == "Succeeded":
        return DaskOutcome("Succeeded", "Succeeded", f"DaskJob {name} succeeded")
    if phase == "Failed":
        if oom:
            return DaskOutcome("Failed", "OOMKilled", oom)
        if summary and summary.get("reason"):
            reason = str(summary["reason"])
            return DaskOutcome("Failed", reason, str(summary.get("message") or reason)[:1000],
                               exit_code in PERMANENT_EXIT_CODES)
        return DaskOutcome("Failed", "DaskJobFailed", f"DaskJob {name}'s runner failed"
                           + (f" with exit code {exit_code}" if exit_code is not None else ""))
    if phase == "Running":
        return DaskOutcome("Running", "Running", f"DaskJob {name} is running on {status.get('clusterName') or 'its cluster'}")
    waiting = {None: "waiting for the Dask operator", "JobCreated": "its Dask cluster is being created",
               "ClusterCreated": "its Dask cluster is starting"}.get(job_status, f"status {job_status}")
    return DaskOutcome("Pending", "DaskClusterStarting", f"DaskJob {name}: {waiting}")


def deadline_left(start_time: str | None, deadline_seconds: int, now: datetime) -> float | None:
    """Seconds left before ``activeDeadlineSeconds`` (negative: past it); None before the run started."""
    if not start_time:
        return None
    started = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    return deadline_seconds - (now - started).total_seconds()


@dataclass(kw_only=True)
class DaskDecision:
    """Create ``create`` (a DaskJob), delete ``delete`` (finished ones), then write ``status`` and post ``events``."""

    status: Obj
    events: list[Event]
    create: Obj | None = None
    delete: Obj | None = None
    requeue_after: float | None = None
    succeeded: bool = False
    """The runner succeeded: the caller turns its summary into the status (and deletes the DaskJob)."""


def decide_dask(tj: Obj, status: Obj, old: Obj, same_generation: bool, daskjob: Obj | None, summary: Obj | None,
                new_daskjob: Callable[[int], Obj], now: datetime, exit_code: int | None = None,
                oom: str | None = None) -> DaskDecision:
    """Level-based decision table of one distributed generation (the spec is already valid).

    ``status`` is the status being built (generation, version set);
    ``new_daskjob(attempt)`` builds the DaskJob of an attempt; ``oom`` says why the runner was OOMKilled.
    """
    generation = tj["metadata"].get("generation", 1)
    spec = tj["spec"]
    backoff = int(spec.get("backoffLimit", 1))
    deadline = int(spec.get("activeDeadlineSeconds", 3600))
    events: list[Event] = []
    current = str(status.get("jobName") or daskjob_name(tj))
    attempt = attempt_of(current)

    def finish(phase: str, reason: str, message: str) -> DaskDecision:
        status.update(phase=phase, completionTime=timestamp(now))
        ok = phase == "Succeeded"
        status["conditions"] = summarize(status.get("conditions"), ready=ok, reason=reason, message=message,
                                         reconciling=False, stalled=not ok, now=now, generation=generation)
        status["conditions"] = set_condition(status["conditions"], phase, True, reason, message, now, generation)
        if old.get("phase") != phase or not same_generation:
            events.append(Event("Normal" if ok else "Warning", reason, message))
        return DaskDecision(status=status, events=events, delete=daskjob)

    def waiting(phase: str, reason: str, message: str, create: Obj | None = None, delete: Obj | None = None) -> DaskDecision:
        status["phase"] = phase
        status["conditions"] = summarize(status.get("conditions"), ready=False, reason=reason, message=message,
                                         reconciling=True, stalled=False, now=now, generation=generation)
        if old.get("phase") != phase or _ready_reason(old) != reason or create is not None:
            events.append(Event("Normal", reason, message))
        left = deadline_left(status.get("startTime"), deadline, now)
        return DaskDecision(status=status, events=events, create=create, delete=delete,
                            requeue_after=max(1.0, left) if left is not None else None)

    if daskjob is None:
        status["jobName"] = current
        status.setdefault("startTime", timestamp(now))
        return waiting("Pending", "DaskJobCreated", f"creating DaskJob {current}", create=new_daskjob(attempt))

    left = deadline_left(status.get("startTime"), deadline, now)
    if left is not None and left <= 0 and DASK_PHASES.get((daskjob.get("status") or {}).get("jobStatus")) != "Succeeded":
        return finish("Failed", "DeadlineExceeded", f"the run took longer than activeDeadlineSeconds ({deadline}s)")

    outcome = dask_outcome(daskjob, summary, exit_code, oom)
    if outcome.phase == "Succeeded":
        return DaskDecision(status=status, events=events, delete=daskjob, succeeded=True)
    if outcome.phase == "Failed":
        if outcome.permanent or attempt >= backoff:
            reason = outcome.reason if outcome.permanent or attempt == 0 else "BackoffLimitExceeded"
            message = outcome.message if reason == outcome.reason else f"{attempt + 1} attempts failed; last: {outcome.message}"
            return finish("Failed", reason, message)
        retry = daskjob_name(tj, attempt + 1)
        status["jobName"] = retry
        return waiting("Pending", "Retrying", f"attempt {attempt + 1} failed ({outcome.message}); creating DaskJob {retry}",
                       create=new_daskjob(attempt + 1), delete=daskjob)
    return waiting(outcome.phase, outcome.reason, outcome.message)


def _ready_reason(status: Obj) -> str | None:
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return ready.get("reason") if ready else None
