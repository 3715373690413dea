"""A compact live table of the resources, like ``kubectl get mlops`` refreshed in place."""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from ..controllers.conditions import get_condition
from ..controllers.cluster import Obj



def _ready(obj: Obj) -> str:
    c = get_condition((obj.get("status") or {}).get("conditions"), "Ready")
    return c["status"] if c else "-"


def _reason(obj: Obj) -> str:
    c = get_condition((obj.get("status") or {}).get("conditions"), "Ready")
    return (c or {}).get("reason", "")


def row(obj: Obj, address: Callable[[str, str], str | None]) -> list[str]:
    s = obj.get("status") or {}
    kind, name, ns = obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace", "default")
    if kind == "TrainingJob":
        gate = s.get("gate") or {}
        metric = f"{gate.get('metric')}={gate['value']:.3f}" if gate.get("value") is not None else ""
        return ["tj/" + name, _ready(obj), s.get("phase", "-"), s.get("modelVersion", "-"), metric, gate.get("result", ""), _reason(obj)]
    if kind == "ModelDeployment":
        url = address(ns, name) or s.get("url", "")
        replicas = f"{s.get('readyReplicas', 0)}/{obj['spec'].get('replicas') or 1} ready"
        return ["md/" + name, _ready(obj), replicas, s.get("modelVersion", "-"), "", url, _reason(obj)]
    score = f"score={s['score']:.3f}" if s.get("score") is not None else ""
    return ["dp/" + name, _ready(obj), s.get("verdict", "-"), f"n={s.get('samples', 0)}", score,
            f"retrains={s.get('retrainCount', 0)}", _reason(obj)]


HEADER = ["NAME", "READY", "PHASE", "VERSION", "METRIC", "GATE/URL/RETRAINS", "REASON"]


def render(objs: list[Obj], address: Callable[[str, str], str | None]) -> str:
    rows = [HEADER] + [row(o, address) for o in objs]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


class LiveView:
    """Redraws in place on a terminal; prints only changed tables otherwise (logs stay readable)."""

    def __init__(self, out: TextIO = sys.stdout):
        self.out = out
        self.tty = out.isatty()
        self._last = ""
        self._lines = 0

    def show(self, text: str) -> None:
        if text == self._last:
            return
        if self.tty and self._lines:
            self.out.write(f"\x1b[{self._lines}F\x1b[J")
        self.out.write(text + "\n")
        self.out.flush()
        self._last = text
        self._lines = text.count("\n") + 1 if self.tty else 0

    def note(self, line: str) -> None:
        """A line that stays (an event), printed above the table."""
        if self.tty and self._lines:
            self.out.write(f"\x1b[{self._lines}F\x1b[J")
            self._lines = 0
            self._last = ""
        self.out.write(line + "\n")
        self.out.flush()
