"""Store URIs: ``file:///path`` (or a plain path), ``pvc://claim/path`` and ``s3://bucket/prefix``.

Inside a pod a ``pvc://`` store is a mounted folder: the operator mounts the
claim and hands the process a path, so processes open only files and buckets.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .filesystem import DEFAULT_TRUSTED_MODULES, ModelStore
from .s3 import S3ModelStore, parse_s3_uri

SCHEMES = ("file", "pvc", "s3")


@dataclass(frozen=True)
class StoreURI:
    """A parsed store URI: ``scheme`` and, per scheme, the path, the claim and sub-path, or the bucket and prefix."""

    scheme: str
    path: str = ""
    claim: str = ""
    bucket: str = ""

    @property
    def is_s3(self) -> bool:
        return self.scheme == "s3"

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.path}".rstrip("/")
        if self.scheme == "pvc":
            return f"pvc://{self.claim}/{self.path}".rstrip("/")
        return Path(self.path).as_uri()


def parse_store_uri(text: str) -> StoreURI:
    """Parse and check a store URI; a ValueError names what is wrong."""
    text = (text or "").strip()
    if not text:
        raise ValueError("the store URI is empty; use file:///path, pvc://claim/path or s3://bucket/prefix")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return StoreURI("file", str(Path(text).absolute()))
    if scheme == "file":
        parsed = urllib.parse.urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{text!r}: file:// store URIs are local paths (file:///path)")
        return StoreURI("file", urllib.parse.unquote(parsed.path) or "/")
    if scheme == "pvc":
        claim, _, sub = rest.partition("/")
        parts = [p for p in sub.split("/") if p]
        if not claim or any(p in (".", "..") for p in parts):
            raise ValueError(f"{text!r}: use pvc://<claim>/<path inside the claim>")
        return StoreURI("pvc", "/".join(parts), claim=claim)
    if scheme == "s3":
        bucket, prefix = parse_s3_uri(text)
        return StoreURI("s3", prefix, bucket=bucket)
    raise ValueError(f"{text!r}: unsupported store scheme {scheme!r}; use file://, pvc:// or s3://")


def open_store(location: str | os.PathLike[str], trusted_modules: Sequence[str] = DEFAULT_TRUSTED_MODULES,
               *, pvc_root: str | os.PathLike[str] | None = None) -> ModelStore | S3ModelStore:
    """The store behind a URI or a path (``pvc://`` only where the claims are mounted under ``pvc_root``)."""
    uri = parse_store_uri(os.fspath(location))
    if uri.is_s3:
        return S3ModelStore(str(uri), trusted_modules)
    if uri.scheme == "pvc":
        if pvc_root is None:
            raise ValueError(f"{location}: a pvc:// store is mounted by the operator; pass its mounted path instead")
        return ModelStore(Path(pvc_root) / uri.claim / uri.path, trusted_modules)
    return ModelStore(uri.path, trusted_modules)
