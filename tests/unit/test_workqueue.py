"""The work queue between watch events and reconciles: de-duplicated, bounded, backing off, scheduled."""

from __future__ import annotations

import asyncio
import time

import pytest

from mlops_operator.controllers.cluster import Refused
from mlops_operator.controllers.reconcile import Result, retry_delay
from mlops_operator.k8s.queue import WorkQueue

KEY = ("TrainingJob", "ns", "a")


def test_the_back_off_schedule_doubles_up_to_its_cap() -> None:
    assert [retry_delay(n, 0.1, 60.0) for n in range(1, 8)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4])
    assert retry_delay(30, 0.1, 60.0) == 60.0 and retry_delay(0, 0.1, 60.0) == 0.1


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_events_for_a_queued_key_make_one_reconcile() -> None:
    calls: list[str] = []

    async def reconcile(ns: str, name: str) -> Result:
        calls.append(name)
        return Result({})

    async def scenario() -> None:
        queue = WorkQueue({"TrainingJob": reconcile})
        for _ in range(50):  # a burst of watch events (status writes, a Job's updates) before any worker runs
            queue.add(KEY)
        queue.start()
        assert await queue.wait_idle(5)
        await queue.stop()

    run(scenario)
    assert calls == ["a"]


def test_an_event_during_a_reconcile_runs_it_once_more_never_concurrently() -> None:
    running, overlaps, calls = 0, 0, 0
    started, release = asyncio.Event(), asyncio.Event()

    async def reconcile(ns: str, name: str) -> Result:
        nonlocal running, overlaps, calls
        calls += 1
        running += 1
        overlaps = max(overlaps, running)
        if calls == 1:
            started.set()
            await release.wait()
        running -= 1
        return Result({})

    async def scenario() -> None:
        queue = WorkQueue({"TrainingJob": reconcile}, workers=4)
        queue.start()
        queue.add(KEY)
        await started.wait()
        for _ in range(10):  # the object changed while it was being reconciled
            queue.add(KEY)
        release.set()
        assert await queue.wait_idle(5)
        await queue.stop()

    run(scenario)
    assert calls == 2 and overlaps == 1


def test_slow_reconciles_of_one_kind_hold_their_own_lane_not_the_others() -> None:
    done: dict[str, float] = {}
    t0 = time.monotonic()

    async def reconcile(ns: str, name: str) -> Result:
        if name.startswith("slow"):
            await asyncio.sleep(2.0)  # a DriftPolicy scraping a silent pod
        done[name] = time.monotonic() - t0
        return Result({})

    async def scenario() -> None:
        queue = WorkQueue({"DriftPolicy": reconcile, "TrainingJob": reconcile}, workers=2)
        queue.start()
        for i in range(6):  # more slow ones than the lane has workers
            queue.add(("DriftPolicy", "ns", f"slow-{i}"))
        for i in range(20):
            queue.add(("TrainingJob", "ns", f"tj-{i}"))
        assert await queue.wait_idle(10)
        await queue.stop()

    run(scenario)
    slow = sorted(v for k, v in done.items() if k.startswith("slow"))
    assert max(v for k, v in done.items() if k.startswith("tj")) < 1.5 < 2.0 <= slow[0]
    assert slow[-1] > 5.5, "two at a time: the lane is bounded"


def test_a_failing_reconcile_is_retried_with_back_off_until_it_succeeds() -> None:
    attempts: list[float] = []

    async def reconcile(ns: str, name: str) -> Result:
        attempts.append(time.monotonic())
        if len(attempts) < 6:  # more failures than the old runner's two tries
            raise Refused("Job", "a-g1", 403, "admission policy denies it")
        return Result({})

    async def scenario() -> None:
        queue = WorkQueue({"TrainingJob": reconcile}, base_delay=0.05, max_delay=0.4)
        queue.start()
        queue.add(KEY)
        assert await queue.wait_idle(10)
        assert queue.failures(KEY) == 0, "success resets the count"
        await queue.stop()

    run(scenario)
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(attempts) == 6
    for gap, want in zip(gaps, [0.05, 0.1, 0.2, 0.4, 0.4]):  # doubling, then capped
        assert want * 0.9 <= gap < want + 1.0  # never sooner than the schedule; later only by the machine's load


def test_a_reconcile_can_ask_to_run_again_later() -> None:
    calls: list[float] = []

    async def reconcile(ns: str, name: str) -> Result:
        calls.append(time.monotonic())
        return Result({}, requeue_after=0.3 if len(calls) < 3 else None)

    async def scenario() -> None:
        queue = WorkQueue({"DriftPolicy": reconcile})
        queue.start()
        queue.add(("DriftPolicy", "ns", "p"))
        assert await queue.wait_idle(5)
        await queue.stop()

    run(scenario)
    assert len(calls) == 3 and all(0.27 <= b - a < 1.5 for a, b in zip(calls, calls[1:]))


def test_an_object_that_is_gone_is_not_scheduled_again() -> None:
    calls = 0

    async def reconcile(ns: str, name: str) -> Result:
        nonlocal calls
        calls += 1
        return Result(None, requeue_after=0.1)

    async def scenario() -> None:
        queue = WorkQueue({"DriftPolicy": reconcile})
        queue.start()
        queue.add(("DriftPolicy", "ns", "gone"))
        assert await queue.wait_idle(2)
        await queue.stop()

    run(scenario)
    assert calls == 1


def test_an_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        WorkQueue({}).add(("Pod", "ns", "x"))


def test_a_resync_of_many_objects_waits_behind_news() -> None:
    order: list[str] = []

    async def reconcile(ns: str, name: str) -> Result:
        order.append(name)
        await asyncio.sleep(0.01)
        return Result({})

    async def scenario() -> None:
        queue = WorkQueue({"TrainingJob": reconcile}, workers=1)
        for i in range(100):  # the periodic resync queues every object
            queue.add(("TrainingJob", "ns", f"old-{i}"), background=True)
        queue.add(("TrainingJob", "ns", "just-applied"))
        queue.add(("TrainingJob", "ns", "old-99"))  # an event for an object the resync queued too: news now
        queue.start()
        assert await queue.wait_idle(10)
        await queue.stop()

    run(scenario)
    assert order[:2] == ["just-applied", "old-99"] and len(order) == 101 and order.count("old-99") == 1
