"""Can the workloads of a namespace reach the object store?  Asked before the operator starts a pod.

A trainer or server with a wrong key would fail inside its pod (a failed Job,
a crash-looping server); the operator asks first, with the very credentials
those pods would get (the namespace's Secret, or its own identity when there
is none), and reports a refusal on the object instead.  Answers are cached
per namespace for a short while, so a reconcile storm costs one request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from .s3 import parse_s3_uri
from .s3client import Bucket, StoreError

REQUIRED_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
CACHE_SECONDS = 30.0

SecretReader = Callable[[str, str], Awaitable[Mapping[str, str] | None]]
"""``(namespace, name) -> the Secret's decoded data, or None when there is no such Secret``."""


@dataclass(frozen=True)
class StoreProblem:
    reason: str
    message: str


class StoreAccess:
    """Checks each ``s3://`` location in ``uris`` with a namespace's credentials."""

    def __init__(self, uris: Sequence[str], secret_name: str | None = None, read_secret: SecretReader | None = None,
                 *, cache_seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.locations = list(dict.fromkeys(parse_s3_uri(u) for u in uris if u and u.startswith("s3://")))  # the store first
        self.secret_name = secret_name
        self.read_secret = read_secret
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, StoreProblem | None]] = {}

    def __bool__(self) -> bool:
        return bool(self.locations)

    async def __call__(self, namespace: str) -> StoreProblem | None:
        hit = self._cache.get(namespace)
        if hit is not None and self.clock() - hit[0] < self.cache_seconds:
            return hit[1]
        problem = await self._check(namespace)
        self._cache[namespace] = (self.clock(), problem)
        return problem

    async def _check(self, namespace: str) -> StoreProblem | None:
        credentials: Mapping[str, str] | None = None
        source = "the operator's own identity"
        if self.secret_name and self.read_secret is not None:
            source = f"Secret {namespace}/{self.secret_name}"
            try:
                data = await self.read_secret(namespace, self.secret_name)
            except PermissionError:
                return None  # the operator may not look; the pods' own failures will say it
            if data is None:
                return StoreProblem("StoreSecretMissing", f"{source} does not exist; the training and serving pods "
                                                          "read the object store's credentials from it")
            missing = [k for k in REQUIRED_KEYS if not data.get(k)]
            if missing:
                return StoreProblem("StoreSecretInvalid", f"{source} has no key(s) {', '.join(missing)}")
            credentials = data
        for bucket, prefix in self.locations:
            try:
                await asyncio.to_thread(self._list, bucket, prefix, credentials)
            except StoreError as exc:
                return StoreProblem(exc.reason, f"{exc} (credentials: {source})"[:1000])
        return None

    @staticmethod
    def _list(bucket: str, prefix: str, credentials: Mapping[str, str] | None) -> None:
        Bucket(bucket, credentials=credentials).check(prefix + "/" if prefix else "")
