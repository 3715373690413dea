"""The local kubelet and workload controllers: Jobs, Deployments and Services as processes and sockets.

It reads the very manifests the controllers built (container args, pod
template annotations, replicas) and writes back the status fields the
controllers read (Job conditions, pod termination messages, ready replicas),
so the controllers cannot tell it from a cluster. In-pod paths are mapped to
local folders; ports become free ports on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..controllers.cluster import DEPLOYMENTS, JOBS, PODS, SERVICES, Obj
from ..controllers.conditions import timestamp
from ..controllers.settings import Settings
from ..controllers.storage import MODEL_CACHE_PATH
from ..controllers.trainingjob import SPEC_ANNOTATION, SPEC_PATH
from .cluster import MemoryCluster
from .processes import Process, ProcessGroup, free_port, mlops_command

log = logging.getLogger("mlops_operator.local")


@dataclass(frozen=True)
class Paths:
    """Where in-pod paths live on this machine."""

    root: Path
    store_dir: Path | None = None
    """A ``file://`` store elsewhere than under the root."""

    @property
    def store(self) -> Path:
        return self.store_dir or self.root / "store"

    @property
    def models(self) -> Path:
        """Serving processes' copies of object-store versions (a pod's emptyDir)."""
        return self.root / "models"

    @property
    def feedback(self) -> Path:
        return self.root / "feedback"

    @property
    def work(self) -> Path:
        return self.root / "run"


