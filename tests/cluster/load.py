"""A bounded load generator: a few threads sending V1 predictions to a Service until told to stop.

Each request opens a new connection, so kube-proxy picks an endpoint for every
request: a pod that left the Service's endpoints too late, or stopped
listening too early, shows up as a failed request.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 5.0


@dataclass
class Outcome:
    at: float  # monotonic time the request was sent
    version: str | None  # X-Model-Version of a 200 answer
    error: str | None  # why it failed, else None


@dataclass
class Load:
    """Send ``body`` to ``url`` from ``threads`` threads, for at most ``max_seconds``."""

    url: str
    body: dict
    expect: list
    threads: int = 4
    max_seconds: float = 60.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> "Load":
        self._deadline = time.monotonic() + self.max_seconds
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="load")
        self._futures = [self._pool.submit(self._run) for _ in range(self.threads)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._pool is not None:
            for f in self._futures:
                f.result(timeout=REQUEST_TIMEOUT + 5)  # a thread's crash is the test's failure
            self._pool.shutdown()
            self._pool = None

    def _run(self) -> None:
        data = json.dumps(self.body).encode()
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            sent = time.monotonic()
            version = error = None
            request = urllib.request.Request(self.url, data=data, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as resp:
                    answer = json.loads(resp.read())
                    version = resp.headers.get("X-Model-Version")
                if answer.get("predictions") != self.expect:
                    error = f"wrong answer {answer!r}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.outcomes.append(Outcome(sent, version, error))

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def versions(self) -> list[str]:
        """The versions that answered, in the order they first answered."""
        seen: dict[str, None] = {}
        for o in sorted(self.outcomes, key=lambda o: o.at):
            if o.version is not None:
                seen.setdefault(o.version, None)
        return list(seen)

    def summary(self) -> str:
        errors = Counter(o.error for o in self.failures)
        per_version = Counter(o.version for o in self.outcomes if o.error is None)
        return (f"{len(self.outcomes)} requests, {len(self.failures)} failed {dict(errors)}, "
                f"answered by {dict(per_version)}")
