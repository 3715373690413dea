"""Leader election on the real API server: two `mlops-operator run --leader-elect` processes,
one leads; the leader is killed with SIGKILL while it reconciles a batch of TrainingJobs, the
other takes the Lease and finishes the work, and no TrainingJob gets a second Job; a standby
stops at once on SIGTERM, a leader whose Lease is taken exits 1 at once. Then the elector itself: a leader that cannot renew stops within its renew deadline, one that sees
another holder stops at once, and one whose event loop is stuck is stopped by its watchdog."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from mlops_operator.k8s.client import load_api_client
from mlops_operator.k8s.leader import JITTER, LeaderElector, LeadershipLost, LeaseApi, Timings
from tests.envtest.controlplane import free_ports
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OPERATOR = Path(sys.executable).parent / "mlops-operator"

# Short timings so the test runs in seconds; the same ratios as client-go's defaults (15 / 10 / 2).
TIMINGS = Timings(lease_duration=4.0, renew_deadline=3.0, retry_period=0.5)
LEASE_NAME = "mlops-operator"
# Time for a request or two on a busy test machine.
SLACK = 1.5
# The leader renewed at most a retry period before it died. A standby reads at most every
# retry × (1 + JITTER): one read to see the last renewal, the lease duration on its own clock, one
# read to take it.
TAKEOVER_BOUND = TIMINGS.lease_duration + 2 * TIMINGS.retry_period * (1 + JITTER) + SLACK
BATCH = 200  # enough that the kill lands mid-way: the operator reconciles 40 runs faster than a poll notices the first Job


class Replica:
    """One `mlops-operator run --leader-elect` process. Its Jobs carry its name in their image
    (MLOPS_IMAGE), so every Job tells which replica created it."""

    def __init__(self, name: str, kubeconfig: Path, namespace: str, logs: Path):
        self.name = name
        self.image = f"example.invalid/mlops-operator:{name}"
        self.health_port, self.metrics_port = free_ports(2)
        self.log_path = logs / f"{name}-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update({"POD_NAME": name, "POD_NAMESPACE": namespace, "MLOPS_IMAGE": self.image})
        argv = [str(OPERATOR), "run", f"--namespace={namespace}", f"--kubeconfig={kubeconfig}",
                f"--liveness=http://127.0.0.1:{self.health_port}/healthz", f"--metrics-port={self.metrics_port}",
                "--resync-seconds=3600", "--leader-elect",
                f"--leader-election-lease-duration={TIMINGS.lease_duration:g}",
                f"--leader-election-renew-deadline={TIMINGS.renew_deadline:g}",
                f"--leader-election-retry-period={TIMINGS.retry_period:g}"]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def holds(self, lease: client.V1Lease | None) -> bool:
        return bool(lease and (lease.spec.holder_identity or "").startswith(f"{self.name}_"))

    def log(self) -> str:
        return self.log_path.read_text()

    def healthz(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5) as resp:
                return json.loads(resp.read()) if resp.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None

    def leader_gauge(self) -> float | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        values = [float(line.split()[1]) for line in text.splitlines() if line.startswith("mlops_operator_leader ")]
        return values[0] if values else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"{self.name} did not stop within {timeout}s:\n{self.log()[-3000:]}") from None


@pytest.fixture
def replicas(control_plane, tmp_path):
    started: list[Replica] = []

    def start(name: str, namespace: str) -> Replica:
        replica = Replica(name, Path(control_plane.kubeconfig), namespace, tmp_path)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        if replica.proc.poll() is None:
            replica.proc.kill()
            replica.proc.wait(10)


def _training_jobs(names: list[str]) -> str:
    base = yaml.safe_load((ROOT / "examples" / "iris" / "trainingjob.yaml").read_text())
    return yaml.safe_dump_all([{**base, "metadata": {"name": n}} for n in names])


def test_the_standby_takes_over_a_killed_leader_and_nothing_is_duplicated(crds, namespace, replicas, record_property) -> None:
    """The measured times are recorded as properties (pytest --junitxml shows them)."""
    api = crds.api_client()
    coordination, batch, custom = client.CoordinationV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)

    def lease() -> client.V1Lease | None:
        try:
            return coordination.read_namespaced_lease(LEASE_NAME, namespace)
        except client.exceptions.ApiException as err:
            if err.status == 404:
                return None
            raise

    def jobs() -> dict[str, Any]:
        return {j.metadata.name: j for j in batch.list_namespaced_job(namespace).items}

    def training_jobs() -> list[dict[str, Any]]:
        return custom.list_namespaced_custom_object("mlops.dev", "v1alpha1", namespace, "trainingjobs")["items"]

    def diagnose(*rs: Replica) -> str:
        return "\n".join(f"--- {r.name} ---\n{r.log()[-3000:]}" for r in rs)

    a, b = replicas("replica-a", namespace), replicas("replica-b", namespace)
    first = wait_until(lambda: (lease_ := lease()) and lease_.spec.holder_identity and lease_, 60, 0.1, "a leader")
    leader, standby = (a, b) if a.holds(first) else (b, a)
    assert leader.holds(first), first.spec
    wait_until(lambda: f"is held by {first.spec.holder_identity}" in standby.log(), 60, 0.1, "the standby to stand by")
    # Both pass the liveness probe; the standby answers it itself, the leader through kopf.
    assert wait_until(standby.healthz, 30, 0.1, "the standby's liveness endpoint") == {"leader": False}
    assert wait_until(lambda: leader.healthz() is not None, 30, 0.1, "the leader's liveness endpoint")
    assert wait_until(lambda: leader.leader_gauge() == 1, 30, 0.1, "the leader's gauge") and standby.leader_gauge() == 0

    names = [f"tj-{i:03d}" for i in range(BATCH)]
    # The apply runs beside the poll: the leader starts on the first TrainingJobs while kubectl still sends the
    # rest, and on a loaded machine it finished all of them before a poll that waited for kubectl saw one Job.
    applied: list[BaseException | None] = []

    def apply() -> None:
        try:
            crds.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=_training_jobs(names))
            applied.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            applied.append(exc)

    applying = threading.Thread(target=apply, daemon=True)
    applying.start()
    # One Job is enough to know the leader is at work: ask for one (a full LIST of hundreds, parsed into
    # objects, takes longer than the leader needs to finish them all).
    wait_until(lambda: batch.list_namespaced_job(namespace, limit=1).items, 60, 0.02, "the leader's first Job")
    leader.proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    leader.proc.wait(10)
    last_renewal = lease().spec.renew_time.timestamp()
    left_jobs = jobs()
    left_statuses = [t for t in training_jobs() if t.get("status")]
    record_property("jobs_left_by_the_killed_leader", f"{len(left_jobs)}/{BATCH}")
    # Mid-reconcile: the dead leader left work undone (Jobs not created, or statuses not written).
    assert len(left_jobs) < BATCH or len(left_statuses) < BATCH, (len(left_jobs), len(left_statuses))
    # Only the leader acted while it led.
    assert {j.spec.template.spec.containers[0].image for j in left_jobs.values()} == {leader.image}

    taken = wait_until(lambda: (lease_ := lease()) and standby.holds(lease_) and lease_, TAKEOVER_BOUND + 10, 0.05,
                       "the standby to take the Lease")
    acquired = taken.spec.acquire_time.timestamp()
    record_property("takeover_after_sigkill_seconds", round(acquired - killed_at, 2))
    assert acquired - killed_at <= TAKEOVER_BOUND, (acquired - killed_at, diagnose(standby))
    # ...and not before the dead leader's last renewal had stood still for a whole lease duration.
    assert acquired - last_renewal >= TIMINGS.lease_duration, (acquired, last_renewal)
    assert taken.spec.lease_transitions == first.spec.lease_transitions + 1
    # The new leader's probe is now answered by kopf, on the same port.
    wait_until(lambda: (health := standby.healthz()) is not None and health != {"leader": False} and True, 30, 0.1,
               "kopf to answer the new leader's liveness probe")
    assert wait_until(lambda: standby.leader_gauge() == 1, 30, 0.1, "the new leader's gauge")

    applying.join(120)
    assert applied == [None], applied or "kubectl apply of the batch did not return"

    def all_reconciled() -> list[dict[str, Any]] | None:
        tjs = training_jobs()
        done = [t for t in tjs if t.get("status", {}).get("modelVersion") == f"{t['metadata']['name']}-g1"]
        return tjs if len(done) == BATCH else None

    try:
        tjs = wait_until(all_reconciled, 90, 0.25, "every TrainingJob reconciled by the new leader")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{diagnose(standby)}") from None
    final = jobs()
    assert sorted(final) == sorted(f"{n}-g1" for n in names), "exactly one Job per TrainingJob, named <tj>-g<generation>"
    uid = {t["metadata"]["name"]: t["metadata"]["uid"] for t in tjs}
    for name, job in final.items():
        (owner,) = job.metadata.owner_references
        assert owner.uid == uid[name.removesuffix("-g1")]
    # Jobs the dead leader made stayed as they were; the successor made the rest.
    images = {name: job.spec.template.spec.containers[0].image for name, job in final.items()}
    assert {n for n, image in images.items() if image == leader.image} == set(left_jobs)
    assert {n for n, image in images.items() if image == standby.image} == set(final) - set(left_jobs)

    # A TrainingJob created after the failover gets its Job from the new leader.
    crds.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=_training_jobs(["tj-after"]))
    job = wait_until(lambda: jobs().get("tj-after-g1"), 60, 0.1, "the new leader to create the Job of tj-after")
    assert job.spec.template.spec.containers[0].image == standby.image
    assert len(jobs()) == BATCH + 1

    # The killed replica comes back (as the kubelet would restart it) and stands by.
    back = replicas(leader.name, namespace)
    wait_until(lambda: f"is held by {taken.spec.holder_identity}" in back.log(), 60, 0.1, "the restarted replica to stand by")
    assert standby.holds(lease())

    # A clean shutdown hands the Lease over at once. Without the release the successor would wait
    # until the last renewal (at most a retry period before SIGTERM) had stood still a lease duration.
    terminated_at = time.time()
    assert standby.stop() == 0, diagnose(standby)
    assert "released Lease" in standby.log()
    handed = wait_until(lambda: (lease_ := lease()) and back.holds(lease_) and lease_, 30, 0.05, "the hand-over")
    handover = handed.spec.acquire_time.timestamp() - terminated_at
    record_property("handover_after_sigterm_seconds", round(handover, 2))
    assert handover < TIMINGS.lease_duration - TIMINGS.retry_period - SLACK / 3, handover
    assert back.stop() == 0, diagnose(back)
    assert "Traceback" not in a.log() + b.log() + back.log(), diagnose(a, b, back)


def test_a_standby_stops_at_once_on_sigterm(crds, namespace, replicas) -> None:
    """A Lease held by someone else: the replica stands by, answers its probe, and SIGTERM ends it
    promptly with status 0, leaving the Lease alone."""
    coordination = client.CoordinationV1Api(crds.api_client())
    coordination.create_namespaced_lease(namespace, {
        "metadata": {"name": LEASE_NAME},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                 "renewTime": datetime.now(timezone.utc)}})
    replica = replicas("replica-c", namespace)
    wait_until(lambda: "is held by someone-else" in replica.log(), 60, 0.1, "the replica to stand by")
    assert wait_until(replica.healthz, 30, 0.1, "the standby's liveness endpoint") == {"leader": False}
    started = time.monotonic()
    assert replica.stop(timeout=10) == 0, replica.log()[-3000:]
    assert time.monotonic() - started < 5
    assert coordination.read_namespaced_lease(LEASE_NAME, namespace).spec.holder_identity == "someone-else"
    assert "Traceback" not in replica.log()


def test_a_leader_that_loses_its_lease_exits_non_zero_at_once(crds, namespace, replicas) -> None:
    """The process side of losing: no graceful kopf shutdown, an exit status the kubelet restarts."""
    coordination = client.CoordinationV1Api(crds.api_client())
    replica = replicas("replica-d", namespace)
    wait_until(lambda: "leading: holding Lease" in replica.log(), 60, 0.1, "the replica to lead")
    crds.kubectl("patch", "lease", LEASE_NAME, "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"holderIdentity": "thief", "leaseDurationSeconds": 60}}))
    stolen = time.monotonic()
    try:
        code = replica.proc.wait(TIMINGS.renew_deadline)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after its Lease was taken:\n{replica.log()[-3000:]}") from None
    assert code == 1 and time.monotonic() - stolen < TIMINGS.retry_period + SLACK, (code, time.monotonic() - stolen)
    assert "stopped leading: Lease" in replica.log() and "held by thief" in replica.log()
    assert "Operator is stopping" not in replica.log(), "it must stop at once, not finish handlers first"
    assert coordination.read_namespaced_lease(LEASE_NAME, namespace).spec.holder_identity == "thief"


# --------------------------------------------------------------------------
# The elector in this process, on the real API server


class Loss:
    """What on_lost saw: when, why, and from which thread (the operator exits there instead)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.at = 0.0
        self.reason = ""
        self.thread = 0

    def __call__(self, reason: str) -> None:
        self.at, self.reason, self.thread = time.monotonic(), reason, threading.get_ident()
        self.event.set()


