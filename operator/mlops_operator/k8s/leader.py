"""Leader election on a ``coordination.k8s.io/v1`` Lease, the way client-go's leaderelection does it.

kopf's peering is not leader election: an operator only pauses while it sees a
peer of higher priority, peers that start together both act until they notice
each other, and nothing fences a paused one. So several replicas of the
operator take turns through a Lease instead:

* A standby reads the Lease every ``retry_period`` (with a little jitter). It
  may take it when nobody holds it, or when the record has not changed for the
  Lease's ``leaseDurationSeconds`` *on the standby's own monotonic clock*
  (never by comparing its wall clock with the holder's ``renewTime``, so clock
  skew between nodes does not matter). Every write carries the
  ``resourceVersion`` it was decided from: of two replicas racing for the
  Lease, the API server lets one win and answers the other 409.
* The leader renews every ``retry_period``. If it has not renewed within
  ``renew_deadline`` of the start of its last successful renewal, or it sees
  another holder, it stops leading at once (``on_lost``; the operator exits
  non-zero and comes back as a standby). A watchdog thread checks the deadline
  too, so a stuck event loop cannot keep a deposed leader acting.
  ``renew_deadline < lease_duration`` is what makes this safe: the leader is
  gone before any standby may see the Lease as expired.
* On a clean shutdown the leader releases the Lease (no holder, duration 1 s),
  so its successor takes over at its next read instead of after a full lease.

Lease calls go through their own API client (own connection pool) and their
own worker thread, so renewals never queue behind the operator's other calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlsplit

from kubernetes import client as k8s
from prometheus_client import Gauge
from urllib3.exceptions import HTTPError

from ..controllers.cluster import Obj

log = logging.getLogger(__name__)

LEADER = Gauge("mlops_operator_leader", "1 while this operator replica holds the leader-election Lease (and reconciles), else 0.")

JITTER = 0.2
"""A standby waits retry_period × (1 + up to JITTER) between reads, so standbys started together spread out."""



# --------------------------------------------------------------------------
# Settings and pure decisions


@dataclass(frozen=True)
class Timings:
    """client-go's defaults: a dead leader is replaced after about 15 s, a partitioned one stops after 10 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problems(self) -> list[str]:
        """What makes these timings unsafe (client-go refuses the same), in flag names."""
        out = []
        if self.retry_period <= 0:
            out.append("--leader-election-retry-period must be > 0")
        if self.lease_duration < 1 or self.lease_duration != int(self.lease_duration):
            out.append("--leader-election-lease-duration must be a whole number of seconds ≥ 1 (the Lease stores whole seconds)")
        if self.renew_deadline + self.watchdog_interval >= self.lease_duration:
            out.append(f"--leader-election-renew-deadline must be shorter than --leader-election-lease-duration, by more "
                       f"than {self.watchdog_interval:g}s (the leader must stop before a standby may take over)")
        if self.renew_deadline <= (1 + JITTER) * self.retry_period:
            out.append(f"--leader-election-renew-deadline must be longer than {1 + JITTER:g} × --leader-election-retry-period "
                       "(room for more than one renewal)")
        return out

    @property
    def request_timeout(self) -> float:
        """Half the renew deadline: a hung request still leaves time for another try."""
        return self.renew_deadline / 2

    @property
    def watchdog_interval(self) -> float:
        return min(0.5, max(0.05, self.retry_period / 4))


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says, as leader election reads it."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str

    @classmethod
    def of(cls, lease: Obj) -> "LeaseRecord":
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        )


def micro_time(now: datetime) -> str:
    """Kubernetes' MicroTime format (RFC 3339 with microseconds, UTC)."""
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def held_spec(current: LeaseRecord | None, identity: str, now: datetime, duration: int) -> Obj:
    """The Lease spec that says ``identity`` holds it from ``now``: a renewal keeps the acquire
    time and the transition count, a takeover starts a new term and counts it."""
    stamp = micro_time(now)
    if current is not None and current.holder == identity:
        acquired, transitions = current.acquire_time or stamp, current.transitions
    else:
        acquired, transitions = stamp, (current.transitions + 1 if current is not None else 0)
    return {"holderIdentity": identity, "leaseDurationSeconds": duration, "acquireTime": acquired,
            "renewTime": stamp, "leaseTransitions": transitions}


