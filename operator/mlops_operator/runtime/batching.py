"""Adaptive batching: concurrent requests share one ``predict`` call.

Requests queue up while the model is busy; when it is free the worker takes
everything queued, up to ``max_batch_size`` rows, concatenates the rows and
runs one predict in a worker thread, so the event loop keeps accepting and
parsing meanwhile.  A request with more rows than ``max_batch_size`` runs
alone.  When there is evidence of concurrency (the previous batch held more
than one request, or more than one is queued) the worker waits up to
``max_batch_delay`` after the oldest request arrived for the batch to fill;
a lone sequential client never waits.

A batch whose predict raises is retried request by request, so one request
the model refuses cannot fail the others; its error is delivered to it alone.

The queue is bounded in rows (``max_queue_rows``): a request that would take
it past the bound is refused at once with :class:`Overloaded` (the server
answers 503 with ``Retry-After``) instead of waiting behind work that already
fills the next batches, so the latency of the requests admitted stays bounded
by a few predict calls however much traffic arrives.  An empty queue admits
any request, so one larger than the bound still runs, alone.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

PredictFn = Callable[[np.ndarray, bool], tuple[np.ndarray, "np.ndarray | None"]]
AfterFn = Callable[[np.ndarray, np.ndarray, int, int, float], None]


class ModelError(Exception):
    """The model raised on a request's rows; ``cause`` is what it raised."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class Overloaded(Exception):
    """The queue is full: the request was not admitted."""


def admits(queued_rows: int, rows: int, max_queue_rows: int) -> bool:
    """Whether a request of ``rows`` rows joins a queue already holding ``queued_rows``."""
    return queued_rows == 0 or queued_rows + rows <= max_queue_rows


@dataclass
class _Item:
    rows: np.ndarray
    proba: bool
    future: asyncio.Future[Any]
    t: float = field(default_factory=time.monotonic)


class Batcher:
    """Queue requests, run them through ``predict`` in batches on one worker thread.

    ``predict(rows, want_proba)`` returns ``(predictions, probabilities or None)``.
    ``after(rows, predictions, n_requests, n_rows, seconds)`` runs in the worker
    thread after each predict call, before the results are handed back (metrics, drift sensor).
    """

    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int = 64,
        max_batch_delay: float = 0.002,
        after: AfterFn | None = None,
        max_queue_rows: int | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.max_queue_rows = 2 * max_batch_size if max_queue_rows is None else max_queue_rows
        if self.max_queue_rows < 1:
            raise ValueError("max_queue_rows must be at least 1")
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max(0.0, max_batch_delay)
        self.after = after
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._wake: asyncio.Future[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_requests = 1
        self.batches = 0
        self.shed = 0
        self._mean_rows = 1.0

    # -- public ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def full(self) -> bool:
        """A request of the usual size would not fit now: callers may refuse it before parsing it.

        Parsing and validating a refused request costs the event loop (and the
        CPU the model shares) nearly as much as an admitted one; the usual size
        is the running mean of the rows of admitted requests.
        """
        return not admits(self._queued_rows, max(1, round(self._mean_rows)), self.max_queue_rows)

    def check_room(self) -> None:
        """Raise :class:`Overloaded` (and count it) when :attr:`full`."""
        if self.full:
            self.shed += 1
            raise Overloaded(f"{self._queued_rows} rows queued, at most {self.max_queue_rows}")

    def submit(self, rows: np.ndarray, proba: bool = False) -> asyncio.Future[Any]:
        """Queue rows; the future resolves to ``(predictions, probabilities)`` for them.

        Raises :class:`Overloaded` when the queue has no room for them.
        """
        if self._closing:
            raise RuntimeError("batcher is closed")
        if not admits(self._queued_rows, rows.shape[0], self.max_queue_rows):
            self.shed += 1
            raise Overloaded(f"{self._queued_rows} rows queued, at most {self.max_queue_rows}")
        fut = asyncio.get_running_loop().create_future()
        self._mean_rows += 0.1 * (rows.shape[0] - self._mean_rows)
        self._queue.append(_Item(rows, proba, fut))
        self._queued_rows += rows.shape[0]
        w = self._wake
        if w is not None and not w.done() and (
            self._queued_rows >= self.max_batch_size or not self._waiting_for_more
        ):
            w.set_result(None)
        return fut

    async def close(self) -> None:
        """Finish what is queued, then stop the worker thread."""
        self._closing = True
        w = self._wake
        if w is not None and not w.done():
            w.set_result(None)
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def run_sync(self, rows: np.ndarray, proba: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Predict outside the batching loop (warm-up)."""
        return self.predict(rows, proba)

    # -- worker ------------------------------------------------------------

    _waiting_for_more = False

    async def _sleep_until(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._wake = fut = loop.create_future()
        handle = None
        if deadline is not None:
            handle = loop.call_later(max(0.0, deadline - time.monotonic()), _resolve, fut)
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            self._wake = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._waiting_for_more = False
                await self._sleep_until(None)
                continue
            if (
                self.max_batch_delay > 0
                and not self._closing
                and self._queued_rows < self.max_batch_size
                and (self._last_requests > 1 or len(self._queue) > 1)
            ):
                deadline = self._queue[0].t + self.max_batch_delay
                if deadline > time.monotonic():
                    self._waiting_for_more = True
                    await self._sleep_until(deadline)
                    self._waiting_for_more = False
            batch = self._take()
            self._last_requests = len(batch)
            try:
                await loop.run_in_executor(self._executor, self._work, loop, batch)
            except Exception as exc:  # the worker itself failed: never leave a request hanging
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(ModelError(exc))

    def _take(self) -> list[_Item]:
        batch = [self._queue.popleft()]
        rows = batch[0].rows.shape[0]
        while self._queue and rows + self._queue[0].rows.shape[0] <= self.max_batch_size:
            it = self._queue.popleft()
            rows += it.rows.shape[0]
            batch.append(it)
        self._queued_rows -= rows
        return batch

    def _work(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        """Runs in the worker thread."""
        t0 = time.perf_counter()
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([it.rows for it in batch])
        want_proba = any(it.proba for it in batch)
        results: list[Any]
        try:
            preds, proba = self.predict(rows, want_proba)
            results = []
            start = 0
            for it in batch:
                end = start + it.rows.shape[0]
                results.append((preds[start:end], None if proba is None or not it.proba else proba[start:end]))
                start = end
            ok = True
        except Exception:
            ok = False
            results = []
            for it in batch:  # isolate the request the model refuses
                try:
                    results.append(self.predict(it.rows, it.proba))
                except Exception as exc:
                    results.append(ModelError(exc))
        seconds = time.perf_counter() - t0
        self.batches += 1
        # Count before answering, so a scrape after a response always includes it.
        if self.after is not None:
            try:
                if ok:
                    self.after(rows, preds, len(batch), rows.shape[0], seconds)
                else:
                    for it, res in zip(batch, results):
                        if not isinstance(res, Exception):
                            self.after(it.rows, res[0], 1, it.rows.shape[0], seconds / len(batch))
            except Exception as exc:  # metrics must never cost an answer
                print(f"warning: metrics update failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        loop.call_soon_threadsafe(_deliver, batch, results)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _deliver(batch: list[_Item], results: list[Any]) -> None:
    for it, res in zip(batch, results):
        if it.future.done():  # the client went away
            continue
        if isinstance(res, Exception):
            it.future.set_exception(res)
        else:
            it.future.set_result(res)
