"""ModelDeployment: resolve the version to serve, build its Deployment, Service, HPA and PDB, report status.

Pure: the object, the TrainingJobs of its namespace and the children observed
go in; the children to apply or delete, the status and the events come out.

Two rules shape every branch:

- the resolved version lives in ``status`` (never in the user's spec), and the
  version a Deployment runs is written on its pod template
  (``mlops.dev/version``, ``mlops.dev/sha256``), so a new version rolls and the
  serving version can always be read back from the cluster;
- what serves is never torn down because resolution got worse (no passing
  version any more, a pin to a version that does not exist, an invalid spec):
  the Deployment keeps its version, and the condition says why nothing moves.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from ..api.modeldeployment import ModelDeploymentSpec
from ..api.validation import validate_object
from . import labels
from . import rollout as rollouts
from .cluster import DEPLOYMENTS, HPAS, PDBS, SERVICES, Obj, Resource
from .conditions import get_condition, set_condition, summarize, timestamp
from .security import restricted_pod_spec
from .settings import Settings
from .storage import MODEL_CACHE_PATH, PodStorage, is_s3, pod_storage
from .decision import Decision, Event
from .versions import find_version, newest_promotable, of_lineage


COMPONENT = "serving"
CHALLENGER_COMPONENT = "serving-challenger"
"""The challenger's pods: not selected by the ModelDeployment's Service, only by its own."""
CHALLENGER_SUFFIX = "-challenger"
SHA256 = f"{labels.PREFIX}/sha256"
"""Pod-template annotation: the artifact digest the server checks on load."""
APPLIED = f"{labels.PREFIX}/applied"
"""Child annotation: a digest of what the operator last applied, so dropping a field is noticed."""
LATEST = "latest"
SERVICE_PORT = 80
GRPC_PORT = 8081  # gRPC (Open Inference Protocol V2), container and Service, when turned on (as KServe numbers it)
TERMINATION_GRACE_SECONDS = 30
# A terminating pod keeps serving this long before it is told to stop: the time
# for the endpoint controller and every node's kube-proxy to stop sending it new
# connections. The server stops listening on SIGTERM, so without this delay a
# rollout or a deleted pod refuses the requests routed to it in the meantime.
# Then the server drains its requests in flight (``serve --grace-seconds``, 20 s):
# the two together stay under TERMINATION_GRACE_SECONDS.
PRE_STOP_DELAY_SECONDS = 5
HISTORY_MAX = 20
"""The schema's bound on status.history."""
DEFAULT_CPU_REQUEST = "100m"
"""CPU request given to serving pods under an autoscaler when the spec sets none (CPU utilisation needs one)."""
MODEL_CACHE_SIZE = "2Gi"
"""The serving pod's room for its copy of an object-store version (a RandomForest of 100 trees is tens of MB)."""
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Reasons of the Ready condition.
READY = "Ready"
ROLLING_OUT = "RollingOut"
UPDATING = "Updating"
NO_PASSING_VERSION = "NoPassingVersion"
VERSION_NOT_FOUND = "VersionNotFound"
ARTIFACT_MISSING = "ArtifactMissing"
INVALID_SPEC = "InvalidSpec"
NAME_CONFLICT = "NameConflict"
PROGRESS_DEADLINE = "ProgressDeadlineExceeded"

# Reasons of history entries.
INITIAL, NEW_VERSION, PINNED, PROMOTED = "Initial", "NewVersion", "Pinned", "Promoted"


@dataclass
class Observed:
    """The children as last read from the cluster (None: absent)."""

    deployment: Obj | None = None
    service: Obj | None = None
    hpa: Obj | None = None
    pdb: Obj | None = None
    challenger_deployment: Obj | None = None
    challenger_service: Obj | None = None
    readings: list[rollouts.PodReading] = field(default_factory=list)
    """Counters scraped from the serving pods of both sides (only while a rollout is active)."""
    live_pods: set[str] = field(default_factory=set)
    """Names of the serving pods that exist (scraped or not)."""

    def items(self) -> list[tuple[Resource, Obj | None]]:
        return [(DEPLOYMENTS, self.deployment), (SERVICES, self.service), (HPAS, self.hpa), (PDBS, self.pdb)]

    def challenger_items(self) -> list[tuple[Resource, Obj | None]]:
        return [(DEPLOYMENTS, self.challenger_deployment), (SERVICES, self.challenger_service)]