def released_spec(current: LeaseRecord, now: datetime) -> Obj:
    """No holder and a one-second duration: any standby may take it at its next read."""
    stamp = micro_time(now)
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": stamp, "renewTime": stamp,
            "leaseTransitions": current.transitions}


class Observation:
    """When this replica last saw the Lease change, on its own monotonic clock.

    A holder that stopped renewing is recognised by its record standing still
    for the record's own duration, whatever the holder's clock says."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.since = 0.0

    def see(self, record: LeaseRecord, now: float) -> None:
        if record.resource_version != self.version:
            self.version, self.since = record.resource_version, now

    def may_take(self, record: LeaseRecord, identity: str, now: float) -> bool:
        if record.holder in ("", identity):
            return True
        return record.resource_version == self.version and now - self.since >= record.duration_seconds


def default_identity() -> str:
    """The pod's name (downward API POD_NAME) plus a random suffix: a restarted process is a new candidate."""
    return f"{os.environ.get('POD_NAME') or platform.node() or 'mlops-operator'}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    """The operator's own namespace (downward API POD_NAMESPACE), else the in-cluster account's, else default."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


# --------------------------------------------------------------------------
# The Lease over the REST API


class LeaseError(Exception):
    """The API server could not be asked, or answered something other than success or 409."""


