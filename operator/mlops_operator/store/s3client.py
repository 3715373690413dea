"""A small S3 client: bytes in, bytes out, and errors a user can act on.

Built on botocore (the core of the AWS SDK for Python) because it speaks to
every S3-compatible server (AWS, MinIO, Ceph RGW, SeaweedFS), signs with the
standard credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
a web identity token for IRSA, an instance role) and supports conditional
writes (``If-None-Match: *``), which is what makes "never overwritten" hold
against a second writer.

Configuration comes from the environment only, so nothing secret is ever on a
command line or in a manifest:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: a custom endpoint (MinIO, Ceph, ...);
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (default ``us-east-1``);
- ``MLOPS_S3_ADDRESSING_STYLE``: ``path``, ``virtual`` or ``auto`` (default:
  ``path`` with a custom endpoint, else ``auto``);
- ``AWS_CA_BUNDLE``: a PEM file of CA certificates to trust;
- the credentials, read by botocore itself and never logged here.

Every error becomes a :class:`StoreError` with a ``reason`` (a CamelCase word
fit for a condition) and a message naming the ``s3://`` location, never a key.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .filesystem import ArtifactError

ADDRESSING_ENV = "MLOPS_S3_ADDRESSING_STYLE"
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3
MAX_LIST_PAGES = 1000
"""At most 1,000,000 keys under one listed prefix: bounded, and far beyond what a model's versions need."""

ACCESS_DENIED_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "AuthorizationHeaderMalformed", "InvalidClientTokenId", "AllAccessDisabled", "403",
})


class StoreError(ArtifactError):
    """The object store refused or could not be reached; ``reason`` says which in one word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class ClientSettings:
    """Where and how to connect (no credentials: botocore reads those itself)."""

    endpoint_url: str | None
    region: str
    addressing_style: str
    ca_bundle: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if env is None else env
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        style = (env.get(ADDRESSING_ENV) or ("path" if endpoint else "auto")).strip().lower()
        if style not in ("path", "virtual", "auto"):
            raise StoreError("InvalidStoreSettings", f"{ADDRESSING_ENV}={style!r}: use path, virtual or auto")
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        return cls(endpoint, region, style, env.get("AWS_CA_BUNDLE") or None)


_loader: Any = None
_lock = threading.Lock()


def client_for(settings: ClientSettings | None = None) -> Any:
    """A new botocore client that reads the credentials in the environment now.

    Only the parsed service model is shared; sessions and clients are not, so
    a process whose credentials change (a rotated Secret, a test) never signs
    with old ones.
    """
    import botocore.config
    import botocore.session

    global _loader
    settings = settings or ClientSettings.from_env()
    with _lock:
        session = botocore.session.Session()
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    config = botocore.config.Config(
        s3={"addressing_style": settings.addressing_style},
        connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        user_agent_extra="mlops-operator",
    )
    with _lock:
        return session.create_client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
            verify=settings.ca_bundle if settings.ca_bundle else None, config=config,
        )


def _error(exc: BaseException, where: str) -> StoreError:
    """A botocore failure as a :class:`StoreError` that names the location and the cause, never a secret."""
    from botocore.exceptions import (
        ClientError, ConnectionError as BotoConnectionError, NoCredentialsError, PartialCredentialsError, SSLError,
    )

    if isinstance(exc, ClientError):
        err = exc.response.get("Error") or {}
        code = str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
        text = str(err.get("Message") or code)
        if code in ACCESS_DENIED_CODES:
            return StoreError("StoreAccessDenied", f"{where}: access denied by the object store ({code}: {text}); "
                                                   "check the store credentials (the Secret's access key and secret key) and the bucket policy")
        if code == "NoSuchBucket":
            return StoreError("StoreBucketMissing", f"{where}: the bucket does not exist ({text})")
        return StoreError("StoreError", f"{where}: the object store answered {code}: {text}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StoreError("StoreAccessDenied", f"{where}: no credentials for the object store ({exc}); "
                                               "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (from a Secret) or a web identity")
    if isinstance(exc, SSLError):
        return StoreError("StoreTLSError", f"{where}: TLS failed ({exc}); is the CA bundle right?")
    if isinstance(exc, BotoConnectionError):
        return StoreError("StoreUnreachable", f"{where}: cannot reach the object store: {exc}")
    return StoreError("StoreError", f"{where}: {type(exc).__name__}: {exc}")


def _code(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str((exc.response.get("Error") or {}).get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    return ""


class Bucket:
    """One bucket through one client: get, conditional put, list, delete."""

    def __init__(self, name: str, client: Any = None) -> None:
        self.name = name
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = client_for()
        return self._client

    def where(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key (a missing bucket is an error)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.name, Key=key)
            return resp["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise _error(exc, self.where(key)) from None

    def put_new(self, key: str, data: bytes) -> bool:
        """Write a new object; False (nothing written) when the key exists: objects are never overwritten."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.name, Key=key, Body=data, IfNoneMatch="*")
            return True
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise _error(exc, self.where(key)) from None

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.name, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, self.where(key)) from None

    def list(self, prefix: str) -> Iterator[S3Object]:
        """Every object under ``prefix`` (bounded by :data:`MAX_LIST_PAGES` pages)."""
        from botocore.exceptions import BotoCoreError, ClientError

        token: str | None = None
        for _page in range(MAX_LIST_PAGES):
            kwargs: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            try:
                resp = self.client.list_objects_v2(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise _error(exc, self.where(prefix)) from None
            for item in resp.get("Contents") or []:
                yield S3Object(item["Key"], int(item.get("Size") or 0), item["LastModified"])
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return
        raise StoreError("StoreError", f"{self.where(prefix)}: more than {MAX_LIST_PAGES} pages of objects; listing stopped")

    def check(self) -> None:
        """Raise :class:`StoreError` unless the bucket answers this client (credentials, existence, reachability)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.list_objects_v2(Bucket=self.name, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, f"s3://{self.name}") from None