@dataclass(frozen=True)
class Target:
    """The version resolution chose, and the TrainingJob that made it."""

    version: str
    sha256: str
    training_job: Obj


@dataclass(frozen=True)
class Problem:
    """Why nothing new can roll out; ``stalled`` when only a person can fix it."""

    reason: str
    message: str
    stalled: bool


@dataclass(kw_only=True)
class DeploymentDecision(Decision):
    """Apply ``apply``, delete ``delete``, then write ``status`` and post ``events``.

    ``apply`` holds only children that differ from what was observed, so a
    decision over an unchanged world asks for no writes at all.
    """

    apply: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)


# --- names -----------------------------------------------------------------------------------------------


def url_of(md: Obj, settings: Settings) -> str:
    meta = md["metadata"]
    return f"http://{meta['name']}.{meta.get('namespace', 'default')}.svc.{settings.cluster_domain}"


def selector_labels(md: Obj, component: str = COMPONENT) -> dict[str, str]:
    """What the Deployment, Service and PDB select on: stable for the object's life (never the version)."""
    return {labels.COMPONENT: component, labels.DEPLOYMENT: md["metadata"]["name"]}


def _child_labels(md: Obj, model: str, component: str = COMPONENT) -> dict[str, str]:
    return labels.owned_labels(component, **{labels.DEPLOYMENT: md["metadata"]["name"], labels.MODEL: model})


def challenger_name(md: Obj) -> str:
    """The challenger's Deployment and Service: ``<name>-challenger``."""
    return md["metadata"]["name"] + CHALLENGER_SUFFIX


def challenger_url(md: Obj, settings: Settings, service: Obj | None) -> str | None:
    """Where the champion's router sends the challenger's share; None until the challenger's Service exists.

    Its ClusterIP where it has one: the router then needs no cluster DNS and
    makes no search-path lookups per connection (kube-proxy still balances
    over the challenger's pods). Its DNS name otherwise (local mode maps that
    to its proxy).
    """
    if service is None:
        return None
    spec = service.get("spec") or {}
    ip, ports = spec.get("clusterIP"), spec.get("ports") or []
    if ip and ip != "None" and ports:
        host = f"[{ip}]" if ":" in ip else ip
        return f"http://{host}:{ports[0]['port']}"
    meta = md["metadata"]
    return f"http://{challenger_name(md)}.{meta.get('namespace', 'default')}.svc.{settings.cluster_domain}"


def _child_meta(md: Obj, model: str, component: str = COMPONENT) -> Obj:
    meta = md["metadata"]
    return {
        "name": meta["name"] if component == COMPONENT else challenger_name(md),
        "namespace": meta.get("namespace", "default"),
        "labels": _child_labels(md, model, component),
        "ownerReferences": [labels.owner_reference(md)],
    }


# --- version resolution ----------------------------------------------------------------------------------


def _in_progress(tj: Obj) -> bool:
    """Still on its way to an outcome: not yet reconciled for its generation, or pending or running."""
    status = tj.get("status") or {}
    if status.get("observedGeneration") != tj.get("metadata", {}).get("generation"):
        return True
    return status.get("phase") in (None, "Pending", "Running")


def resolve(spec: ModelDeploymentSpec, training_jobs: list[Obj]) -> Target | Problem:
    """The version ``spec.version`` asks for, or why there is none (yet)."""
    lineage = of_lineage(training_jobs, spec.model)
    if spec.version == LATEST:
        tj = newest_promotable(lineage, spec.model)
        if tj is None:
            running = [t["metadata"]["name"] for t in lineage if _in_progress(t)]
            if running:
                msg = f"no version of model {spec.model} has passed yet; waiting for {', '.join(sorted(running)[:5])}"
            elif lineage:
                msg = (f"none of the {len(lineage)} TrainingJob(s) of model {spec.model} succeeded with a passing gate "
                       "(and approval, where promotion is manual)")
            else:
                msg = f"no TrainingJob of model {spec.model} in this namespace"
            return Problem(NO_PASSING_VERSION, msg, stalled=not running)
    else:
        tj = find_version(lineage, spec.model, spec.version)
        if tj is None:
            return _pin_problem(spec, lineage)
    status = tj.get("status") or {}
    sha = (status.get("artifact") or {}).get("sha256")
    if not sha:
        return Problem(ARTIFACT_MISSING, f"TrainingJob {tj['metadata']['name']} records no artifact sha256 for {status.get('modelVersion')}", True)
    return Target(version=status["modelVersion"], sha256=sha, training_job=tj)