def _elector(api_client, namespace: str, identity: str) -> tuple[LeaderElector, Loss]:
    loss = Loss()
    return LeaderElector(LeaseApi(api_client, namespace, LEASE_NAME, TIMINGS.request_timeout), identity, TIMINGS, loss), loss


async def _lead_until_lost(elector: LeaderElector, act: Any) -> bool:
    """Run the elector with ``act`` as the leader's work; True when the work was cancelled."""
    cancelled = asyncio.Event()

    async def lead() -> None:
        try:
            await act()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        with pytest.raises(LeadershipLost):
            await asyncio.wait_for(elector.run(lead), TIMINGS.lease_duration * 5)
    finally:
        elector.api.close()
    return cancelled.is_set()


def _token_kubeconfig(control_plane, namespace: str, directory: Path) -> Path:
    """A kubeconfig whose only credential is a token of a service account allowed exactly the Lease verbs."""
    account = "candidate"
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": account, "namespace": namespace},
         "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": account, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]},
    ]
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    token = control_plane.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    cluster = config["clusters"][0]
    path = directory / "candidate.kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account}))
    path.chmod(0o600)
    return path


def test_a_leader_that_cannot_renew_stops_within_the_renew_deadline(control_plane, namespace, tmp_path) -> None:
    """The API server starts refusing the leader's renewals (its RoleBinding is deleted): it keeps
    trying, and stops leading once the renew deadline has passed since its last renewal, while the
    Lease would still be valid for anyone else."""
    elector, loss = _elector(load_api_client(str(_token_kubeconfig(control_plane, namespace, tmp_path))), namespace, "leader")
    revoked: list[float] = []

    async def revoke() -> None:
        await asyncio.sleep(TIMINGS.retry_period * 3)  # a few renewals succeed first
        assert elector.renewed_at > 0
        await asyncio.to_thread(control_plane.kubectl, "delete", "rolebinding", "candidate", "-n", namespace)
        revoked.append(time.monotonic())

    assert asyncio.run(_lead_until_lost(elector, revoke)), "the leader's work went on after it lost the Lease"
    assert loss.event.is_set() and "not renewed" in loss.reason, loss.reason
    stale = loss.at - elector.renewed_at
    assert TIMINGS.renew_deadline <= stale <= TIMINGS.renew_deadline + TIMINGS.retry_period + SLACK / 3, stale
    assert stale < TIMINGS.lease_duration, "stopped only after a standby could have taken over"
    assert loss.at - revoked[0] >= TIMINGS.renew_deadline - TIMINGS.retry_period - SLACK / 3
    lease = client.CoordinationV1Api(control_plane.api_client()).read_namespaced_lease(LEASE_NAME, namespace)
    assert lease.spec.holder_identity == "leader", "a lost leader must not release (it cannot anyway)"


