"""A small S3 client: bytes in, bytes out, and errors a user can act on.

Built on obstore (Python bindings of the Rust ``object_store`` crate, the
client of Apache Arrow DataFusion and many others): it speaks to every
S3-compatible server (AWS, MinIO, Ceph RGW, SeaweedFS), reads the standard
credential chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a web
identity token for IRSA, container and instance credentials), writes with
``If-None-Match: *`` (``mode="create"``), which is what makes "never
overwritten" hold against a second writer, and trusts an extra root CA.  It
has no Python dependencies, so it cannot pin anything the operator's other
libraries need.

Configuration comes from the environment only, so nothing secret is ever on a
command line or in a manifest:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: a custom endpoint (MinIO, Ceph, ...);
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (default ``us-east-1``);
- ``MLOPS_S3_ADDRESSING_STYLE``: ``path``, ``virtual`` or ``auto`` (default:
  ``path`` with a custom endpoint, virtual-hosted on AWS);
- ``AWS_CA_BUNDLE``: a PEM file of CA certificates to trust besides the system's;
- the credentials, read by obstore itself and never logged here.

Every error becomes a :class:`StoreError` with a ``reason`` (a CamelCase word
fit for a condition) and a message naming the ``s3://`` location and the
server's error code, never a key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .filesystem import ArtifactError

ADDRESSING_ENV = "MLOPS_S3_ADDRESSING_STYLE"
CONNECT_TIMEOUT = "5s"
REQUEST_TIMEOUT = "60s"
MAX_RETRIES = 2
RETRY_TIMEOUT = timedelta(seconds=20)
MAX_LIST_PAGES = 1000
"""Pages of a listing read at most (obstore pages hold up to 1000 keys): bounded, far beyond a model's versions."""

ACCESS_DENIED_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "AuthorizationHeaderMalformed", "InvalidClientTokenId", "AllAccessDisabled",
})
_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")
_STATUS = re.compile(r"status code: (\d{3})")


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
    """Where and how to connect (no credentials: those come from the environment or the caller)."""

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

    def virtual_hosted(self) -> bool:
        return self.addressing_style == "virtual" or (self.addressing_style == "auto" and not self.endpoint_url)


def store_for(bucket: str, settings: ClientSettings | None = None, credentials: Mapping[str, str] | None = None) -> Any:
    """An obstore S3Store for ``bucket`` (no prefix: keys are full keys).

    Credentials: ``credentials`` (a Secret's data the caller read) or else the
    environment's chain, read now, so a process whose credentials change (a
    rotated Secret, a test) never signs with old ones.
    """
    from obstore.store import S3Store

    settings = settings or ClientSettings.from_env()
    config: dict[str, Any] = {"region": settings.region, "virtual_hosted_style_request": settings.virtual_hosted()}
    if settings.endpoint_url:
        config["endpoint"] = settings.endpoint_url
    if credentials is not None:
        config["access_key_id"] = credentials.get("AWS_ACCESS_KEY_ID", "")
        config["secret_access_key"] = credentials.get("AWS_SECRET_ACCESS_KEY", "")
        if credentials.get("AWS_SESSION_TOKEN"):
            config["session_token"] = credentials["AWS_SESSION_TOKEN"]
    options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "timeout": REQUEST_TIMEOUT,
                               "allow_http": bool(settings.endpoint_url and settings.endpoint_url.startswith("http://"))}
    if settings.ca_bundle:
        try:
            with open(settings.ca_bundle, "rb") as fh:
                options["root_certificate"] = fh.read()
        except OSError as exc:
            raise StoreError("StoreTLSError", f"cannot read the CA bundle {settings.ca_bundle}: {exc.strerror or exc}") from None
    retry = {"max_retries": MAX_RETRIES, "retry_timeout": RETRY_TIMEOUT}
    try:
        return S3Store(bucket, config=config, client_options=options, retry_config=retry)
    except Exception as exc:  # a configuration obstore refuses (bad endpoint URL, bad certificate)
        raise StoreError("InvalidStoreSettings", f"s3://{bucket}: {scrub(_first_line(exc), credentials)}") from None


SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def scrub(text: str, credentials: Mapping[str, str] | None = None) -> str:
    """``text`` without any secret this process knows (belt and braces: no message is built from one)."""
    secrets_ = [os.environ.get(k) for k in SECRET_ENV] + [(credentials or {}).get(k) for k in SECRET_ENV]
    for secret in secrets_:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _first_line(exc: BaseException) -> str:
    return scrub(str(exc).strip().splitlines()[0][:300]) if str(exc).strip() else type(exc).__name__


