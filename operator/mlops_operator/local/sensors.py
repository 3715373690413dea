"""Drift sensors in local mode: the same HTTP scraping, with references read from the local store."""

from __future__ import annotations

import json
from pathlib import Path

from ..sensors import HttpSensors
from ..controllers.cluster import Obj



def local_sensors(store: Path) -> HttpSensors:
    """Serving processes are pods on 127.0.0.1; the store is a folder this process can read."""

    def load(namespace: str, model: str, version: str) -> tuple[Obj, Obj]:
        # A missing or unreadable file raises: its message is what the policy's status reports.
        folder = store / namespace / model / version
        return json.loads((folder / "reference.json").read_text()), json.loads((folder / "metadata.json").read_text())

    return HttpSensors(reference_loader=load, retry_seconds=2.0)
