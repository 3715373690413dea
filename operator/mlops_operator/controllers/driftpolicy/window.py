"""The window: what the serving pods' drift sensors counted since it began.

``status.window.counts`` holds what the window has collected so far, and
``status.window.pods`` names the pods seen (with their start time and rows).
Each check adds ``current - last`` of every pod that answered, where ``last``
is the counters the pod reported at the previous check; a counter lower than
before (or a new process start time) means the pod restarted, and its current
value is all new. A pod that disappears keeps what it already contributed; a
pod that fails to answer catches up at the next check. A new serving version
or ``window.maxAge`` starts a new window, whose first check sees no rows yet
(NotEnoughData, which changes nothing).

The pods' ``last`` counters (one set of bin counts per pod) are *not* kept in
status, which would then grow with pods x features x bins towards the API
server's object size limit; the caller keeps them (:class:`WindowUpdate`
``baselines``, in memory). After an operator restart a pod listed in status
without a baseline counts from that check on: the rows it counted between the
last check before the restart and the first after it are left out. No row is
ever counted twice.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

import numpy as np

from ..cluster import Obj
from ..conditions import parse_timestamp, timestamp

Counts = list[int] | dict[str, int]


@dataclass(frozen=True)
class Snapshot:
    """What one serving pod's drift sensor counted since its process started.

    Plain data: the cluster and local layers parse the server's ``/metrics``
    into this. ``features`` maps a feature to its bin counts (numeric: the
    reference bins, then NaN) or its level counts (categorical);
    ``predictions`` likewise for the prediction distribution, ``labels`` for
    the accepted feedback labels (label drift), and ``projections`` maps a
    projection of the reference's multivariate section to its bin counts.
    Of ``feedback_rows`` labelled rows, ``feedback_errors`` were predicted
    wrong (classification) and ``feedback_squared_error`` sums the squared
    errors (regression). ``started`` tells a restart: any value that changes
    when the server process does (its start time, e.g. the container's
    ``startedAt``), or None when unknown (then only falling counters tell).
    """

    version: str | None = None
    rows: int = 0
    features: Mapping[str, Counts] = field(default_factory=dict)
    predictions: Counts | None = None
    prediction_rows: int = 0
    feedback_rows: int = 0
    feedback_errors: int = 0
    feedback_squared_error: float = 0.0
    started: float | str | None = None
    labels: Counts | None = None
    projections: Mapping[str, Counts] = field(default_factory=dict)


def counters_of(snap: Snapshot) -> Obj:
    """A snapshot's counters in the JSON form kept in status."""
    return {
        "rows": int(snap.rows),
        "predictionRows": int(snap.prediction_rows),
        "features": {str(k): _plain(v) for k, v in snap.features.items()},
        "predictions": _plain(snap.predictions) if snap.predictions is not None else None,
        "feedbackRows": int(snap.feedback_rows),
        "feedbackErrors": int(snap.feedback_errors),
        "feedbackSquaredError": float(snap.feedback_squared_error),
        "labels": _plain(snap.labels) if snap.labels is not None else None,
        "projections": {str(k): _plain(v) for k, v in snap.projections.items()},
    }


def _plain(c: Any) -> Counts:
    if isinstance(c, Mapping):
        return {str(k): int(v) for k, v in c.items()}
    return [int(v) for v in np.asarray(c).reshape(-1).tolist()]


def empty_counters() -> Obj:
    return {"rows": 0, "predictionRows": 0, "features": {}, "predictions": None,
            "feedbackRows": 0, "feedbackErrors": 0, "feedbackSquaredError": 0.0, "labels": None, "projections": {}}


def _combine(a: Counts | None, b: Counts | None, sign: int) -> Counts | None:
    """a + sign*b for one count vector or level dict; None when the layouts differ."""
    if b is None:
        return copy.deepcopy(a)
    if a is None:
        a = {} if isinstance(b, Mapping) else [0] * len(b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = dict(a)
        for k, v in b.items():
            out[k] = out.get(k, 0) + sign * int(v)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x + sign * y for x, y in zip(a, b)]
    return None


def add_counters(a: Obj, b: Obj, sign: int = 1) -> Obj | None:
    """a + sign*b over every counter; None when a feature's layout changed."""
    out = {
        "rows": a.get("rows", 0) + sign * b.get("rows", 0),
        "predictionRows": a.get("predictionRows", 0) + sign * b.get("predictionRows", 0),
        "feedbackRows": a.get("feedbackRows", 0) + sign * b.get("feedbackRows", 0),
        "feedbackErrors": a.get("feedbackErrors", 0) + sign * b.get("feedbackErrors", 0),
        "feedbackSquaredError": float(a.get("feedbackSquaredError", 0.0)) + sign * float(b.get("feedbackSquaredError", 0.0)),
        "features": {},
        "predictions": None,
        "labels": None,
        "projections": {},
    }
    for key in ("features", "projections"):
        fa, fb = a.get(key) or {}, b.get(key) or {}
        for name in sorted(set(fa) | set(fb)):
            c = _combine(fa.get(name), fb.get(name), sign)
            if c is None:
                return None
            out[key][name] = c
    for key in ("predictions", "labels"):
        if a.get(key) is not None or b.get(key) is not None:
            c = _combine(a.get(key), b.get(key), sign)
            if c is None:
                return None
            out[key] = c
    return out