def _error(exc: BaseException, where: str) -> StoreError:
    """An obstore failure as a :class:`StoreError` naming the location and the server's code, never a secret."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    text = scrub(str(exc))
    code = (_CODE.search(text) or [None, ""])[1]
    server = (_MESSAGE.search(text) or [None, ""])[1]
    status = (_STATUS.search(text) or [None, ""])[1]
    said = f"{code}: {server}" if code else (f"HTTP {status}" if status else _first_line(exc))
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or code in ACCESS_DENIED_CODES or status == "403":
        return StoreError("StoreAccessDenied", f"{where}: access denied by the object store ({said}); check the store "
                                               "credentials (the Secret's access key and secret key) and the bucket policy")
    if code == "NoSuchBucket":
        return StoreError("StoreBucketMissing", f"{where}: the bucket does not exist ({said})")
    lowered = text.lower()
    if "certificate" in lowered or "tls" in lowered:
        return StoreError("StoreTLSError", f"{where}: TLS failed ({_first_line(exc)}); is the CA bundle right?")
    if not status and ("error sending request" in lowered or "connect" in lowered or "timed out" in lowered):
        return StoreError("StoreUnreachable", f"{where}: cannot reach the object store ({_first_line(exc)})")
    return StoreError("StoreError", f"{where}: the object store failed: {said}")


def _not_found(exc: BaseException) -> bool:
    """A missing key (but not a missing bucket, which is an error worth reporting)."""
    return isinstance(exc, FileNotFoundError) and "<Code>NoSuchBucket</Code>" not in str(exc)


class Bucket:
    """One bucket: get, create-only put, list, delete, with errors as :class:`StoreError`."""

    def __init__(self, name: str, store: Any = None, *, credentials: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._store = store
        self._credentials = credentials

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = store_for(self.name, credentials=self._credentials)
        return self._store

    def where(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def get(self, key: str, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes, or None when there is no such key (a missing bucket is an error).

        With ``max_bytes``, a larger object is refused before its body is read.
        """
        import obstore

        try:
            result = obstore.get(self.store, key)
            size = int(result.meta.get("size") or 0)
            if max_bytes is not None and size > max_bytes:
                raise StoreError("StoreObjectTooLarge", f"{self.where(key)}: {size} bytes is more than the limit of {max_bytes} bytes")
            return bytes(result.bytes())
        except StoreError:
            raise
        except Exception as exc:
            if _not_found(exc):
                return None
            raise _error(exc, self.where(key)) from None

    def stat(self, key: str) -> S3Object | None:
        """The object's size and time, or None when there is no such key (a missing bucket is an error)."""
        import obstore

        try:
            meta = obstore.head(self.store, key)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise _error(exc, self.where(key)) from None
        return S3Object(str(meta["path"]), int(meta.get("size") or 0), meta["last_modified"])

    def put_new(self, key: str, data: bytes) -> bool:
        """Write a new object; False (nothing written) when the key exists: objects are never overwritten."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self.store, key, data, mode="create")
            return True
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as exc:
            raise _error(exc, self.where(key)) from None

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self.store, key)
        except Exception as exc:
            if not _not_found(exc):
                raise _error(exc, self.where(key)) from None

    def list(self, prefix: str) -> Iterator[S3Object]:
        """Every object under ``prefix`` (at most :data:`MAX_LIST_PAGES` pages)."""
        import obstore

        try:
            pages = obstore.list(self.store, prefix=prefix or None)
            for n, page in enumerate(pages):
                if n >= MAX_LIST_PAGES:
                    raise StoreError("StoreError", f"{self.where(prefix)}: more than {MAX_LIST_PAGES} pages of objects; listing stopped")
                for item in page:
                    yield S3Object(str(item["path"]), int(item.get("size") or 0), item["last_modified"])
        except StoreError:
            raise
        except Exception as exc:
            raise _error(exc, self.where(prefix)) from None

    def check(self, prefix: str = "") -> None:
        """Raise :class:`StoreError` unless this client may list ``prefix`` (credentials, bucket, reachability)."""
        import obstore

        try:
            pages = obstore.list(self.store, prefix=prefix or None, chunk_size=1)
            next(iter(pages), None)
        except Exception as exc:
            raise _error(exc, self.where(prefix).rstrip("/")) from None