def test_a_leader_that_sees_another_holder_stops_at_once(control_plane, namespace) -> None:
    """Someone else writes the Lease (a standby with a different view, a person): the leader's next
    renewal is refused with 409, it reads the new holder and stops, long before its renew deadline."""
    elector, loss = _elector(control_plane.api_client(), namespace, "leader")
    stolen: list[float] = []

    async def steal() -> None:
        await asyncio.sleep(TIMINGS.retry_period * 2)
        await asyncio.to_thread(control_plane.kubectl, "patch", "lease", LEASE_NAME, "-n", namespace, "--type=merge",
                                "-p", json.dumps({"spec": {"holderIdentity": "thief", "leaseDurationSeconds": 60}}))
        stolen.append(time.monotonic())

    assert asyncio.run(_lead_until_lost(elector, steal))
    assert "held by thief" in loss.reason, loss.reason
    assert loss.at - stolen[0] < TIMINGS.retry_period + SLACK
    assert loss.at - elector.renewed_at < TIMINGS.renew_deadline


def test_a_leader_whose_event_loop_is_stuck_is_stopped_by_its_watchdog(control_plane, namespace) -> None:
    """The leader's work blocks the event loop, so no renewal can run: the watchdog thread calls
    on_lost at the renew deadline, while the loop is still stuck."""
    elector, loss = _elector(control_plane.api_client(), namespace, "leader")
    stuck: list[float] = []

    async def block() -> None:
        stuck.append(time.monotonic())
        time.sleep(TIMINGS.renew_deadline + 2)  # deliberately blocking: the failure under test
        stuck.append(time.monotonic())

    loop_thread = threading.get_ident()
    assert asyncio.run(_lead_until_lost(elector, block))
    assert loss.thread != loop_thread, "the event loop was stuck; only the watchdog thread could notice"
    assert stuck[0] < loss.at < stuck[1], "on_lost came only after the loop was free again"
    assert TIMINGS.renew_deadline <= loss.at - elector.renewed_at <= TIMINGS.renew_deadline + TIMINGS.watchdog_interval + 0.5
