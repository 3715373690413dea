"""TrainingJob: decide the Job that runs a generation, and read the outcome back into status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from ..api.distributed import is_distributed
from ..api.trainingjob import TrainingJobSpec
from ..api.validation import validate_object
from . import labels
from .conditions import set_condition, summarize, timestamp
from .daskjob import build_daskjob, decide_dask, runner_exit_code
from .decision import Decision, Event
from .security import restricted_pod_spec
from .settings import Settings
from .storage import pod_storage
from .tracking import record_tracking, tracking_events, trainer_env
from .versions import model_version
from .cluster import Obj


SPEC_PATH = "/etc/mlops/trainingjob.json"
SPEC_ANNOTATION = f"{labels.PREFIX}/trainingjob"
EXIT_INVALID, EXIT_GATE = 2, 3
"""Trainer exit codes that no retry can fix; the Job's podFailurePolicy fails at once on them."""
TERMINAL_PHASES = ("Succeeded", "Failed")
MAX_SPEC_BYTES = 200 * 1024
"""The spec reaches the trainer as a pod-template annotation, and a pod's annotations may hold 256 KiB in all."""
"""How soon to look again at a pod that waits (scheduling, image pull): the Job does not change meanwhile."""


@dataclass(kw_only=True)
class TrainingDecision(Decision):
    """Create ``job`` when it is not None, delete ``delete`` (a finished DaskJob), then write ``status`` and post ``events``."""

    job: Obj | None = None
    delete: Obj | None = None


def job_name(tj: Obj) -> str:
    return f"{tj['metadata']['name']}-g{tj['metadata'].get('generation', 1)}"


def _spec_document(tj: Obj) -> str:
    """The manifest the trainer reads: only what it needs, as JSON (which is YAML)."""
    meta = tj["metadata"]
    doc = {
        "apiVersion": tj["apiVersion"],
        "kind": tj["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", "default"),
            "generation": meta.get("generation", 1),
            "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k.startswith(labels.PREFIX + "/")},
        },
        "spec": tj["spec"],
    }
    trigger = (meta.get("annotations") or {}).get(labels.RETRAIN_TRIGGER)
    if trigger:  # what started a retrain, for the version's lineage
        doc["metadata"]["annotations"] = {labels.RETRAIN_TRIGGER: trigger}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def build_job(tj: Obj, settings: Settings, champion: str | None = None) -> Obj:
    """The batch/v1 Job for the TrainingJob's current generation."""
    spec = TrainingJobSpec.model_validate(tj["spec"])
    meta = tj["metadata"]
    version = model_version(meta["name"], meta.get("generation", 1))

    job_labels = labels.owned_labels(
        "training", **{labels.TRAINING_JOB: meta["name"], labels.MODEL: spec.model, labels.VERSION: version}
    )

    storage = pod_storage(settings, store_read_only=False, feedback=spec.data.include_feedback, feedback_read_only=True,
                          data_source=spec.data.source)
    args = ["train", "--spec", SPEC_PATH, "--store", storage.store_arg, "--version", version,
            "--termination-log", "/dev/termination-log"]
    for module in settings.allowed_estimator_modules:
        args += ["--allow-module", module]
    if champion and spec.quality_gate and spec.quality_gate.must_beat == "current":
        args += ["--champion", champion]
    volumes: list[Obj] = [
        *storage.volumes[:1],
        {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
        {
            "name": "spec",
            "downwardAPI": {"items": [{"path": "trainingjob.json", "fieldRef": {"fieldPath": f"metadata.annotations['{SPEC_ANNOTATION}']"}}]},
        },
        *storage.volumes[1:],
    ]
    mounts: list[Obj] = [
        *storage.mounts[:1],
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "spec", "mountPath": "/etc/mlops", "readOnly": True},
        *storage.mounts[1:],
    ]
    if storage.feedback_arg:
        args += ["--feedback", storage.feedback_arg]
    container: Obj = {
        "name": "trainer",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}, *storage.env, *trainer_env(tj["spec"])],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if spec.resources:
        container["resources"] = spec.resources.to_dict()
    pod_spec = restricted_pod_spec([container], volumes, settings.service_account, restartPolicy="Never")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(tj),
            "namespace": meta.get("namespace", "default"),
            "labels": job_labels,
            "ownerReferences": [labels.owner_reference(tj)],
        },
        "spec": {
            "backoffLimit": spec.backoff_limit,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [
                    {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [EXIT_INVALID, EXIT_GATE]}},
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": dict(job_labels), "annotations": {SPEC_ANNOTATION: _spec_document(tj)}},
                "spec": pod_spec,
            },
        },
    }