def _rewrite(args: list[str], mapping: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        for inside, outside in mapping.items():
            if arg == inside or arg.startswith(inside + "/"):
                arg = outside + arg[len(inside):]
                break
        out.append(arg)
    return out


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def template_hash(template: Obj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class Executor:
    """Turns Job, Deployment and Service objects of a MemoryCluster into running things."""

    def __init__(self, cluster: MemoryCluster, settings: Settings, paths: Paths, processes: ProcessGroup):
        self.cluster = cluster
        self.settings = settings
        self.paths = paths
        self.processes = processes
        self.jobs: dict[tuple[str, str], asyncio.Task] = {}
        self.deployments: dict[tuple[str, str], "LocalDeployment"] = {}
        self.services: dict[tuple[str, str], "ServiceProxy"] = {}
        for p in (paths.store, paths.feedback, paths.work, paths.models):
            p.mkdir(parents=True, exist_ok=True)

    def mapping(self) -> dict[str, str]:
        return {self.settings.store_path: str(self.paths.store), self.settings.feedback_path: str(self.paths.feedback),
                MODEL_CACHE_PATH: str(self.paths.models)}

    def environment(self, container: Obj) -> dict[str, str]:
        """The container's literal env values, in-pod paths mapped (HOME and TMPDIR stay this machine's).

        Values from Secrets (``valueFrom``) have no local source: processes
        inherit this process's environment, ``AWS_*`` credentials included.
        """
        mapping = self.mapping()
        return {e["name"]: _rewrite([e["value"]], mapping)[0] for e in container.get("env") or []
                if "value" in e and e["name"] not in ("HOME", "TMPDIR")}

    # -- the sync entry point: called for every change and on every tick ----------
    async def sync(self) -> None:
        for job in self.cluster.list_now(JOBS):
            key = (job["metadata"]["namespace"], job["metadata"]["name"])
            if key not in self.jobs and not _job_finished(job):
                task = asyncio.get_running_loop().create_task(self._run_job(job))
                task.add_done_callback(_log_failure)
                self.jobs[key] = task
        live_svc = set()
        for svc in self.cluster.list_now(SERVICES):
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            live_svc.add(key)
            if key not in self.services:
                self.services[key] = ServiceProxy(self, svc)
                await self.services[key].start()
        for key in set(self.services) - live_svc:
            await self.services.pop(key).stop()
        live = set()
        for dep in self.cluster.list_now(DEPLOYMENTS):
            key = (dep["metadata"]["namespace"], dep["metadata"]["name"])
            live.add(key)
            if key not in self.deployments:
                self.deployments[key] = LocalDeployment(self, key)
            await self.deployments[key].sync(dep)
        for key in set(self.deployments) - live:
            await self.deployments.pop(key).stop()

    def local_url(self, namespace: str, url: str) -> str:
        """``http://<service>.<namespace>.svc...`` as this machine reaches it (its Service's proxy); else unchanged."""
        host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        parts = host.split(".")
        if len(parts) >= 3 and parts[2] == "svc":
            return self.service_address(parts[1], parts[0]) or url
        return url

    def service_address(self, namespace: str, name: str) -> str | None:
        proxy = self.services.get((namespace, name))
        return f"http://127.0.0.1:{proxy.port}" if proxy and proxy.port else None

    async def stop(self) -> None:
        for task in self.jobs.values():
            task.cancel()
        for dep in list(self.deployments.values()):
            await dep.stop()
        for svc in list(self.services.values()):
            await svc.stop()
        await self.processes.stop_all()

    # -- Jobs ---------------------------------------------------------------
    async def _run_job(self, job: Obj) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        spec = job["spec"]
        template = spec["template"]
        container = template["spec"]["containers"][0]
        work = self.paths.work / ns / name
        work.mkdir(parents=True, exist_ok=True)
        spec_file = work / "trainingjob.json"
        spec_file.write_text(template["metadata"]["annotations"][SPEC_ANNOTATION])
        fail_codes = {
            code
            for rule in (spec.get("podFailurePolicy") or {}).get("rules", [])
            if rule.get("action") == "FailJob"
            for code in (rule.get("onExitCodes") or {}).get("values", [])
        }
        started = timestamp(self.cluster.clock())
        failures = 0
        deadline = time.monotonic() + float(spec.get("activeDeadlineSeconds") or 3600)
        self._job_status(ns, name, {"active": 1, "startTime": started})
        for attempt in range(int(spec.get("backoffLimit", 0)) + 1):
            term_file = work / f"termination-{attempt}.log"
            term_file.unlink(missing_ok=True)
            mapping = {**self.mapping(), SPEC_PATH: str(spec_file), "/dev/termination-log": str(term_file)}
            args = _rewrite(list(container["args"]), mapping)
            pod_name = f"{name}-{attempt}"
            self._pod(ns, pod_name, template, job_name=name, phase="Running")
            proc = await self.processes.start(f"{ns}.{pod_name}", mlops_command(args), self.environment(container))
            try:
                code = await asyncio.wait_for(proc.proc.wait(), max(1.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await self.processes.stop(proc)
                self._pod_terminated(ns, pod_name, 137, "deadline exceeded")
                self._job_done(ns, name, started, failed=True, reason="DeadlineExceeded", failures=failures + 1)
                return
            self.processes.forget(proc)
            message = term_file.read_text()[-4096:] if term_file.exists() else _tail(proc.log_path)
            self._pod_terminated(ns, pod_name, code, message)
            if code == 0:
                self._job_done(ns, name, started, failed=False, reason="", failures=failures)
                return
            failures += 1
            if code in fail_codes:
                self._job_done(ns, name, started, failed=True, reason="PodFailurePolicy", failures=failures)
                return
        self._job_done(ns, name, started, failed=True, reason="BackoffLimitExceeded", failures=failures)

    def _job_status(self, ns: str, name: str, status: Obj) -> None:
        self.cluster.patch_status_now(JOBS, ns, name, status)

    def _job_done(self, ns: str, name: str, started: str, *, failed: bool, reason: str, failures: int) -> None:
        now = timestamp(self.cluster.clock())
        cond = {"type": "Failed" if failed else "Complete", "status": "True", "lastTransitionTime": now}
        if reason:
            cond.update(reason=reason, message=f"Job failed: {reason}")
        status = {"startTime": started, "failed": failures, "conditions": [cond]}
        if not failed:
            status.update(succeeded=1, completionTime=now)
        self._job_status(ns, name, status)

    def _pod(self, ns: str, name: str, template: Obj, *, job_name: str | None = None, phase: str, port: int | None = None) -> None:
        pod_labels = dict(template["metadata"].get("labels") or {})
        if job_name:
            pod_labels["job-name"] = job_name
        spec = copy.deepcopy(template["spec"])
        if port:
            spec["containers"][0]["ports"] = [{"name": "http", "containerPort": port}]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": pod_labels,
                         "annotations": dict(template["metadata"].get("annotations") or {})},
            "spec": spec,
        }
        self.cluster.create_now(pod)
        status: Obj = {"phase": phase, "podIP": "127.0.0.1"}
        if job_name and phase == "Running":  # the trainer process is started right after, as a kubelet reports it
            status["containerStatuses"] = [{"name": "trainer", "ready": True, "state": {"running": {"startedAt": timestamp(self.cluster.clock())}}}]
        self.cluster.patch_status_now(PODS, ns, name, status)

    def _pod_terminated(self, ns: str, name: str, code: int, message: str) -> None:
        term = {"exitCode": code, "finishedAt": timestamp(self.cluster.clock()), "message": message}
        self.cluster.patch_status_now(PODS, ns, name, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "podIP": "127.0.0.1",
            "containerStatuses": [{"name": "trainer", "ready": False, "state": {"terminated": term}}],
        })


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("local job runner failed", exc_info=task.exception())


def _job_finished(job: Obj) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _tail(path: Path, limit: int = 4096) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


@dataclass
class LocalPod:
    name: str
    hash: str
    port: int
    process: Process
    ready: bool = False
    restarts: int = 0
    next_start: float = 0.0
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


class LocalDeployment:
    """N serve processes for one Deployment: surge new before removing old, restart crashes with back-off."""

    READY_TIMEOUT = 120.0

    def __init__(self, executor: Executor, key: tuple[str, str]):
        self.executor = executor
        self.key = key
        self.pods: list[LocalPod] = []
        self._counter = 0
        self._lock = asyncio.Lock()
        self._probes: set[asyncio.Task] = set()

    async def sync(self, dep: Obj) -> None:
        async with self._lock:
            await self._sync(dep)

    async def _sync(self, dep: Obj) -> None:
        ns, name = self.key
        template = dep["spec"]["template"]
        want_hash = template_hash(template)
        replicas = dep["spec"].get("replicas", 1) if dep["spec"].get("replicas") is not None else 1
        loop = asyncio.get_running_loop()
        for pod in list(self.pods):  # crashed: restart after back-off
            if not pod.process.running:
                pod.ready = False
                if pod.hash != want_hash:
                    await self._remove(pod)
                elif loop.time() >= pod.next_start:
                    pod.restarts += 1
                    pod.next_start = loop.time() + min(30.0, 2.0 ** pod.restarts)
                    log.warning("%s/%s: serving process exited with %s; restarting", ns, pod.name, pod.process.proc.returncode)
                    pod.process = await self.executor.processes.start(f"{ns}.{pod.name}.{pod.restarts}", mlops_command(pod.args), pod.env)
                    self._probe(pod)
        current = [p for p in self.pods if p.hash == want_hash]
        old = [p for p in self.pods if p.hash != want_hash]
        for _ in range(max(0, replicas - len(current))):
            current.append(await self._start(template, want_hash))
        await self._remove(*current[replicas:])
        ready_new = sum(1 for p in current[:replicas] if p.ready)
        if old and ready_new >= replicas:
            await self._remove(*old)  # the new version serves: now the old one may go
        self._write_status(dep, want_hash)

    async def _start(self, template: Obj, want_hash: str) -> LocalPod:
        ns, name = self.key
        self._counter += 1
        pod_name = f"{name}-{want_hash[:6]}-{self._counter}"
        port = free_port()
        container = template["spec"]["containers"][0]
        args = _rewrite(list(container["args"]), self.executor.mapping())
        args = _set_flag(_set_flag(args, "--host", "127.0.0.1"), "--port", str(port))
        if "--route-to" in args:  # a rollout's router: the challenger's Service is a local proxy here
            args = _set_flag(args, "--route-to", self.executor.local_url(ns, args[args.index("--route-to") + 1]))
        env = self.executor.environment(container)
        proc = await self.executor.processes.start(f"{ns}.{pod_name}", mlops_command(args), env)
        pod = LocalPod(pod_name, want_hash, port, proc, args=args, env=env)
        self.pods.append(pod)
        self.executor._pod(ns, pod_name, template, phase="Pending", port=port)
        self._probe(pod)
        return pod

    def _probe(self, pod: LocalPod) -> None:
        task = asyncio.get_running_loop().create_task(self._wait_ready(pod))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _wait_ready(self, pod: LocalPod) -> None:
        url = f"http://127.0.0.1:{pod.port}/v2/health/ready"
        deadline = asyncio.get_running_loop().time() + self.READY_TIMEOUT
        while pod.process.running and asyncio.get_running_loop().time() < deadline:
            if await asyncio.to_thread(_http_ok, url):
                pod.ready = True
                ns, _ = self.key
                self.executor.cluster.patch_status_now(PODS, ns, pod.name, {
                    "phase": "Running", "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [{"name": "server", "ready": True, "restartCount": pod.restarts, "state": {"running": {}}}],
                })
                dep = self.executor.cluster.get_now(DEPLOYMENTS, ns, self.key[1])
                if dep:
                    await self.sync(dep)
                return
            await asyncio.sleep(0.2)

    async def _remove(self, *pods: LocalPod) -> None:
        """Take every one of ``pods`` out of its Services first, then stop them together.

        One by one, the second would still take new connections while the first drains
        (up to its grace period), and a request sent on such a connection would meet a
        process that is shutting down.
        """
        for pod in pods:
            pod.ready = False
            if pod in self.pods:
                self.pods.remove(pod)
        await asyncio.gather(*(self.executor.processes.stop(pod.process, grace=10.0) for pod in pods))
        for pod in pods:
            await self.executor.cluster.delete(PODS, self.key[0], pod.name)

    def _write_status(self, dep: Obj, want_hash: str) -> None:
        current = [p for p in self.pods if p.hash == want_hash]
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": len(self.pods),
            "updatedReplicas": len(current),
            "readyReplicas": sum(1 for p in self.pods if p.ready),
            "availableReplicas": sum(1 for p in self.pods if p.ready),
        }
        self.executor.cluster.patch_status_now(DEPLOYMENTS, self.key[0], self.key[1], status)

    def ready_ports(self) -> list[int]:
        return [p.port for p in self.pods if p.ready and p.process.running]

    async def stop(self) -> None:
        for task in list(self._probes):
            task.cancel()
        await self._remove(*self.pods)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:  # noqa: S310 - loopback only
            return r.status == 200
    except OSError:
        return False


class ServiceProxy:
    """A Service: one 127.0.0.1 port, connections spread round-robin over the ready pods it selects."""

    def __init__(self, executor: Executor, svc: Obj):
        self.executor = executor
        self.svc = svc
        self.port: int | None = None
        self._server: asyncio.base_events.Server | None = None
        self._next = 0

    def _backends(self) -> list[int]:
        ns = self.svc["metadata"]["namespace"]
        selector = self.svc["spec"].get("selector") or {}
        ports = []
        for dep in self.executor.deployments.values():
            obj = self.executor.cluster.get_now(DEPLOYMENTS, *dep.key)
            labels = ((obj or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("labels")) or {}
            if dep.key[0] == ns and selector and all(labels.get(k) == v for k, v in selector.items()):
                ports += dep.ready_ports()
        return ports

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backends = self._backends()
        if not backends:
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 33\r\nconnection: close\r\n\r\n"
                         b'{"error": "no ready serving pod"}')
            await writer.drain()
            writer.close()
            return
        port = backends[self._next % len(backends)]
        self._next += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)

    async def stop(self) -> None:
        if self._server:
            self._server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
