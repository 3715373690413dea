"""Drift sensors in local mode: the same HTTP scraping, with references read from the local store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ..sensors import HttpSensors
from ..controllers.cluster import Obj
from ..store import ArtifactError, open_store



def local_sensors(store: Path, store_uri: str = "") -> HttpSensors:
    """Serving processes are pods on 127.0.0.1; the store is a folder this process can read, or an s3:// store."""
    if store_uri.startswith("s3://"):
        return HttpSensors(reference_loader=s3_reference_loader(store_uri), retry_seconds=2.0)

    def load(namespace: str, model: str, version: str) -> tuple[Obj, Obj]:
        # A missing or unreadable file raises: its message is what the policy's status reports.
        folder = store / namespace / model / version
        return json.loads((folder / "reference.json").read_text()), json.loads((folder / "metadata.json").read_text())

    return HttpSensors(reference_loader=load, retry_seconds=2.0)


def s3_reference_loader(uri: str):  # type: ignore[no-untyped-def]
    """A version's reference and metadata from an ``s3://`` store (the reference's sha256 checked)."""
    store = open_store(uri)

    def read(namespace: str, model: str, version: str) -> tuple[Obj, Obj]:
        try:
            return store.read_reference(namespace, model, version), store.read_metadata(namespace, model, version)
        except ArtifactError as exc:  # HttpSensors reports a ValueError's message as why the reference is unreadable
            raise ValueError(str(exc)) from None

    async def load(namespace: str, model: str, version: str) -> tuple[Obj, Obj]:
        return await asyncio.to_thread(read, namespace, model, version)

    return load