def last_termination(pods: list[Obj]) -> Obj | None:
    """The ``terminated`` state of the newest terminated trainer container."""
    best: tuple[str, Obj] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") != "trainer" or not term:
                continue
            when = term.get("finishedAt") or ""
            if best is None or when >= best[0]:
                best = (when, term)
    return best[1] if best else None


def out_of_memory(pods: list[Obj], spec: Obj) -> str | None:
    """Why the last attempt failed when the kernel killed it for its memory (the kubelet's ``OOMKilled``).

    Such a trainer writes no summary (its last log line stands in for one), so this is
    the only account of it a user gets.
    """
    term = last_termination(pods)
    if not term or term.get("reason") != "OOMKilled":
        return None
    limit = (((spec.get("resources") or {}).get("limits")) or {}).get("memory")
    where = f"its memory limit ({limit})" if limit else "the memory its node could give it"
    hint = ("raise spec.resources.limits.memory: the runner holds the samples and the model, the workers the rows"
            if spec.get("distributed") else
            "raise spec.resources.limits.memory, or train on Dask workers with spec.distributed, which never holds all the rows in one pod")
    return f"the trainer used more than {where} and was killed (OOMKilled); {hint}"


def termination_summary(pods: list[Obj]) -> Obj | None:
    """The trainer's one-line JSON summary from the newest terminated trainer container."""
    term = last_termination(pods)
    if term is None or term.get("reason") == "OOMKilled":
        return None  # killed mid-run: the message is the log's tail, not a summary
    text = (term.get("message") or "").strip().splitlines()
    for line in reversed(text):
        try:
            summary = json.loads(line)
        except ValueError:
            continue
        # A log line (the tail of a trainer that died before writing its summary) has an "event"; a summary never does.
        if isinstance(summary, dict) and "event" not in summary:
            return summary
    return None


