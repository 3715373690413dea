"""Drift-sensor access in local mode: scrape serving processes, read references from the local store."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

Obj = dict[str, Any]


def _pod_url(pod: Obj) -> str | None:
    ip = (pod.get("status") or {}).get("podIP")
    for c in pod.get("spec", {}).get("containers", []):
        for port in c.get("ports") or []:
            if port.get("name") == "http":
                return f"http://{ip}:{port['containerPort']}"
    return None


def _get(url: str, timeout: float = 3.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback pods only
            return r.read().decode()
    except OSError:
        return None


class LocalSensors:
    """The ``sensors`` the DriftPolicy reconcile takes, for processes on 127.0.0.1."""

    def __init__(self, store: Path):
        self.store = store

    async def snapshot(self, pod: Obj):
        from ..runtime.sensor import parse_metrics

        url = _pod_url(pod)
        if not url:
            return None
        text = await asyncio.to_thread(_get, url + "/metrics")
        return parse_metrics(text) if text else None

    async def reference(self, namespace: str, model: str, version: str) -> tuple[Obj, Obj] | None:
        folder = self.store / namespace / model / version
        try:
            return json.loads((folder / "reference.json").read_text()), json.loads((folder / "metadata.json").read_text())
        except (OSError, ValueError):
            return None