def _pin_problem(spec: ModelDeploymentSpec, lineage: list[Obj]) -> Problem:
    makers = [t for t in lineage if (t.get("status") or {}).get("modelVersion") == spec.version]
    if not makers:
        return Problem(VERSION_NOT_FOUND, f"no TrainingJob of model {spec.model} produced version {spec.version}", True)
    tj = makers[0]
    status = tj.get("status") or {}
    name = tj["metadata"]["name"]
    if _in_progress(tj):
        return Problem(VERSION_NOT_FOUND, f"version {spec.version} is not ready yet: TrainingJob {name} is {status.get('phase') or 'pending'}", False)
    gate = (status.get("gate") or {}).get("result", "Skipped")
    if status.get("phase") == "Succeeded" and gate in ("Passed", "Skipped") and not (status.get("artifact") or {}).get("sha256"):
        return Problem(ARTIFACT_MISSING, f"TrainingJob {name} records no artifact sha256 for {spec.version}", True)
    return Problem(VERSION_NOT_FOUND, f"version {spec.version} did not pass: TrainingJob {name} is {status.get('phase')}, gate {gate}", True)


# --- builders --------------------------------------------------------------------------------------------


def _arg(x: float | int) -> str:
    """A number as a command-line argument: ``5`` or ``2.5``, never ``5.0``."""
    return f"{x:g}" if isinstance(x, float) else str(x)


def _storage(spec: ModelDeploymentSpec, settings: Settings) -> PodStorage:
    return pod_storage(settings, store_read_only=True, feedback=spec.feedback.enabled, feedback_read_only=False)


def server_args(md: Obj, spec: ModelDeploymentSpec, version: str, sha256: str, settings: Settings,
                route: rollouts.Route | None = None, route_to: str | None = None) -> list[str]:
    """The ``serve`` command line of the server container; ``route``: the champion's router during a rollout.

    The router is set only once ``route_to`` (the challenger's address) is known.
    """
    s = spec.server
    storage = _storage(spec, settings)
    args = [
        "serve", "--store", storage.store_arg, "--namespace", md["metadata"].get("namespace", "default"),
        "--model", spec.model, "--version", version, "--sha256", sha256,
        "--host", "0.0.0.0", "--port", str(settings.server_port),
        "--max-batch-size", str(s.max_batch_size), "--max-batch-delay-ms", _arg(s.max_batch_delay_ms),
        "--max-body-bytes", str(s.max_body_bytes),
    ]
    for module in settings.allowed_estimator_modules:  # the types train was allowed to store, serve must load
        args += ["--allow-module", module]
    if grpc_enabled(spec, settings):
        args += ["--grpc-port", str(GRPC_PORT)]
    if not s.drift_sensor:
        args.append("--no-drift-sensor")
    if not spec.feedback.enabled:
        args.append("--no-feedback")
    else:
        if storage.feedback_arg:
            args += ["--feedback-dir", storage.feedback_arg]
        args += ["--feedback-keep-seconds", str(spec.feedback.keep_seconds), "--feedback-max-pending", str(spec.feedback.max_pending)]
    if route is not None and route_to is not None:
        args += ["--route-to", route_to, "--route-mode", route.mode]
        if route.mode == "canary":
            args += ["--route-weight", _arg(route.weight)]
    return args


def grpc_enabled(spec: ModelDeploymentSpec, settings: Settings) -> bool:
    """``spec.server.grpc`` when set, else the operator's default."""
    return settings.server_grpc if spec.server.grpc is None else spec.server.grpc


def _resources(spec: ModelDeploymentSpec) -> Obj | None:
    out = spec.resources.to_dict() if spec.resources else {}
    if spec.autoscaling and "cpu" not in (out.get("requests") or {}):
        out.setdefault("requests", {})["cpu"] = DEFAULT_CPU_REQUEST
    return out or None


