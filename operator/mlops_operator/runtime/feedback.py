"""Prediction ids, the memory of recent predictions, and ground-truth feedback.

Every predicted row gets the id ``"<request id>:<row>"``.  The server
remembers each request's rows and predictions (one entry per request, so
remembering costs O(1) per request) for ``keep_seconds``, holding at most
``max_pending`` rows and at most ``max_bytes`` of memory (the arrays plus
:data:`ENTRY_OVERHEAD_BYTES` per request): the oldest requests are forgotten
first.  Without the byte bound 100,000 remembered one-row requests held about
60 MB, which is how a server's memory grew under load.  A label sent
to ``POST /v1/models/{name}/feedback`` is matched to its row, moves the error
counters and the label counts (label drift) and, with a feedback location,
appends the row and its label to
``<dir>/<namespace>/<model>/feedback-<hostname>-<pid>.csv`` or, on object
storage, to a new time-partitioned object per flush (:mod:`.feedback_s3`).
"""

from __future__ import annotations

import csv
import math
import os
import secrets
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .protocol import FeedbackItem, Schema


class IdFactory:
    """Request ids unique per process: a random prefix and a counter."""

    def __init__(self) -> None:
        self.prefix = secrets.token_hex(4)
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"{self.prefix}-{self.n}"


def row_ids(rid: str, n: int) -> list[str]:
    return [f"{rid}:{i}" for i in range(n)]


ENTRY_OVERHEAD_BYTES = 480
"""What one remembered request costs beyond its arrays' data (entry, two array headers, id, dict slot;
measured with tracemalloc in tests/unit/test_server_feedback.py)."""
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class _Entry:
    __slots__ = ("t", "rows", "predictions", "labelled", "size")

    def __init__(self, t: float, rows: np.ndarray, predictions: np.ndarray) -> None:
        self.t = t
        self.rows = rows
        self.predictions = predictions
        self.labelled: set[int] | None = None  # made on the first label: most predictions never get one
        self.size = rows.nbytes + predictions.nbytes + ENTRY_OVERHEAD_BYTES


class PredictionMemory:
    """Recent predictions by request id, bounded in age, in rows and in bytes."""

    def __init__(
        self,
        keep_seconds: float,
        max_pending: int,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.keep_seconds = keep_seconds
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.pending = 0
        """Rows remembered."""
        self.bytes = 0
        """Estimated bytes held (arrays plus :data:`ENTRY_OVERHEAD_BYTES` per request)."""

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, rid: str, rows: np.ndarray, predictions: np.ndarray) -> None:
        if self.max_pending <= 0 or self.max_bytes <= 0 or rows.shape[0] == 0:
            return
        old = self._entries.pop(rid, None)
        if old is not None:  # a client reused its request id: the newest wins
            self._forget(old)
        # A copy: a slice of the batch's predictions would keep the whole batch alive.
        entry = _Entry(self.clock(), rows, np.array(predictions, copy=True))
        self._entries[rid] = entry
        self.pending += rows.shape[0]
        self.bytes += entry.size
        self._evict(self.clock() - self.keep_seconds)

    def expire(self) -> None:
        """Forget what aged out (also done on every ``remember``; a scrape calls it so an idle server shrinks)."""
        self._evict(self.clock() - self.keep_seconds)

    def _forget(self, entry: _Entry) -> None:
        self.pending -= entry.rows.shape[0]
        self.bytes -= entry.size

    def _evict(self, horizon: float) -> None:
        entries = self._entries
        while entries:
            first = next(iter(entries.values()))
            if self.pending > self.max_pending or self.bytes > self.max_bytes or first.t < horizon:
                entries.popitem(last=False)
                self._forget(first)
            else:
                break

    def lookup(self, pid: str) -> tuple[str, np.ndarray | None, Any]:
        """``(status, row, prediction)``; status is ok, unknown, expired or duplicate."""
        rid, sep, idx = pid.rpartition(":")
        if not sep or not idx.isdigit():
            return "unknown", None, None
        entry = self._entries.get(rid)
        if entry is None:
            return "unknown", None, None
        i = int(idx)
        if i >= entry.rows.shape[0]:
            return "unknown", None, None
        if entry.t < self.clock() - self.keep_seconds:
            return "expired", None, None
        if entry.labelled is None:
            entry.labelled = set()
        elif i in entry.labelled:
            return "duplicate", None, None
        entry.labelled.add(i)
        return "ok", entry.rows[i], entry.predictions[i]


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