def _negative(c: Obj) -> bool:
    """Whether any counter went below zero (a restarted pod counted less than before)."""
    if min(c["rows"], c["predictionRows"], c["feedbackRows"], c["feedbackErrors"]) < 0 or c["feedbackSquaredError"] < -1e-6:
        return True
    for v in [*c["features"].values(), *c["projections"].values(), c["predictions"], c["labels"]]:
        if v is None:
            continue
        values = v.values() if isinstance(v, Mapping) else v
        if any(x < 0 for x in values):
            return True
    return False


@dataclass
class WindowUpdate:
    """The window after folding in one round of snapshots."""

    state: Obj
    """What goes to ``status.window``."""
    counts: Obj
    """The window's counters so far: what the checks read."""
    reporting: int
    """Pods whose snapshot was counted this round."""
    reset: str | None = None
    """Why a new window began: New, NewVersion or MaxAge."""
    skipped: list[str] = field(default_factory=list)
    """Pods that answered with another model version (a rollout in progress)."""
    baselines: dict[str, Obj] = field(default_factory=dict)
    """Per pod key, the counters it reported this round: the next round's ``baselines``."""


def _pod_key(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    return meta.get("uid") or meta.get("name", "")


def advance_window(
    window: Obj | None,
    version: str,
    observed: Iterable[tuple[Obj, Snapshot]],
    alive: Iterable[str],
    now: datetime,
    max_age: float | None = None,
    baselines: Mapping[str, Obj] | None = None,
) -> WindowUpdate:
    """Fold one round of pod snapshots into the window.

    ``observed`` pairs each pod that answered with its snapshot; ``alive``
    names every pod of the deployment that still exists (answered or not), so
    entries of pods that are gone can be dropped. ``baselines`` are the
    previous round's :attr:`WindowUpdate.baselines`. See the module docstring.
    """
    observed = list(observed)
    alive = list(alive)
    baselines = dict(baselines or {})
    window = window or {}
    start = parse_timestamp(window.get("start"))
    reset: str | None = None
    if not window or start is None:
        reset = "New"
    elif window.get("version") != version:
        reset = "NewVersion"
    elif max_age is not None and (now - start).total_seconds() >= max_age:
        reset = "MaxAge"
    if reset:
        start = now
        pods: dict[str, Obj] = {}
        counts = empty_counters()
    else:
        pods = {p["key"]: p for p in window.get("pods") or [] if p.get("key")}
        counts = window.get("counts") or empty_counters()
        for key, p in pods.items():  # statuses written before the counters left status
            if "counters" in p and key not in baselines:
                baselines[key] = p["counters"]
    assert start is not None

    reporting, skipped = 0, []
    seen: dict[str, Obj] = {}
    for pod, snap in observed:
        meta = pod.get("metadata") or {}
        if snap.version and snap.version != version:
            skipped.append(meta.get("name", ""))
            continue
        key = _pod_key(pod)
        current = counters_of(snap)
        before = pods.get(key)
        last = baselines.get(key)
        if reset:
            delta = None  # the window starts here: everything counted so far is before it
        elif before is None:
            created = parse_timestamp(meta.get("creationTimestamp"))
            # A pod born inside the window counted nothing before it; one born earlier
            # (missed at the window's start) may have, so only its later rows count.
            delta = current if created is not None and created >= start else None
        elif before.get("started") is not None and snap.started is not None and before["started"] != snap.started:
            delta = current  # a new process: its counters began at zero
        elif last is None:
            delta = None  # its last counters were lost (operator restart): it counts from here
        else:
            delta = add_counters(current, last, -1)
            if delta is None or _negative(delta):
                delta = current  # counted less than before: the pod restarted
        if delta is not None:
            summed = add_counters(counts, delta)
            if summed is None:
                # The pod's bins do not match the window's: start over from here.
                return advance_window(None, version, observed, alive, now, max_age)
            counts = summed
        pods[key] = {"key": key, "name": meta.get("name", ""), "started": snap.started, "rows": current["rows"]}
        seen[key] = current
        reporting += 1

    living = set(alive)
    kept = sorted((p for p in pods.values() if p["name"] in living), key=lambda p: (p["name"], p["key"]))
    # A pod that did not answer keeps its last counters, to catch up at the next round.
    kept_baselines = {p["key"]: seen.get(p["key"], baselines.get(p["key"])) for p in kept}
    state = {"start": timestamp(start), "version": version, "counts": counts, "pods": kept}
    return WindowUpdate(state=state, counts=counts, reporting=reporting, reset=reset, skipped=skipped,
                        baselines={k: v for k, v in kept_baselines.items() if v is not None})