def _job_condition(job: Obj, type_: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def _gate_status(gate: Obj | None) -> Obj | None:
    if not gate:
        return None
    keys = {"result", "metric", "value", "bound", "championVersion", "championValue", "reason"}
    return {k: v for k, v in gate.items() if k in keys and v is not None}


def _main_metric(tj: Obj) -> str:
    gate = (tj.get("spec") or {}).get("qualityGate") or {}
    return gate.get("metric", "")


def runs_on_dask(tj: Obj, settings: Settings) -> bool:
    """Whether this generation runs as a DaskJob (else a batch Job, on a local Dask cluster when distributed)."""
    return settings.dask_jobs and is_distributed(tj.get("spec") or {})


def current_child_name(tj: Obj) -> str:
    """The child running this generation: status.jobName once set for it (a DaskJob retry has its own name)."""
    status = tj.get("status") or {}
    if status.get("observedGeneration") == (tj.get("metadata") or {}).get("generation", 1) and status.get("jobName"):
        return str(status["jobName"])
    return job_name(tj)


def settled(tj: Obj) -> bool:
    """Whether this generation's outcome is recorded: nothing its Job or pods say can change it."""
    status = tj.get("status") or {}
    return status.get("observedGeneration") == (tj.get("metadata") or {}).get("generation", 1) and \
        status.get("phase") in TERMINAL_PHASES


def decide(
    tj: Obj, job: Obj | None, pods: list[Obj], settings: Settings, now: datetime, champion: str | None = None
) -> TrainingDecision:
    """Level-based: the same inputs give the same answer, however often it is asked.

    ``champion`` is the version serving the lineage now; a gate with
    ``mustBeat: current`` scores this run against it on the same rows.
    """
    meta = tj["metadata"]
    generation = meta.get("generation", 1)
    old: Obj = dict(tj.get("status") or {})
    same_generation = old.get("observedGeneration") == generation
    # A new generation starts from scratch but keeps the conditions' history (their transition
    # times); Succeeded/Failed (and Tracked) described the previous run, so they go.
    carried = [c for c in old.get("conditions") or [] if c.get("type") not in ("Succeeded", "Failed", "Tracked")]
    status: Obj = dict(old) if same_generation else {"conditions": carried}
    status["observedGeneration"] = generation
    events: list[Event] = []

    errors = [str(e) for e in validate_object(tj)]
    size = len(_spec_document(tj).encode()) if not errors else 0
    if size > MAX_SPEC_BYTES:
        errors.append(f"spec: {size // 1024} KiB as JSON, more than the {MAX_SPEC_BYTES // 1024} KiB a training pod can carry "
                      "in its annotations; keep large values (long feature lists, big parameter grids) in the data source")
    if errors:
        message = "; ".join(errors)[:1000]
        status.update(phase="Failed")
        status["conditions"] = summarize(status.get("conditions"), ready=False, reason="InvalidSpec", message=message,
                                         reconciling=False, stalled=True, now=now, generation=generation)
        status["conditions"] = set_condition(status["conditions"], "Failed", True, "InvalidSpec", message, now, generation)
        if old.get("phase") != "Failed" or not same_generation:
            events.append(Event("Warning", "InvalidSpec", message))
        return TrainingDecision(status=status, events=events)

    version = model_version(meta["name"], generation)
    status["modelVersion"] = version
    status["jobName"] = job_name(tj)

    if settled(tj):
        # The outcome of a generation is a fact, recorded once: it is never re-derived from a
        # Job whose pods may be gone (pod garbage collection, `kubectl delete pod`, a cascading
        # delete) or from no Job at all (its TTL expired). Only a new generation runs again.
        return TrainingDecision(status=status)

    if runs_on_dask(tj, settings):
        return _decide_on_dask(tj, status, old, same_generation, job, pods, settings, now, champion)

    if job is None:
        status["phase"] = "Pending"
        msg = f"creating Job {job_name(tj)}"
        status["conditions"] = summarize(status.get("conditions"), ready=False, reason="JobCreated", message=msg,
                                         reconciling=True, stalled=False, now=now, generation=generation)
        return TrainingDecision(status=status, job=build_job(tj, settings, champion), events=[Event("Normal", "JobCreated", msg)])

    job_status = job.get("status") or {}
    if job_status.get("startTime"):
        status.setdefault("startTime", job_status["startTime"])
    summary = termination_summary(pods)
    complete, failed = _job_condition(job, "Complete"), _job_condition(job, "Failed")

    if complete:
        return _succeeded(tj, status, old, job_status, summary or {}, settings, now, same_generation)

    if failed:
        oom = out_of_memory(pods, tj["spec"])
        reason, message = ("OOMKilled", oom) if oom else _failure(failed, summary)
        status.update(phase="Failed", completionTime=job_status.get("completionTime") or failed.get("lastTransitionTime") or timestamp(now))
        if summary and summary.get("gate"):
            status["gate"] = _gate_status(summary["gate"])
        if summary and summary.get("metrics"):
            status["metrics"] = {k: float(v) for k, v in summary["metrics"].items() if isinstance(v, (int, float))}
        status["conditions"] = summarize(status.get("conditions"), ready=False, reason=reason, message=message,
                                         reconciling=False, stalled=True, now=now, generation=generation)
        status["conditions"] = set_condition(status["conditions"], "Failed", True, reason, message, now, generation)
        if reason == "GateFailed":
            status = record_tracking(status, tj["spec"], summary, now, generation)
        if old.get("phase") != "Failed" or not same_generation:
            events += [Event("Warning", reason, message), *tracking_events(status)]
        return TrainingDecision(status=status, events=events)

    running = any(_pod_running(p) for p in pods)
    if running:
        reason, msg = "Running", f"Job {job_name(tj)} is running"
    else:
        reason, msg = _waiting(pods, job_name(tj))
    status["phase"] = "Running" if running else "Pending"
    status["conditions"] = summarize(status.get("conditions"), ready=False, reason=reason,
                                     message=msg, reconciling=True, stalled=False, now=now, generation=generation)
    if status["phase"] != old.get("phase") or _ready_reason(old) != reason:
        if running:
            events.append(Event("Normal", "Running", msg))
        elif reason != "Pending":
            events.append(Event("Warning", reason, msg))
    # No timed re-check while it waits: every change of its pods (scheduled, pulling, crashing) is an
    # event that brings this TrainingJob back, on a cluster and locally; a poll would cost two API
    # reads per waiting run every few seconds, which is what 10,000 queued runs cannot afford.
    return TrainingDecision(status=status, events=events)


def _decide_on_dask(tj: Obj, status: Obj, old: Obj, same_generation: bool, daskjob: Obj | None, pods: list[Obj],
                    settings: Settings, now: datetime, champion: str | None) -> TrainingDecision:
    """A distributed generation: its DaskJob (``job``) and the runner pod's summary (``pods``)."""
    if same_generation and old.get("jobName"):
        status["jobName"] = old["jobName"]
    summary = termination_summary(pods)
    dask = decide_dask(tj, status, old, same_generation, daskjob, summary,
                       lambda attempt: build_daskjob(tj, build_job(tj, settings, champion), settings, attempt), now,
                       runner_exit_code(pods), out_of_memory(pods, tj["spec"]))
    if dask.succeeded and daskjob is not None:
        end = (daskjob.get("status") or {}).get("endTime")
        done = _succeeded(tj, dask.status, old, {"completionTime": end} if end else {}, summary or {}, settings, now,
                          same_generation)
        return TrainingDecision(status=done.status, events=done.events, delete=daskjob)
    if dask.status.get("phase") == "Failed" and summary:
        if summary.get("gate"):
            dask.status["gate"] = _gate_status(summary["gate"])
        if summary.get("metrics"):
            dask.status["metrics"] = {k: float(v) for k, v in summary["metrics"].items() if isinstance(v, (int, float))}
    return TrainingDecision(status=dask.status, events=dask.events, job=dask.create, delete=dask.delete,
                            requeue_after=dask.requeue_after)


def _pod_running(pod: Obj) -> bool:
    """A trainer pod whose container has started (the Job's ``active`` also counts pods still waiting)."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or st.get("phase") != "Running":
        return False
    return any("running" in (cs.get("state") or {}) for cs in st.get("containerStatuses") or [])


WAITING_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                   "CreateContainerError", "CrashLoopBackOff", "RunContainerError"}
"""Container waiting reasons worth a user's attention (ContainerCreating is just slow)."""


def _waiting(pods: list[Obj], job: str) -> tuple[str, str]:
    """Why the trainer has not started: unschedulable, an image that cannot be pulled, or plain waiting."""
    for pod in pods:
        st = pod.get("status") or {}
        for c in st.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                return "Unschedulable", f"pod {pod['metadata'].get('name')} cannot be scheduled: {c.get('message', '')}"[:1000]
        for cs in st.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in WAITING_REASONS:
                text = f"pod {pod['metadata'].get('name')}: {waiting['reason']}: {waiting.get('message', '')}"
                return waiting["reason"], text[:1000]
    return "Pending", f"Job {job} is waiting for its pod"


def _ready_reason(status: Obj) -> str | None:
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return ready.get("reason") if ready else None


def _succeeded(tj: Obj, status: Obj, old: Obj, job_status: Obj, summary: Obj, settings: Settings, now: datetime,
               same_generation: bool) -> TrainingDecision:
    """The Job completed: the trainer's summary becomes the run's status (no summary, no verifiable version)."""
    meta = tj["metadata"]
    generation = meta.get("generation", 1)
    version = status["modelVersion"]
    events: list[Event] = []
    status.update(
        phase="Succeeded",
        completionTime=job_status.get("completionTime") or timestamp(now),
        artifact={k: v for k, v in {"uri": summary.get("uri"), "sha256": summary.get("sha256")}.items() if v},
        metrics={k: float(v) for k, v in (summary.get("metrics") or {}).items() if isinstance(v, (int, float))},
    )
    gate = _gate_status(summary.get("gate")) or {"result": "Skipped"}
    status["gate"] = gate
    status["lineage"] = {
        k: v
        for k, v in {
            "dataDigest": summary.get("dataDigest"),
            "image": settings.image,
            "parent": (meta.get("labels") or {}).get(labels.PARENT_VERSION),
            "triggeredBy": (meta.get("labels") or {}).get(labels.TRIGGERED_BY),
            "trigger": (meta.get("annotations") or {}).get(labels.RETRAIN_TRIGGER),
            "scikitLearn": summary.get("scikitLearn"),
            "inference": summary.get("inference") if summary.get("inference") in ("onnx", "skops") else None,
        }.items()
        if v
    }
    status.pop("tuning", None)
    status.pop("importance", None)
    status.update(_explained(summary))
    if not summary.get("sha256"):
        msg = "the Job completed but its pod left no readable summary; the version cannot be verified"
        status["phase"] = "Failed"
        status["conditions"] = summarize(status.get("conditions"), ready=False, reason="NoSummary", message=msg,
                                         reconciling=False, stalled=True, now=now, generation=generation)
        status["conditions"] = set_condition(status["conditions"], "Failed", True, "NoSummary", msg, now, generation)
    else:
        metric = gate.get("metric") or _main_metric(tj)
        value = status["metrics"].get(metric) if metric else None
        msg = f"{version} stored" + (f"; {metric} {value:.4g}" if metric and value is not None else "")
        status["conditions"] = summarize(status.get("conditions"), ready=True, reason="Succeeded", message=msg,
                                         reconciling=False, stalled=False, now=now, generation=generation)
        status["conditions"] = set_condition(status["conditions"], "Succeeded", True, "Succeeded", msg, now, generation)
        status["conditions"] = [c for c in status["conditions"] if c["type"] != "Failed"]
        status = record_tracking(status, tj["spec"], summary, now, generation)
    if old.get("phase") != status["phase"] or not same_generation:
        ok = status["phase"] == "Succeeded"
        events += [Event("Normal" if ok else "Warning", "Succeeded" if ok else "NoSummary", _ready_message(status)),
                   *tracking_events(status)]
    return TrainingDecision(status=status, events=events)


def _explained(summary: Obj) -> Obj:
    """The search's winner and best few (spec.tuning) and the top permutation importances, as the trainer summarised them."""
    out: Obj = {}
    tuning = summary.get("tuning")
    if isinstance(tuning, dict):
        keys = ("strategy", "scoring", "bestParams", "bestScore", "defaultScore", "candidates", "seconds", "nJobs", "stopped", "top")
        out["tuning"] = {k: tuning[k] for k in keys if tuning.get(k) is not None}
    importance = summary.get("importance")
    if isinstance(importance, list):
        out["importance"] = [
            {k: r[k] for k in ("feature", "importance", "std") if r.get(k) is not None}
            for r in importance[:5] if isinstance(r, dict) and r.get("feature") and isinstance(r.get("importance"), (int, float))
        ]
    return out


def _ready_message(status: Obj) -> str:
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    return ready["message"] if ready else ""


def _failure(condition: Obj, summary: Obj | None) -> tuple[str, str]:
    """Why a Job failed, preferring the trainer's own words over the Job controller's."""
    if summary and summary.get("reason"):
        return str(summary["reason"]), str(summary.get("message") or summary["reason"])[:1000]
    reason = condition.get("reason") or "Failed"
    known = {"BackoffLimitExceeded": "BackoffLimitExceeded", "DeadlineExceeded": "DeadlineExceeded", "PodFailurePolicy": "Failed"}
    return known.get(reason, "Failed"), condition.get("message") or reason
