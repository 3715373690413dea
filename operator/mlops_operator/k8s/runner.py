"""Serialised, retried reconciles: one at a time per object, backing off on errors.

kopf already serialises events per watched object, but a TrainingJob is also
reconciled from its Job's events; a lock per (kind, namespace, name) keeps
those from racing. A failed reconcile is retried with exponential back-off,
a bounded number of times; the periodic resync catches anything beyond.
Each reconcile returns the status it wrote (None once the object is gone),
which goes to the operator's metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any, Awaitable, Callable, Mapping

from . import metrics

log = logging.getLogger("mlops_operator")

Reconcile = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]


class Runner:
    def __init__(self, *, max_attempts: int = 8, base_delay: float = 0.5, max_delay: float = 60.0):
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._retries: dict[tuple[str, str, str], asyncio.Task] = {}
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    async def run(self, kind: str, fn: Reconcile, namespace: str, name: str, attempt: int = 1) -> None:
        key = (kind, namespace, name)
        started = time.perf_counter()
        try:
            async with self._locks[key]:
                status = await fn(namespace, name)
                metrics.observe_status(kind, namespace, name, status)
            metrics.RECONCILES.labels(kind, "ok").inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then left to the resync
            metrics.RECONCILES.labels(kind, "error").inc()
            if attempt >= self.max_attempts:
                log.error("reconcile of %s %s/%s failed %d times, waiting for the next resync: %s", kind, namespace, name, attempt, exc)
                return
            delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
            log.warning("reconcile of %s %s/%s failed (attempt %d), retrying in %.1fs: %s", kind, namespace, name, attempt, delay, exc)
            self._schedule(key, fn, delay, attempt + 1)
        finally:
            metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)

    def _schedule(self, key: tuple[str, str, str], fn: Reconcile, delay: float, attempt: int) -> None:
        old = self._retries.get(key)
        if old and not old.done():
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.run(key[0], fn, key[1], key[2], attempt)

        self._retries[key] = asyncio.get_running_loop().create_task(later())

    def cancel(self) -> None:
        for task in self._retries.values():
            task.cancel()
