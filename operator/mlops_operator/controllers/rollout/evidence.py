"""The evidence of a rollout: each side's counters since it started, folded from pod scrapes.

A serving pod's counters only grow while its process lives. Each reconcile
scrapes the pods of both sides; a pod's growth since its last scrape (or all
of it, for a new or restarted pod) is added to its side's totals, which live in
``status.rollout``. So the totals survive the champion's pods rolling at each
canary step, and an operator restart loses nothing (the last counters are in
status too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..cluster import Obj
from .analysis import Arm, p99

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The server's request-duration buckets (``runtime.serving_metrics``); the counts hold one more, +Inf."""
MAX_PODS = 200
COUNTERS = ("labelled", "errors", "requests", "serverErrors")


@dataclass(frozen=True)
class PodReading:
    """One pod's scrape: its name and its counters (``PodCounters`` in the wire form)."""

    name: str
    counters: Obj


@dataclass
class Totals:
    """One side's totals since the rollout started."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    latency: list[int] = field(default_factory=list)

    def add(self, delta: Obj) -> None:
        for k in COUNTERS:
            self.counts[k] += max(0, int(delta.get(k) or 0))
        lat = [max(0, int(v)) for v in delta.get("latency") or []]
        if len(self.latency) < len(lat):
            self.latency += [0] * (len(lat) - len(self.latency))
        for i, v in enumerate(lat):
            self.latency[i] += v

    def arm(self) -> Arm:
        c = self.counts
        return Arm(labelled=c["labelled"], errors=c["errors"], requests=c["requests"], server_errors=c["serverErrors"],
                   p99_seconds=p99(list(LATENCY_BUCKETS), self.latency))

    def evidence(self, version: str) -> Obj:
        """``ArmEvidence`` in the wire form."""
        arm = self.arm()
        out: Obj = {"version": version, "labelled": arm.labelled, "errors": arm.errors, "requests": arm.requests,
                    "serverErrors": arm.server_errors}
        if arm.error_rate is not None:
            out["errorRate"] = round(arm.error_rate, 6)
        if arm.p99_seconds is not None:
            out["p99Seconds"] = arm.p99_seconds
        return out


def totals_of(state: Obj, side: str) -> Totals:
    ev = state.get(f"{side}Evidence") or {}
    return Totals({k: int(ev.get(k) or 0) for k in COUNTERS}, list((state.get("latency") or {}).get(side) or []))


def _delta(now: Obj, before: Obj | None) -> Obj:
    """Growth since ``before``; all of ``now`` when the pod is new, restarted, or a counter fell."""
    if before is None or before.get("started") != now.get("started") or before.get("version") != now.get("version"):
        return now
    if any(int(now.get(k) or 0) < int(before.get(k) or 0) for k in COUNTERS):
        return now
    lat_now, lat_before = now.get("latency") or [], before.get("latency") or []
    if len(lat_now) != len(lat_before) or any(a < b for a, b in zip(lat_now, lat_before)):
        return now
    out: Obj = {k: int(now.get(k) or 0) - int(before.get(k) or 0) for k in COUNTERS}
    out["latency"] = [a - b for a, b in zip(lat_now, lat_before)]
    return out


def fold(state: Obj, readings: list[PodReading], live_pods: set[str], champion: str, challenger: str) -> tuple[Totals, Totals, dict[str, Any]]:
    """``(champion totals, challenger totals, the pods' counters to keep)`` after adding the new scrapes.

    Pods that no longer exist are forgotten; pods that exist but were not read
    this time keep their last counters (so their growth is counted once, later).
    """
    sides = {champion: totals_of(state, "champion"), challenger: totals_of(state, "challenger")}
    old: dict[str, Obj] = dict(state.get("pods") or {})
    kept = {name: c for name, c in old.items() if name in live_pods}
    for r in readings:
        version = r.counters.get("version")
        if version not in sides:
            continue
        sides[version].add(_delta(r.counters, old.get(r.name)))
        kept[r.name] = r.counters
    if len(kept) > MAX_PODS:
        kept = dict(sorted(kept.items())[:MAX_PODS])
    return sides[champion], sides[challenger], kept