def build_deployment(md: Obj, version: str, sha256: str, settings: Settings, route: rollouts.Route | None = None,
                     component: str = COMPONENT, route_to: str | None = None) -> Obj:
    """The apps/v1 Deployment serving one version; the pod template changes (and rolls) with the version.

    ``route``: the champion's router during a rollout (its args change, and its pods roll, at each step).
    ``component``: CHALLENGER_COMPONENT builds the challenger's Deployment (no autoscaler: the replicas the
    champion has at least).
    """
    spec = ModelDeploymentSpec.model_validate(md["spec"])
    pod_labels = {**_child_labels(md, spec.model, component)}
    if len(version) <= 63 and LABEL_VALUE.match(version):
        pod_labels[labels.VERSION] = version
    port = settings.server_port
    storage = _storage(spec, settings)
    volumes: list[Obj] = [*storage.volumes[:1], {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, *storage.volumes[1:]]
    mounts: list[Obj] = [*storage.mounts[:1], {"name": "tmp", "mountPath": "/tmp"}, *storage.mounts[1:]]
    env: list[Obj] = [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}, *storage.env]
    if is_s3(storage.store_arg):  # the verified copy of the version, on the pod's own disk
        volumes.append({"name": "models", "emptyDir": {"sizeLimit": MODEL_CACHE_SIZE}})
        mounts.append({"name": "models", "mountPath": MODEL_CACHE_PATH})
        env.append({"name": "MLOPS_MODEL_CACHE", "value": MODEL_CACHE_PATH})

    def probe(path: str, period: int) -> Obj:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3}

    container: Obj = {
        "name": "server",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": server_args(md, spec, version, sha256, settings, route, route_to),
        "env": env,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        + ([{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"}] if grpc_enabled(spec, settings) else []),
        "readinessProbe": probe("/v2/health/ready", 5),
        "livenessProbe": probe("/v2/health/live", 10),
        # exec, not the ``sleep`` action: that one needs Kubernetes 1.30, the chart supports 1.28.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_DELAY_SECONDS)]}}},
        "volumeMounts": mounts,
    }
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    pod_spec = restricted_pod_spec([container], volumes, settings.service_account,
                                   enableServiceLinks=False, terminationGracePeriodSeconds=TERMINATION_GRACE_SECONDS)
    dep_spec: Obj = {
        "selector": {"matchLabels": selector_labels(md, component)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    labels.VERSION: version,
                    SHA256: sha256,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(port),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
    }
    if component != COMPONENT:
        dep_spec = {"replicas": max(1, wanted_replicas(spec)), **dep_spec}
    elif spec.autoscaling is None:
        dep_spec = {"replicas": 1 if spec.replicas is None else spec.replicas, **dep_spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _child_meta(md, spec.model, component), "spec": dep_spec}


def build_service(md: Obj, settings: Settings | None = None, component: str = COMPONENT) -> Obj:
    """ClusterIP Service on port 80 in front of the serving pods (and 8081 for gRPC when it is on)."""
    model = md["spec"]["model"]
    ports: list[Obj] = [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}]
    if grpc_enabled(ModelDeploymentSpec.model_validate(md["spec"]), settings or Settings()):
        ports.append({"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _child_meta(md, model, component),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md, component),
            "ports": ports,
        },
    }


def build_hpa(md: Obj) -> Obj | None:
    """autoscaling/v2 HorizontalPodAutoscaler on CPU; None without ``spec.autoscaling``."""
    spec = ModelDeploymentSpec.model_validate(md["spec"])
    a = spec.autoscaling
    if a is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _child_meta(md, spec.model),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": md["metadata"]["name"]},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage}}}],
        },
    }


def wanted_replicas(spec: ModelDeploymentSpec) -> int:
    """Fewest replicas the spec asks for (the autoscaler's minimum under autoscaling)."""
    if spec.autoscaling:
        return spec.autoscaling.min_replicas
    return 1 if spec.replicas is None else spec.replicas


def build_pdb(md: Obj) -> Obj | None:
    """policy/v1 PodDisruptionBudget letting one pod go at a time; None when only one replica is wanted."""
    spec = ModelDeploymentSpec.model_validate(md["spec"])
    if wanted_replicas(spec) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _child_meta(md, spec.model),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(md)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def desired_children(md: Obj, version: str, sha256: str, settings: Settings, route: rollouts.Route | None = None,
                     challenger: tuple[str, str] | None = None, challenger_service: Obj | None = None) -> Observed:
    """Every child that should exist while ``version`` serves (absent ones are None); ``challenger``: a rollout's.

    ``challenger_service``: the challenger's Service as observed, whose address the champion's router needs.
    """
    route_to = challenger_url(md, settings, challenger_service) if challenger else None
    return Observed(
        deployment=stamp(build_deployment(md, version, sha256, settings, route, route_to=route_to)),
        service=stamp(build_service(md, settings)),
        hpa=stamp(build_hpa(md)),
        pdb=stamp(build_pdb(md)),
        challenger_deployment=stamp(build_deployment(md, challenger[0], challenger[1], settings, component=CHALLENGER_COMPONENT))
        if challenger else None,
        challenger_service=stamp(build_service(md, settings, CHALLENGER_COMPONENT)) if challenger else None,
    )


# --- comparing desired and observed ----------------------------------------------------------------------


def _digest(obj: Obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def stamp(obj: Obj | None) -> Obj | None:
    """The object with an annotation digesting its own content (what we apply, and so own)."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("annotations", {})[APPLIED] = _digest(obj)
    return out


def contains(observed: Any, desired: Any) -> bool:
    """Whether every field of ``desired`` is in ``observed`` with the same value.

    Fields others set or the API server defaults are ignored; lists of named
    objects (containers, volumes, ports, env) match by name, other lists by
    position and length; scalars compare as text too (``1`` and ``"1"``).
    """
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(k in observed and contains(observed[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return False
        if desired and all(isinstance(d, dict) and "name" in d for d in desired):
            by_name = {o.get("name"): o for o in observed if isinstance(o, dict)}
            return all(d["name"] in by_name and contains(by_name[d["name"]], d) for d in desired)
        return len(observed) == len(desired) and all(contains(o, d) for o, d in zip(observed, desired))
    return observed == desired or (not isinstance(desired, bool) and str(observed) == str(desired))


def needs_apply(desired: Obj, observed: Obj | None) -> bool:
    """Apply when the child is missing, when what we apply changed (a dropped field counts), or when someone changed our fields."""
    if observed is None:
        return True
    applied = ((observed.get("metadata") or {}).get("annotations") or {}).get(APPLIED)
    if applied != desired["metadata"]["annotations"][APPLIED]:
        return True
    return not contains(observed, desired)


def controlled_by(child: Obj, owner: Obj) -> bool:
    uid = owner["metadata"].get("uid")
    return any(r.get("controller") and r.get("uid") == uid for r in child.get("metadata", {}).get("ownerReferences") or [])


def serving_of(deployment: Obj | None) -> tuple[str, str] | None:
    """(version, sha256) the Deployment's pod template runs, read back from its annotations."""
    if not deployment:
        return None
    ann = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
    version, sha = ann.get(labels.VERSION), ann.get(SHA256)
    return (version, sha) if version and sha else None


# --- rollout state ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    done: bool
    stalled: bool
    message: str


def rollout_of(deployment: Obj, version: str, minimum: int | None = None) -> Rollout:
    """Whether the observed Deployment runs ``version`` on all its desired replicas, all ready (kubectl rollout status).

    ``minimum`` lowers the number of ready replicas that counts as done: under
    an autoscaler, a scale-up beyond its minimum is not a rollout, and all pods
    already run the version.
    """
    spec, st = deployment.get("spec") or {}, deployment.get("status") or {}
    gen = (deployment.get("metadata") or {}).get("generation")
    served = serving_of(deployment)
    if not served or served[0] != version:
        return Rollout(False, False, f"rolling out {version}")
    if gen is not None and (st.get("observedGeneration") or 0) < gen:
        return Rollout(False, False, f"rolling out {version}: the Deployment controller has not seen the change yet")
    for c in st.get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("status") == "False" and c.get("reason") == PROGRESS_DEADLINE:
            return Rollout(False, True, f"rollout of {version} made no progress in time ({c.get('message') or PROGRESS_DEADLINE})")
    want = spec.get("replicas", 1)
    floor = want if minimum is None else min(want, minimum)
    updated, total = st.get("updatedReplicas") or 0, st.get("replicas") or 0
    ready, available = st.get("readyReplicas") or 0, st.get("availableReplicas") or 0
    if updated < want or total > updated or ready < floor or available < floor:
        old = total - updated
        return Rollout(False, False, f"rolling out {version}: {updated}/{want} updated, {ready} ready"
                                     + (f", {old} old pod(s) left" if old > 0 else ""))
    return Rollout(True, False, f"{ready}/{want} replicas ready")


# --- the decision ----------------------------------------------------------------------------------------


def _invalid(md: Obj) -> str | None:
    errors = [str(e) for e in validate_object({k: v for k, v in md.items() if k != "status"})]
    name = md["metadata"]["name"]
    if not (len(name) <= 63 and DNS_1035.match(name)):
        errors.append(f"metadata.name: {name!r} must be a DNS-1035 label (lower-case letters, digits and '-', "
                      "starting with a letter, at most 63 characters): it names the Service")
    strategy = ((md.get("spec") or {}).get("rollout") or {}).get("strategy", "replace")
    if strategy != "replace" and len(name) + len(CHALLENGER_SUFFIX) > 63:
        errors.append(f"metadata.name: at most {63 - len(CHALLENGER_SUFFIX)} characters with spec.rollout.strategy "
                      f"{strategy}: {name}{CHALLENGER_SUFFIX} names the challenger's Service")
    return "; ".join(str(e) for e in errors)[:1000] if errors else None


def _history_reason(target: Target, spec: ModelDeploymentSpec, previous: str | None) -> str:
    if previous is None:
        return INITIAL
    if spec.version != LATEST:
        return PINNED
    if (target.training_job.get("metadata", {}).get("labels") or {}).get(labels.TRIGGERED_BY):
        return PROMOTED
    return NEW_VERSION


def decide(md: Obj, training_jobs: list[Obj], observed: Observed, settings: Settings, now: datetime) -> DeploymentDecision:
    """Level-based: the same inputs give the same answer, however often it is asked."""
    meta = md["metadata"]
    name, generation = meta["name"], meta.get("generation", 1)
    old: Obj = dict(md.get("status") or {})
    status: Obj = dict(old)
    status["observedGeneration"] = generation
    events: list[Event] = []
    served = serving_of(observed.deployment)
    previous = old.get("modelVersion") or next((h.get("version") for h in old.get("history") or []), None)

    spec: ModelDeploymentSpec | None = None
    problem: Problem | None = None
    target: Target | None = None
    invalid = _invalid(md)
    if invalid:
        problem = Problem(INVALID_SPEC, invalid, True)
    else:
        try:
            spec = ModelDeploymentSpec.model_validate(md["spec"])
        except ValidationError as exc:  # validate_object said fine; belt and braces
            problem = Problem(INVALID_SPEC, str(exc)[:1000], True)
    if spec is not None:
        foreign = [f"{res.kind} {child['metadata']['name']}" for res, child in observed.items() + observed.challenger_items()
                   if child is not None and not controlled_by(child, md)]
        if foreign:
            problem = Problem(NAME_CONFLICT, f"{' and '.join(foreign)} exist(s) and belong(s) to something else; "
                                             "delete or rename it, or rename this ModelDeployment", True)
        else:
            resolved = resolve(spec, training_jobs)
            if isinstance(resolved, Target):
                target = resolved
            else:
                problem = resolved

    # What the children should run, as (version, sha256): the resolved version, else whatever serves now.
    wanted: tuple[str, str] | None = (target.version, target.sha256) if target else served
    plan: rollouts.Plan | None = None
    if spec is not None and target is not None:
        # Shadow and canary: the new version is a challenger until live evidence promotes it (controllers/rollout).
        failed = ""
        ro = old.get("rollout") or {}
        if observed.challenger_deployment is not None and ro.get("challenger"):
            progress = rollout_of(observed.challenger_deployment, ro["challenger"])
            failed = f"challenger Deployment {name}{CHALLENGER_SUFFIX}: {progress.message}" if progress.stalled else ""
        plan = rollouts.plan(spec, old, served, (target.version, target.sha256), observed.readings, observed.live_pods,
                             now, failed)
        wanted = plan.champion
    apply: list[Obj] = []
    delete: list[Obj] = []
    desired = None
    if spec is not None and problem is not None and problem.reason == NAME_CONFLICT:
        wanted = None  # touch nothing that is not ours
    if spec is not None and wanted is not None:
        desired = desired_children(md, wanted[0], wanted[1], settings, plan.route if plan else None,
                                   plan.challenger if plan else None, observed.challenger_service)
        for (res, want), (_, have) in zip(desired.items() + desired.challenger_items(),
                                          observed.items() + observed.challenger_items()):
            if want is not None and needs_apply(want, have):
                apply.append(want)
            elif want is None and have is not None and controlled_by(have, md):
                delete.append(have)
    if plan is not None:
        if plan.state is not None:
            status["rollout"] = plan.state
        if plan.rejected:
            status["rejectedVersions"] = plan.rejected
        events.extend(plan.events)
    elif (old.get("rollout") or {}).get("phase") in rollouts.ACTIVE and wanted is not None:
        status["rollout"] = {**old["rollout"], "phase": "Superseded", "decision": "None", "reason": "Superseded",
                             "message": "ended unjudged: no version resolves any more; the champion keeps serving"}
        status["rollout"].pop("pods", None)

    if wanted is not None and spec is not None:
        status["modelVersion"] = wanted[0]
        status["url"] = url_of(md, settings)
        if target is not None and wanted[0] != previous:
            reason = f"{plan.promoted.capitalize()}Promoted" if plan and plan.promoted else _history_reason(target, spec, previous)
            entry = {"version": wanted[0], "time": timestamp(now), "reason": reason}
            limit = max(1, min(settings.history_limit, HISTORY_MAX))
            status["history"] = ([entry] + list(old.get("history") or []))[:limit]
            frm = f"{previous} -> {wanted[0]}" if previous else wanted[0]
            events.append(Event("Normal", "RolloutStarted", f"rolling out {frm} ({entry['reason']})"))
    if observed.deployment is not None:
        dst = observed.deployment.get("status") or {}
        status["replicas"] = dst.get("replicas") or 0
        status["readyReplicas"] = dst.get("readyReplicas") or 0
    else:
        status.pop("replicas", None)
        status.pop("readyReplicas", None)

    # Conditions.
    conds = old.get("conditions") or []
    dep_applied = any(o["kind"] == "Deployment" for o in apply)
    if wanted is not None and observed.deployment is not None and not dep_applied:
        floor = spec.autoscaling.min_replicas if spec is not None and spec.autoscaling else None
        rollout = rollout_of(observed.deployment, wanted[0], floor)
    elif wanted is not None:
        changing = served is None or served[0] != wanted[0]
        rollout = Rollout(False, False, f"rolling out {wanted[0]}" if changing else f"updating Deployment {name} ({wanted[0]})")
    else:
        rollout = None

    if problem is not None:
        msg = problem.message + (f"; still serving {served[0]}" if served else "")
        conds = summarize(conds, ready=False, reason=problem.reason, message=msg, reconciling=not problem.stalled,
                          stalled=problem.stalled, now=now, generation=generation)
    elif rollout is not None and rollout.stalled:
        msg = rollout.message + (f"; {served[0]} keeps serving on the old pods" if served else "")
        conds = summarize(conds, ready=False, reason=PROGRESS_DEADLINE, message=msg, reconciling=False, stalled=True,
                          now=now, generation=generation)
    elif rollout is not None and rollout.done:
        note = plan.note if plan is not None else ""
        conds = summarize(conds, ready=True, reason=READY, message=f"serving {wanted[0]} at {status['url']}: {rollout.message}{note}",  # type: ignore[index]
                          reconciling=False, stalled=False, now=now, generation=generation)
    elif rollout is not None:
        reason = ROLLING_OUT if served is None or served[0] != wanted[0] else UPDATING  # type: ignore[index]
        conds = summarize(conds, ready=False, reason=reason, message=rollout.message, reconciling=True, stalled=False,
                          now=now, generation=generation)
    if rollout is not None and rollout.stalled:
        conds = set_condition(conds, "Progressing", False, PROGRESS_DEADLINE, rollout.message, now, generation)
    elif rollout is not None and not rollout.done:
        conds = set_condition(conds, "Progressing", True, ROLLING_OUT, rollout.message, now, generation)
    elif rollout is not None:
        conds = set_condition(conds, "Progressing", False, "RolloutComplete", f"{wanted[0]} rolled out", now, generation)  # type: ignore[index]
    else:
        conds = set_condition(conds, "Progressing", False, "NothingToRollOut", "no version to serve yet", now, generation)
    conds = _approval_condition(conds, status.get("rollout"), now, generation)
    conds, skew = _library_condition(conds, target, settings, now, generation)
    if skew is not None and (get_condition(old.get("conditions"), LIBRARIES) or {}).get("status") != "False":
        events.append(skew)
    status["conditions"] = _ordered(conds)

    before, after = get_condition(old.get("conditions"), "Ready"), get_condition(conds, "Ready")
    assert after is not None
    if before is None or (before.get("status"), before.get("reason")) != (after["status"], after["reason"]):
        if after["status"] == "True":
            events.append(Event("Normal", READY, after["message"]))
        elif after["reason"] not in (ROLLING_OUT, UPDATING):
            stalled = get_condition(conds, "Stalled")
            kind = "Warning" if stalled and stalled["status"] == "True" else "Normal"
            events.append(Event(kind, after["reason"], after["message"]))
    requeue = rollouts.requeue_seconds(spec) if spec is not None and plan is not None and plan.active else None
    return DeploymentDecision(status=status, apply=apply, delete=delete, events=events, requeue_after=requeue)


AWAITING_APPROVAL = "AwaitingApproval"


def _approval_condition(conds: list[Obj], state: Obj | None, now: datetime, generation: int | None) -> list[Obj]:
    """``AwaitingApproval``: True while a manual rollout waits for spec.rollout.approvedVersion; False after one did."""
    waiting = bool(state) and state.get("phase") == AWAITING_APPROVAL  # type: ignore[union-attr]
    if waiting:
        return set_condition(conds, AWAITING_APPROVAL, True, AWAITING_APPROVAL,
                             f"{state['challenger']} passed its analysis; set spec.rollout.approvedVersion: {state['challenger']} "  # type: ignore[index]
                             "in Git to promote it", now, generation)
    if get_condition(conds, AWAITING_APPROVAL) is None:
        return conds
    return set_condition(conds, AWAITING_APPROVAL, False, (state or {}).get("phase") or "NoRollout",
                         (state or {}).get("message") or "no rollout waits for approval", now, generation)


LIBRARIES = "LibrariesMatch"


def _library_condition(conds: list[Obj], target: Target | None, settings: Settings, now: datetime,
                       generation: int | None) -> tuple[list[Obj], Event | None]:
    """Whether the version to serve was trained on the scikit-learn the servers run.

    A model saved by one scikit-learn and loaded by another may predict
    differently (scikit-learn warns with InconsistentVersionWarning; the server
    logs it and counts it in ``mlops_model_inconsistent_version``). Said here
    before any request, from the run's lineage and the image's own version.
    """
    trained = ((target.training_job.get("status") or {}).get("lineage") or {}).get("scikitLearn") if target else None
    serving = settings.serving_scikit_learn
    if not trained or not serving:
        return [c for c in conds if c.get("type") != LIBRARIES], None
    if trained == serving:
        return set_condition(conds, LIBRARIES, True, "SameScikitLearn", f"trained and served with scikit-learn {serving}",
                             now, generation), None
    msg = (f"{target.version} was trained with scikit-learn {trained} but the servers run {serving}: its predictions "  # type: ignore[union-attr]
           "may differ from the ones it was gated on; retrain it on this image, or serve it with the image that trained it")
    return set_condition(conds, LIBRARIES, False, "InconsistentVersion", msg, now, generation), Event("Warning", "InconsistentVersion", msg)


_ORDER = {"Ready": 0, "Progressing": 1, "Reconciling": 2, "Stalled": 3}


def _ordered(conds: list[Obj]) -> list[Obj]:
    return sorted(conds, key=lambda c: (_ORDER.get(c["type"], 9), c["type"]))


def model_deployments_for(training_job: Obj, model_deployments: list[Obj]) -> list[str]:
    """Names of the ModelDeployments a TrainingJob's change may concern: those of its lineage."""
    model = (training_job.get("spec") or {}).get("model")
    return sorted(m["metadata"]["name"] for m in model_deployments if (m.get("spec") or {}).get("model") == model)


__all__ = [
    "Observed", "Target", "Problem", "DeploymentDecision", "Rollout", "decide", "resolve", "build_deployment",
    "build_service", "build_hpa", "build_pdb", "desired_children", "needs_apply", "contains", "serving_of",
    "rollout_of", "url_of", "selector_labels", "server_args", "model_deployments_for",
]
