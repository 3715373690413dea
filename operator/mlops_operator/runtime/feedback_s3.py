"""Feedback rows on object storage: one new, time-partitioned CSV object per flush, never rewritten."""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import sys
import threading
import time
from typing import Any

S3_FLUSH_SECONDS = 10.0
FLUSH_SECONDS_ENV = "MLOPS_FEEDBACK_FLUSH_SECONDS"
"""Overrides :data:`S3_FLUSH_SECONDS` (tests and demos flush sooner)."""
S3_FLUSH_ROWS = 10_000
S3_MAX_BUFFERED_ROWS = 1_000_000
"""Rows held while the store cannot be written; beyond it the oldest are dropped, and counted."""


class S3FeedbackSink:
    """Buffers rows and writes them as one new CSV object per flush, never rewriting an object.

    Keys are time-partitioned: ``<prefix>/<namespace>/<model>/date=YYYY-MM-DD/hour=HH/
    feedback-<UTC time>-<host>-<pid>-<n>.csv``, so a reader lists one prefix
    and a lifecycle rule can expire old days.  A flush runs every
    :data:`S3_FLUSH_SECONDS`, when :data:`S3_FLUSH_ROWS` rows wait, and on
    close, in a thread of its own so requests never wait on the store.  A
    failed flush keeps its rows and says why on stderr; the next one retries.
    """

    def __init__(self, location: str, namespace: str, model: str, columns: list[str], *,
                 flush_seconds: float | None = None, flush_rows: int = S3_FLUSH_ROWS,
                 max_buffered_rows: int = S3_MAX_BUFFERED_ROWS, bucket: Any = None) -> None:
        from ..store.s3 import parse_s3_uri
        from ..store.s3client import Bucket

        bucket_name, prefix = parse_s3_uri(location)
        self.bucket = bucket or Bucket(bucket_name)
        self.base = "/".join(p for p in (prefix, namespace, model) if p)
        self.columns = columns
        self.flush_seconds = flush_seconds if flush_seconds is not None else float(os.environ.get(FLUSH_SECONDS_ENV) or S3_FLUSH_SECONDS)
        self.flush_rows = flush_rows
        self.max_buffered_rows = max_buffered_rows
        self.written_objects = 0
        self.dropped_rows = 0
        self.last_error: str | None = None
        self._rows: list[list[Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._n = 0
        self._host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:63]
        self._thread = threading.Thread(target=self._run, name="feedback-s3", daemon=True)
        self._thread.start()

    @property
    def pending_rows(self) -> int:
        with self._lock:
            return len(self._rows)

    def write(self, rows: list[list[Any]]) -> None:
        with self._lock:
            self._rows.extend(rows)
            over = len(self._rows) - self.max_buffered_rows
            if over > 0:
                del self._rows[:over]
                self.dropped_rows += over
            full = len(self._rows) >= self.flush_rows
        if full:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if not self._closed:
                self.flush()

    def _key(self) -> str:
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1e6) % 1_000_000:06d}Z"
        self._n += 1
        day, hour = time.strftime("%Y-%m-%d", time.gmtime(now)), time.strftime("%H", time.gmtime(now))
        return f"{self.base}/date={day}/hour={hour}/feedback-{stamp}-{self._host}-{os.getpid()}-{self._n}.csv"

    def flush(self) -> bool:
        """Write what is buffered as one new object; True when nothing is left to write."""
        from ..store.s3client import StoreError

        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return True
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(self.columns)
            writer.writerows(rows)
            data = out.getvalue().encode("utf-8")
            try:
                for _attempt in range(3):  # a new key each time: a key taken already is never overwritten
                    key = self._key()
                    if self.bucket.put_new(key, data) or self.bucket.get(key) == data:  # or a retry met its own write
                        self.written_objects += 1
                        self.last_error = None
                        return True
                raise StoreError("StoreError", "three feedback keys in a row existed already")
            except (StoreError, OSError) as exc:
                with self._lock:  # keep them, oldest first, for the next flush
                    self._rows[:0] = rows
                message = str(exc)
                if message != self.last_error:
                    print(f"warning: feedback: {len(rows)} row(s) not written yet, kept for the next try: {message}",
                          file=sys.stderr, flush=True)
                self.last_error = message
                return False

    def close(self) -> None:
        """Stop the flusher and write the rest; rows the store still refuses are reported, with their count."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=60)
        if not self.flush():
            print(f"error: feedback: {self.pending_rows} row(s) could not be written to s3://{self.bucket.name}/{self.base}/ "
                  f"before shutdown: {self.last_error}", file=sys.stderr, flush=True)