class LeaseApi:
    """GET / POST / PUT of one Lease through an authenticated ``ApiClient``, in a thread of its own."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str, timeout: float):
        self.api = api
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leader-election")
        self._collection = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace, safe='')}/leases"

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def get(self) -> LeaseRecord | None:
        status, body = await self._call("GET", f"{self._collection}/{quote(self.name, safe='')}")
        if status == 404:
            return None
        return self._record(status, body)

    async def create(self, spec: Obj) -> LeaseRecord | None:
        """The new Lease; None when another replica created it first (409)."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
        status, out = await self._call("POST", self._collection, body)
        return None if status == 409 else self._record(status, out)

    async def replace(self, spec: Obj, resource_version: str) -> LeaseRecord | None:
        """The Lease after writing ``spec`` over the version it was decided from; None when that
        version is no longer current (409: another replica wrote first) or the Lease is gone (404)."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": resource_version},
                "spec": spec}
        status, out = await self._call("PUT", f"{self._collection}/{quote(self.name, safe='')}", body)
        return None if status in (404, 409) else self._record(status, out)

    def _record(self, status: int, body: Obj | None) -> LeaseRecord:
        if status >= 400 or body is None:
            raise LeaseError(f"Lease {self.where}: {status} {_message(body)}")
        return LeaseRecord.of(body)

    async def _call(self, method: str, path: str, body: Obj | None = None) -> tuple[int, Obj | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._request, method, path, body)

    def _request(self, method: str, path: str, body: Obj | None) -> tuple[int, Obj | None]:
        serialized = self.api.param_serialize(
            method=method, resource_path=path, body=body, auth_settings=["BearerToken"],
            header_params={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            response = self.api.call_api(*serialized, _request_timeout=self.timeout)
            response.read()
        except k8s.exceptions.ApiException as exc:
            return exc.status or 0, _json(exc.body)
        except (HTTPError, OSError) as exc:
            raise LeaseError(f"Lease {self.where}: {type(exc).__name__}: {exc}") from None
        return response.status, _json(response.data)


def _json(data: Any) -> Obj | None:
    try:
        out = json.loads(data) if data else None
    except (TypeError, ValueError):
        return {"message": str(data)[:300]}
    return out if isinstance(out, dict) else None


def _message(body: Obj | None) -> str:
    return str((body or {}).get("message") or "no answer")[:300]


# --------------------------------------------------------------------------
# The elector


class LeadershipLost(Exception):
    """This replica stopped holding the Lease while leading."""


class LeaderElector:
    """Runs a coroutine only while this replica holds the Lease.

    ``on_lost(reason)`` is called once, from the event loop or the watchdog
    thread, the moment leadership is lost; the operator's exits the process there."""

    def __init__(self, api: LeaseApi, identity: str, timings: Timings, on_lost: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.api = api
        self.identity = identity
        self.timings = timings
        self.on_lost = on_lost
        self.clock = clock
        self.observation = Observation()
        self.held: LeaseRecord | None = None  # the Lease as this replica last wrote it, while leading
        self.renewed_at = 0.0  # monotonic start of the last successful write
        self.lost = threading.Event()
        self._lost_once = threading.Lock()
        self._stop_watchdog = threading.Event()
        self.seen_holder = ""  # who held the Lease at this replica's last read or write

    @property
    def leading(self) -> bool:
        return self.held is not None and not self.lost.is_set()

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Wait for the Lease, then run ``lead()`` while renewing it; release it when ``lead`` returns.

        Raises :class:`LeadershipLost` (after ``on_lost``) when the Lease is lost first."""
        await self.acquire()
        watchdog = threading.Thread(target=self._watchdog, name="leader-election-watchdog", daemon=True)
        watchdog.start()
        renewing = asyncio.create_task(self._keep_renewing(), name="leader-election renewals")
        leading = asyncio.create_task(_as_coroutine(lead), name="leading")
        try:
            await asyncio.wait({renewing, leading}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when cancelled (a signal while leading): stop leading first, then hand over
            self._stop_watchdog.set()
            for task in (renewing, leading):
                if not task.done():
                    task.cancel()
            await asyncio.gather(renewing, leading, return_exceptions=True)
            await self.release()
        if self.lost.is_set():
            raise LeadershipLost(self.api.where)
        leading.result()  # the operator's own error, if it had one

    async def acquire(self) -> None:
        """Return once this replica holds the Lease; a standby meanwhile."""
        told: str | None = None
        while True:
            started = self.clock()
            try:
                if await self._attempt():
                    self.renewed_at = started
                    LEADER.set(1)
                    log.info("leading: holding Lease %s as %s (leaseTransitions %d)",
                             self.api.where, self.identity, self.held.transitions if self.held else 0)
                    return
                holder = self.seen_holder
                if holder and holder != told:  # once per holder ("" here only means a race just lost)
                    log.info("standing by: Lease %s is held by %s", self.api.where, holder)
                    told = holder
            except LeaseError as exc:
                if told != "<error>":
                    log.warning("standing by: cannot read or take Lease %s (%s); retrying", self.api.where, exc)
                    told = "<error>"
            await asyncio.sleep(self.timings.retry_period * (1 + random.random() * JITTER))

    async def release(self) -> None:
        """Hand the Lease over now (clean shutdown); a failure only means the successor waits a lease duration."""
        held, self.held = self.held, None
        LEADER.set(0)
        if held is None or self.lost.is_set():
            return
        try:
            done = await self.api.replace(released_spec(held, datetime.now(timezone.utc)), held.resource_version)
        except LeaseError as exc:
            done = None
            log.warning("could not release Lease %s (%s); a successor takes it when it expires", self.api.where, exc)
        if done is not None:
            log.info("released Lease %s", self.api.where)

    async def _read(self) -> LeaseRecord | None:
        record = await self.api.get()
        if record is not None:
            self.observation.see(record, self.clock())
            self.seen_holder = record.holder
        return record

    async def _write(self, record: LeaseRecord | None) -> LeaseRecord | None:
        """Take or renew the Lease over ``record``; None when someone else holds it or wrote first."""
        now = datetime.now(timezone.utc)
        duration = int(self.timings.lease_duration)
        if record is None:
            return await self.api.create(held_spec(None, self.identity, now, duration))
        if not self.observation.may_take(record, self.identity, self.clock()):
            return None
        return await self.api.replace(held_spec(record, self.identity, now, duration), record.resource_version)

    async def _attempt(self) -> bool:
        """One try to take or keep the Lease: True when this replica holds it afterwards."""
        cached = self.held
        written = await self._write(cached if cached is not None else await self._read())
        if written is None and cached is not None:
            # The version this leader wrote last is not current: maybe our own write whose answer
            # was lost, maybe another holder. Read, and decide again on what is really there.
            written = await self._write(await self._read())
        if written is not None:
            self.observation.see(written, self.clock())
            self.seen_holder = written.holder
        self.held = written
        return written is not None

    async def _keep_renewing(self) -> None:
        failing = False
        while not self.lost.is_set():
            await asyncio.sleep(self.timings.retry_period)
            if self.lost.is_set():
                return
            started = self.clock()
            try:
                if not await self._attempt():
                    self._lose(f"Lease {self.api.where} is now held by {self.seen_holder or 'nobody'}")
                    return
                self.renewed_at = started
                if failing:
                    log.info("renewing Lease %s again", self.api.where)
                failing = False
            except LeaseError as exc:
                if not failing:
                    log.warning("renewing Lease %s failed (%s); retrying until the renew deadline", self.api.where, exc)
                failing = True
            self._check_deadline()

    def _watchdog(self) -> None:
        while not self._stop_watchdog.wait(self.timings.watchdog_interval):
            if self._check_deadline():
                return

    def _check_deadline(self) -> bool:
        late = self.clock() - self.renewed_at
        if late >= self.timings.renew_deadline and not self.lost.is_set():
            self._lose(f"Lease {self.api.where} not renewed for {late:.1f}s (renew deadline {self.timings.renew_deadline:g}s)")
        return self.lost.is_set()

    def _lose(self, reason: str) -> None:
        with self._lost_once:
            if self.lost.is_set():
                return
            self.lost.set()
        LEADER.set(0)
        log.error("stopped leading: %s", reason)
        self.on_lost(reason)


async def _as_coroutine(lead: Callable[[], Awaitable[None]]) -> None:
    await lead()


# --------------------------------------------------------------------------
# `mlops-operator run --leader-elect`


class StandbyHealth:
    """Answers the liveness probe on kopf's endpoint while this replica stands by.

    A standby is alive as long as its event loop answers; kopf binds the same
    address once this replica leads, so the probe follows whichever runs."""

    def __init__(self, endpoint: str | None):
        self.endpoint = endpoint
        self._runner: Any = None

    async def start(self) -> None:
        if not self.endpoint:
            return
        from aiohttp import web  # kopf's own HTTP server library

        parts = urlsplit(self.endpoint)
        if parts.scheme != "http":
            raise ValueError(f"--liveness: only http:// endpoints are supported, not {self.endpoint!r}")

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"leader": False})

        app = web.Application()
        app.add_routes([web.get(parts.path or "/", healthz)])
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, parts.hostname or "127.0.0.1", parts.port or 80).start()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("leader election (several replicas, one of them reconciling)")
    group.add_argument("--leader-elect", action="store_true",
                       help="reconcile only while holding a coordination.k8s.io Lease; stand by otherwise")
    group.add_argument("--leader-election-namespace", default=None,
                       help="namespace of the Lease (default: $POD_NAMESPACE, else the pod's own namespace, else 'default')")
    group.add_argument("--leader-election-id", default="mlops-operator", help="name of the Lease (default: mlops-operator)")
    defaults = Timings()
    group.add_argument("--leader-election-lease-duration", type=float, default=defaults.lease_duration, metavar="SECONDS",
                       help=f"how long a standby waits on an unchanged Lease before taking it (default: {defaults.lease_duration:g})")
    group.add_argument("--leader-election-renew-deadline", type=float, default=defaults.renew_deadline, metavar="SECONDS",
                       help=f"a leader that could not renew for this long stops (default: {defaults.renew_deadline:g})")
    group.add_argument("--leader-election-retry-period", type=float, default=defaults.retry_period, metavar="SECONDS",
                       help=f"time between renewals and between a standby's reads (default: {defaults.retry_period:g})")


def timings_of(args: argparse.Namespace) -> Timings:
    return Timings(args.leader_election_lease_duration, args.leader_election_renew_deadline, args.leader_election_retry_period)


def exit_at_once(reason: str) -> None:
    """client-go's OnStoppedLeading: stop acting now, from any thread; the kubelet restarts the pod as a standby."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_LOST)


EXIT_LOST = 1


async def run_elected(api: k8s.ApiClient, args: argparse.Namespace, lead: Callable[[], Awaitable[None]],
                      on_lost: Callable[[str], None] = exit_at_once) -> None:
    """Stand by (answering the liveness probe) until this replica holds the Lease, then ``lead()``.

    SIGTERM or SIGINT while standing by ends at once; while leading, kopf stops
    gracefully and the Lease is released afterwards."""
    timings = timings_of(args)
    lease = LeaseApi(api, args.leader_election_namespace or default_namespace(), args.leader_election_id, timings.request_timeout)
    elector = LeaderElector(lease, default_identity(), timings, on_lost)
    health = StandbyHealth(args.liveness)
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)  # kopf installs its own once it runs

    async def lead_with_the_probe() -> None:
        await health.stop()  # hand the liveness port to kopf
        await lead()

    await health.start()
    log.info("candidate for Lease %s as %s", lease.where, elector.identity)
    try:
        await elector.run(lead_with_the_probe)
    except asyncio.CancelledError:
        log.info("stopped (Lease %s)", lease.where)
    finally:
        await health.stop()
        lease.close()
