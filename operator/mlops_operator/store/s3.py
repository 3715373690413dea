"""The model store on S3-compatible object storage (``s3://bucket/prefix``).

Layout, as on a filesystem, under ``<prefix>/<namespace>/<model>/<version>/``:

- ``metadata.json`` — the manifest, written **last**, with ``If-None-Match: *``;
  it records the sha256 of every file of the version and the key each one
  was uploaded under;
- ``<upload>/model.skops``, ``<upload>/reference.json`` (and any extra file,
  such as a compiled model) — written **first**, under an upload id only this
  writer uses (``<UTC time>-<random>``).

Object storage has no rename, so atomicity comes from the manifest: a version
exists when its ``metadata.json`` does, and readers open only the files it
names, checking each one's sha256.  A writer killed between objects leaves
objects no manifest names (never read, and deleted by the writer that
completes the version, when it may delete);
two writers of the same version both upload under their own ids and the
conditional put lets exactly one manifest win — the loser deletes its
objects and reports the winner's version.  No object is ever overwritten.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

from .filesystem import (
    DEFAULT_TRUSTED_MODULES,
    METADATA_FILE,
    METADATA_FORMAT,
    MODEL_FILE,
    REFERENCE_FILE,
    ArtifactError,
    ModelStore,
    VersionNotFound,
    WriteResult,
    _check_component,
    load_skops_bytes,
    sha256_hex,
    verify_digest,
)
from .s3client import Bucket, StoreError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``; a clear ValueError otherwise."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{uri!r}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, '.' and '-')")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{uri!r}: the prefix may not contain '.' or '..' segments")
    return bucket, "/".join(parts)


class S3ModelStore:
    """Versions of models under ``s3://bucket/prefix``; see the module docstring for the layout."""

    def __init__(self, uri: str, trusted_modules: Sequence[str] = DEFAULT_TRUSTED_MODULES, *, client: Any = None) -> None:
        self.bucket_name, self.prefix = parse_s3_uri(uri)
        self.root = f"s3://{self.bucket_name}/{self.prefix}".rstrip("/")
        self.bucket = Bucket(self.bucket_name, client)
        self.trusted_modules = tuple(trusted_modules)

    def __repr__(self) -> str:
        return f"S3ModelStore({self.root!r})"

    # -- keys ------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def model_key(self, namespace: str, model: str) -> str:
        return self._key(_check_component("namespace", namespace), _check_component("model", model))

    def version_key(self, namespace: str, model: str, version: str) -> str:
        return f"{self.model_key(namespace, model)}/{_check_component('version', version)}"

    def version_dir(self, namespace: str, model: str, version: str) -> str:
        """The version's location as a URI (what a filesystem store's directory is)."""
        return f"s3://{self.bucket_name}/{self.version_key(namespace, model, version)}/"

    def uri(self, namespace: str, model: str, version: str) -> str:
        return self.version_dir(namespace, model, version)

    # -- reading -----------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`StoreError` unless the store answers (credentials, existence, reachability)."""
        self.bucket.check(self.prefix + "/" if self.prefix else "")

    def exists(self, namespace: str, model: str, version: str) -> bool:
        return self.bucket.get(f"{self.version_key(namespace, model, version)}/{METADATA_FILE}") is not None

    def list_versions(self, namespace: str, model: str) -> list[str]:
        """Complete versions (those with a manifest), oldest first (by when their manifest was written)."""
        base = self.model_key(namespace, model) + "/"
        found = []
        for obj in self.bucket.list(base):
            rest = obj.key[len(base):]
            version, _, name = rest.partition("/")
            if name == METADATA_FILE and not version.startswith("."):
                found.append((obj.last_modified, version))
        return [v for _, v in sorted(found)]

    def read_metadata(self, namespace: str, model: str, version: str) -> dict[str, Any]:
        """The manifest of a version; :class:`VersionNotFound` when there is none (or it is being written)."""
        key = f"{self.version_key(namespace, model, version)}/{METADATA_FILE}"
        data = self.bucket.get(key)
        if data is None:
            raise VersionNotFound(f"model {namespace}/{model} has no version {version!r} in the store {self.root}")
        where = f"{namespace}/{model}/{version}"
        try:
            meta = json.loads(data)
        except ValueError as exc:
            raise ArtifactError(f"{where}: {METADATA_FILE} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise ArtifactError(f"{where}: {METADATA_FILE} is not a JSON object")
        if meta.get("format") != METADATA_FORMAT:
            raise ArtifactError(f"{where}: metadata format {meta.get('format')!r} is not supported (expected {METADATA_FORMAT})")
        return meta

    def read_file(self, namespace: str, model: str, version: str, name: str,
                  expected_sha256: str | None = None, meta: Mapping[str, Any] | None = None) -> bytes:
        """The bytes of one file of a complete version, checked against the manifest's sha256."""
        meta = meta if meta is not None else self.read_metadata(namespace, model, version)
        where = f"{namespace}/{model}/{version}"
        rel = (meta.get("files") or {}).get(name)
        if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise ArtifactError(f"{where}: {METADATA_FILE} names no object for {name}")
        data = self.bucket.get(f"{self.version_key(namespace, model, version)}/{rel}")
        if data is None:
            raise ArtifactError(f"{where}: {name} is missing from the store (s3 object {rel})")
        verify_digest(where, name, data, meta, expected_sha256)
        return data

    def read_reference(self, namespace: str, model: str, version: str) -> dict[str, Any]:
        data = self.read_file(namespace, model, version, REFERENCE_FILE)
        try:
            ref = json.loads(data)
        except ValueError as exc:
            raise ArtifactError(f"{namespace}/{model}/{version}: {REFERENCE_FILE} is not valid JSON: {exc}") from None
        if not isinstance(ref, dict):
            raise ArtifactError(f"{namespace}/{model}/{version}: {REFERENCE_FILE} is not a JSON object")
        return ref

    def load_model(self, namespace: str, model: str, version: str, expected_sha256: str | None = None, *,
                   trusted_modules: Sequence[str] | None = None) -> Any:
        """Download, verify (sha256 against the manifest and ``expected_sha256``) and load a version's pipeline."""
        data = self.read_file(namespace, model, version, MODEL_FILE, expected_sha256)
        modules = self.trusted_modules if trusted_modules is None else tuple(trusted_modules)
        try:
            return load_skops_bytes(data, modules)
        except ArtifactError as exc:
            raise ArtifactError(f"{namespace}/{model}/{version}: {exc}") from None

    def download_version(self, namespace: str, model: str, version: str, root: str | os.PathLike[str],
                         expected_sha256: str | None = None) -> ModelStore:
        """Copy a complete version, every file verified, into a local store under ``root`` (same layout).

        A server loads from this copy: what it serves is on its own disk and
        checked before it turns ready.  The copy appears in one rename; an
        existing copy is kept (a restarted container) and checked again on load.
        """
        local = ModelStore(root, self.trusted_modules)
        final = local.version_dir(namespace, model, version)
        if local.exists(namespace, model, version):
            return local
        meta = self.read_metadata(namespace, model, version)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=final.parent))
        try:
            for name in meta.get("files") or {}:
                _check_component("file name", name)
                data = self.read_file(namespace, model, version, name,
                                      expected_sha256 if name == MODEL_FILE else None, meta)
                (tmp / name).write_bytes(data)
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, final)
            except OSError:
                if not local.exists(namespace, model, version):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return local

    # -- writing -----------------------------------------------------------------

    def write_version(
        self,
        namespace: str,
        model: str,
        version: str,
        model_bytes: bytes,
        metadata: Mapping[str, Any],
        reference: Mapping[str, Any],
        extra_files: Mapping[str, bytes] | None = None,
    ) -> WriteResult:
        """Upload the files under a fresh upload id, then the manifest (only if none exists yet).

        ``extra_files`` (name → bytes) are stored and hashed like the model.
        Returns whether this call created the version and the manifest now in
        the store (the first writer's when another one won).
        """
        base = self.version_key(namespace, model, version)
        where = self.version_dir(namespace, model, version)
        if self.exists(namespace, model, version):
            return WriteResult(where, False, self.read_metadata(namespace, model, version))
        ref_bytes = (json.dumps(reference, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n").encode()
        files = {MODEL_FILE: model_bytes, REFERENCE_FILE: ref_bytes, **dict(extra_files or {})}
        for name in files:
            _check_component("file name", name)
            if name == METADATA_FILE:
                raise ValueError(f"{METADATA_FILE} is the manifest, not a file of the version")
        upload = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)
        meta = dict(metadata)
        meta["format"] = METADATA_FORMAT
        meta["sha256"] = {name: sha256_hex(data) for name, data in files.items()}
        meta["files"] = {name: f"{upload}/{name}" for name in files}
        meta_bytes = (json.dumps(meta, indent=2, allow_nan=False) + "\n").encode()
        written: list[str] = []
        try:
            for name, data in files.items():
                key = f"{base}/{upload}/{name}"
                if not self.bucket.put_new(key, data):
                    raise StoreError("StoreError", f"{where}: {upload}/{name} exists already; upload ids are never reused")
                written.append(key)
        except BaseException:
            self._forget(written)
            raise
        failure: StoreError | None = None
        try:
            self.bucket.put_new(f"{base}/{METADATA_FILE}", meta_bytes)
        except StoreError as exc:
            failure = exc  # refused, or its answer lost: what is in the store now decides, below
        # Whether the put said "created", "exists" (possibly a retry meeting its own first attempt,
        # whose answer was lost) or failed: the manifest in the store says which upload won.
        try:
            current = self.read_metadata(namespace, model, version)
        except VersionNotFound:
            self._forget(written)
            raise failure or StoreError("StoreError", f"{where}: the manifest vanished after it was written") from None
        if current.get("files") != meta["files"]:  # another writer's manifest came first: theirs is the version
            self._forget(written)
            return WriteResult(where, False, current)
        self._remove_orphans(base, {f"{base}/{METADATA_FILE}", *(f"{base}/{k}" for k in meta["files"].values())})
        return WriteResult(where, True, meta)

    def _remove_orphans(self, base: str, keep: set[str]) -> None:
        """Best effort, once a version is complete: delete what earlier, killed writers of it left (no manifest names them)."""
        try:
            for obj in list(self.bucket.list(base + "/")):
                if obj.key not in keep:
                    self.bucket.delete(obj.key)
        except StoreError:
            return  # no delete right, or the store hiccuped: orphans are never read anyway

    def _forget(self, keys: list[str]) -> None:
        """Best effort: delete objects no manifest names (a writer without delete rights leaves them)."""
        for key in keys:
            try:
                self.bucket.delete(key)
            except StoreError:
                return
