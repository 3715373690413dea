"""The work queue between watch events and reconciles, in the manner of client-go's workqueue.

Watch events only *add keys*; workers take them out. So:

- **de-duplicated**: a key waiting in the queue is queued once however many
  events name it; a key being reconciled is never reconciled twice at once —
  an event arriving meanwhile marks it dirty and it runs once more afterwards;
- **bounded, in lanes**: each kind has its own ``workers`` (a lane), so at
  most that many reconciles of a kind run at a time, whatever the number of
  objects; a slow one (a DriftPolicy scraping silent pods) holds a worker of
  its own lane, never the watch streams, the other keys or another kind;
- **rate-limited**: a failed reconcile comes back after an exponential,
  capped delay (:func:`~mlops_operator.controllers.reconcile.retry_delay`),
  for as long as it fails — a refusal that is lifted later is picked up
  within the cap, not at the next resync;
- **scheduled**: a reconcile may ask to be run again after a delay (a due
  drift check, a pod waiting on the scheduler) without any event;
- **news first**: keys from the periodic resync wait behind keys from events,
  retries and schedules, so a resync of thousands of objects never delays the
  TrainingJob someone has just applied.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Awaitable, Callable, Mapping

from ..controllers.cluster import Conflict, Refused
from ..controllers.reconcile import Result, retry_delay
from . import metrics
from .client import ApiError

log = logging.getLogger("mlops_operator")

Key = tuple[str, str, str]
"""(kind, namespace, name)"""
Reconcile = Callable[[str, str], Awaitable[Result]]
NEWS, BACKGROUND = 0, 1
"""Priorities in a lane: what happened (events, retries, schedules) before the periodic resync."""


class WorkQueue:
    def __init__(self, reconcilers: Mapping[str, Reconcile], *, workers: int = 4,
                 base_delay: float = 0.1, max_delay: float = 60.0) -> None:
        self.reconcilers = dict(reconcilers)
        self.workers = workers
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._lanes: dict[str, asyncio.PriorityQueue[tuple[int, int, Key]]] = {}
        self._order = itertools.count()
        self._queued: dict[Key, int] = {}
        """Keys waiting in a lane, with the priority they wait at."""
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -- adding ------------------------------------------------------------------
    def add(self, key: Key, *, background: bool = False) -> None:
        """Reconcile ``key`` soon; a no-op if it is already waiting (news moves a background key up)."""
        if key[0] not in self.reconcilers:
            raise KeyError(f"no reconcile registered for kind {key[0]}")
        if key in self._processing:
            self._dirty.add(key)
            return
        priority = BACKGROUND if background else NEWS
        if self._queued.get(key, BACKGROUND + 1) <= priority:
            return
        self._queued[key] = priority  # an older, lower entry of the key is skipped when it comes up
        self._lane(key[0]).put_nowait((priority, next(self._order), key))
        metrics.QUEUE_DEPTH.set(len(self._queued))

    def add_after(self, key: Key, delay: float) -> None:
        """Reconcile ``key`` in ``delay`` seconds (the earliest of several requests wins)."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        old = self._timers.get(key)
        if old is not None:
            if old[0] <= when:
                return
            old[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def failures(self, key: Key) -> int:
        """How many reconciles of ``key`` failed in a row."""
        return self._failures.get(key, 0)

    # -- running -----------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._work(kind), name=f"mlops-{kind}-worker-{i}")
                       for kind in self.reconcilers for i in range(self.workers)]

    async def stop(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def wait_idle(self, timeout: float) -> bool:
        """Until nothing is queued, running or scheduled within ``timeout``; False when time ran out (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (self._queued or self._processing or self._dirty or self._timers):
                return True
            await asyncio.sleep(0.02)
        return False

    async def _work(self, kind: str) -> None:
        queue = self._lane(kind)
        while True:
            priority, _, key = await queue.get()
            if self._queued.get(key) != priority:
                continue  # already taken at a higher priority
            del self._queued[key]
            self._processing.add(key)
            metrics.QUEUE_DEPTH.set(len(self._queued))
            try:
                await self._reconcile(key)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)

    async def _reconcile(self, key: Key) -> None:
        kind, namespace, name = key
        started = time.perf_counter()
        try:
            result = await self.reconcilers[kind](namespace, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure comes back, later and later
            self._retry(key, exc)
        else:
            self._failures.pop(key, None)
            metrics.RECONCILES.labels(kind, "ok").inc()
            metrics.observe_status(kind, namespace, name, result.status)
            if result.status is not None and result.requeue_after is not None:
                self.add_after(key, result.requeue_after)
        finally:
            metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)

    def _retry(self, key: Key, exc: Exception) -> None:
        kind, namespace, name = key
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = retry_delay(failures, self.base_delay, self.max_delay)
        outcome = "conflict" if isinstance(exc, Conflict) else "refused" if isinstance(exc, Refused) else "error"
        metrics.RECONCILES.labels(kind, outcome).inc()
        if outcome == "error":
            # A bug of ours (not the API server's answer) shows its traceback, once per run of failures.
            trace = failures == 1 and not isinstance(exc, (ApiError, OSError, TimeoutError))
            log.warning("reconcile of %s %s/%s failed (%d in a row), retrying in %.1fs: %s",
                        kind, namespace, name, failures, delay, exc, exc_info=exc if trace else None)
        else:  # the object's status already says it (refused) or nothing is wrong (conflict)
            log.info("reconcile of %s %s/%s: %s; again in %.1fs", kind, namespace, name, exc, delay)
        self.add_after(key, delay)

    # -- internals ---------------------------------------------------------------
    def _lane(self, kind: str) -> asyncio.PriorityQueue[tuple[int, int, Key]]:
        if kind not in self._lanes:
            self._lanes[kind] = asyncio.PriorityQueue()
        return self._lanes[kind]