class FeedbackWriter:
    """Where labelled rows go (header: features then target): a CSV file, or immutable objects on S3.

    ``location`` is a directory (rows appended to this process's file) or an
    ``s3://bucket/prefix`` (see :mod:`.feedback_s3`).
    """

    def __init__(self, location: str | os.PathLike[str], namespace: str, model: str, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        if str(location).startswith("s3://"):
            from .feedback_s3 import S3FeedbackSink

            self.sink: Any = S3FeedbackSink(str(location), namespace, model, self.columns)
        else:
            self.sink = FileFeedbackSink(Path(location) / namespace / model / f"feedback-{socket.gethostname()}-{os.getpid()}.csv",
                                         self.columns)

    @property
    def path(self) -> Any:
        return getattr(self.sink, "path", None)

    def write(self, rows: list[list[Any]]) -> None:
        if rows:
            self.sink.write([["" if isinstance(v, float) and math.isnan(v) else v for v in r] for r in rows])

    def close(self) -> None:
        self.sink.close()


class FileFeedbackSink:
    """Appends to one CSV file of this process."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        self._fh: Any = None

    def write(self, rows: list[list[Any]]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._fh = open(self.path, "a", newline="", encoding="utf-8")
            if new:
                csv.writer(self._fh).writerow(self.columns)
        csv.writer(self._fh).writerows(rows)
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class FeedbackProcessor:
    """Matches labels to remembered predictions and updates the metrics and the CSV."""

    def __init__(self, schema: Schema, memory: PredictionMemory, metrics: Any, writer: FeedbackWriter | None) -> None:
        self.schema = schema
        self.memory = memory
        self.metrics = metrics
        self.writer = writer
        self.classes = None if schema.classes is None else set(schema.classes)

    def _valid(self, label: Any) -> bool:
        if self.schema.task == "classification":
            if self.classes is None:
                return True
            return label in self.classes and (type(label) is bool) == any(type(c) is bool for c in self.classes)
        return type(label) in (int, float) and math.isfinite(label)

    def apply(self, items: Sequence[FeedbackItem], inline: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
        """Score labels against their predictions: remembered ones by id, ``inline`` (rows, predictions)
        for the items that carried their instance, in their order."""
        accepted = correct = errors = 0
        next_inline = 0
        sq = ab = 0.0
        lists: dict[str, list[str]] = {"unknown": [], "expired": [], "duplicate": [], "invalid": []}
        out_rows: list[list[Any]] = []
        labels: list[Any] = []
        for it in items:
            if not self._valid(it.label):
                if it.instance is not None:
                    next_inline += 1
                lists["invalid"].append(it.id if it.id is not None else f"feedback[{it.index}]")
                continue
            if it.instance is not None:
                assert inline is not None
                status, row, pred = "ok", inline[0][next_inline], inline[1][next_inline]
                next_inline += 1
            else:
                status, row, pred = self.memory.lookup(it.id)
            if status != "ok":
                lists[status].append(it.id)
                continue
            accepted += 1
            labels.append(it.label)
            pred = _plain(pred)
            if self.schema.task == "classification":
                if pred == it.label:
                    correct += 1
                else:
                    errors += 1
            else:
                err = float(pred) - float(it.label)
                sq += err * err
                ab += abs(err)
            if self.writer is not None:
                assert row is not None
                out_rows.append([_plain(v) for v in row.tolist()] + [it.label])
        self.metrics.observe_feedback(
            labels=accepted, correct=correct, errors=errors, squared_error=sq, abs_error=ab,
            rejected={k: len(v) for k, v in lists.items() if v}, label_values=labels,
        )
        if self.writer is not None:
            self.writer.write(out_rows)
        resp: dict[str, Any] = {"accepted": accepted, "unknown": lists["unknown"] + lists["expired"]}
        for k in ("expired", "duplicate", "invalid"):
            if lists[k]:
                resp[k] = lists[k]
        return resp
