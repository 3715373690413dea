"""``mlops-operator demo``: the whole loop on one machine, with drift injected on purpose.

The data set is scikit-learn's breast-cancer diagnoses (569 patients, 30
measurements). Traffic replays its rows with a little noise and sends the
true diagnosis back as feedback. Then drift is injected, in two documented
ways at once:

- **covariate shift**: the five "mean" size and texture measurements
  (radius, texture, perimeter, area, smoothness) are scaled by 1.25 (new
  imaging equipment that measures larger);
- **concept change on a subgroup**: for patients whose "worst texture" is
  above the data set's median, the diagnosis rule flips (a new disease
  subtype the old model never saw).

The DriftPolicy of ``demo_loop.yaml`` (next to this module) sees the inputs drift and
the error rate climb, retrains with the labelled feedback, the challenger
beats the champion on the same held-out rows, and it is promoted without a
spec edit. The demo exits 0 only when all of that happened and the error rate
came back down.

With ``--rollouts`` it goes on (about a minute more) to promotion on live
evidence: the ModelDeployment gets a canary ``rollout:`` block (the user's
spec edit, as in Git), a deliberately worse challenger (a depth-1 tree trained
without the feedback) is rolled back at its first step, and a good one (the
retrain's recipe again, on the latest feedback) climbs 25 % -> 100 % and is
promoted; see docs/rollouts.md.
"""

from __future__ import annotations

import argparse
import http.client
import asyncio
import atexit
import json
import logging
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..controllers.cluster import DRIFT_POLICIES, MODEL_DEPLOYMENTS, TRAINING_JOBS
from ..controllers.driftpolicy.importance import is_important
from ..manifests import load_paths
from .manager import LocalManager
from .report import write_report

log = logging.getLogger("mlops_operator.demo")
MANIFEST = Path(__file__).with_name("demo_loop.yaml")
SHIFTED = ("mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness")
SHIFT_FACTOR = 1.25
SUBGROUP = "worst texture"
NS, MD, DP = "default", "cancer", "cancer"


@dataclass
class Point:
    t: float
    error_rate: float | None
    drift_score: float | None
    version: str | None
    phase: str


@dataclass
class Timeline:
    events: list[dict[str, Any]] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return round(time.monotonic() - self.start, 1)

    def event(self, what: str, **facts: Any) -> None:
        entry = {"t": self.now(), "event": what, **facts}
        self.events.append(entry)
        extras = "  ".join(f"{k}={v}" for k, v in facts.items() if v is not None)
        print(f"[{entry['t']:6.1f}s] {what:<28} {extras}", flush=True)


class Traffic:
    """Rows like the data set's, with noise; optionally drifted. Labels follow the (possibly new) concept."""

    def __init__(self, seed: int = 0):
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        self.names = list(data.feature_names)
        self.X = data.data
        self.y = data.target
        self.classes = list(data.target_names)
        self.std = self.X.std(axis=0)
        self.subgroup_cut = float(np.median(self.X[:, self.names.index(SUBGROUP)]))
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int, drifted: bool) -> tuple[list[list[float]], list[str]]:
        idx = self.rng.integers(0, len(self.X), n)
        X = self.X[idx] + self.rng.normal(0, 0.05, (n, self.X.shape[1])) * self.std
        y = self.y[idx].copy()
        if drifted:
            for name in SHIFTED:
                X[:, self.names.index(name)] *= SHIFT_FACTOR
            flip = X[:, self.names.index(SUBGROUP)] > self.subgroup_cut
            y[flip] = 1 - y[flip]
        X = np.maximum(X, 0.0)
        return X.round(5).tolist(), [self.classes[k] for k in y]


def _post(url: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the local service on 127.0.0.1
        return json.loads(r.read())


class Client:
    """Predicts through the local Service and sends the true labels back, counting mistakes."""

    def __init__(self, base: str, model: str):
        self.base, self.model = base, model
        self.outcomes: list[bool] = []
        self.dropped = 0
        """Requests whose connection was closed without an answer and that were sent once more."""

    def round(self, rows: list[list[float]], labels: list[str]) -> None:
        out = self._post(f"{self.base}/v1/models/{self.model}:predict", {"instances": rows})
        self.outcomes += [p != y for p, y in zip(out["predictions"], labels)]
        self._post(f"{self.base}/v1/models/{self.model}/feedback",
                   {"feedback": [{"id": i, "label": y} for i, y in zip(out["ids"], labels)]})

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST, and once more when the connection closed before any answer.

        Locally a canary step replaces the champion's server processes; a process that
        is shutting down closes the connections that carry no request yet, so a request
        that met such a connection was never read: sending it again does it once.
        """
        try:
            return _post(url, body)
        except (http.client.RemoteDisconnected, ConnectionResetError):
            self.dropped += 1
            return _post(url, body)

    def error_rate(self, last: int = 250) -> float | None:
        recent = self.outcomes[-last:]
        return round(sum(recent) / len(recent), 4) if recent else None


def _status(manager: LocalManager, res, name: str) -> dict[str, Any]:
    return (manager.cluster.get_now(res, NS, name) or {}).get("status") or {}


async def _until(predicate, timeout: float, what: str, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


CANARY = {"strategy": "canary", "steps": [25, 100], "stepDuration": "3s",
          "analysis": {"minSamples": 150, "maxSamples": 900, "margin": 0.04}}
"""The demo's rollout: short steps so it decides in seconds; a real one holds each step for minutes."""
WORSE_ESTIMATOR = {"class": "sklearn.tree.DecisionTreeClassifier", "params": {"max_depth": 1, "random_state": 0}}


def _training_job(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": spec}


async def canary_rollouts(manager: LocalManager, timeline: Timeline, send: Any, left: Any) -> dict[str, Any]:
    """A worse challenger rolled back, then a good one promoted, each on live traffic and feedback."""
    md_status = lambda: _status(manager, MODEL_DEPLOYMENTS, MD)  # noqa: E731
    md = manager.cluster.get_now(MODEL_DEPLOYMENTS, NS, MD) or {}
    manager.apply([{"apiVersion": "mlops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
                    "spec": {**md["spec"], "rollout": CANARY}}], NS)
    timeline.event("canary rollouts on", steps="25% -> 100%", step_duration=CANARY["stepDuration"])
    champion = md_status().get("modelVersion")
    first_spec = (manager.cluster.get_now(TRAINING_JOBS, NS, "cancer-v1") or {})["spec"]
    promoted_tj = next(t for t in manager.cluster.list_now(TRAINING_JOBS) if (t.get("status") or {}).get("modelVersion") == champion)

    async def trial(name: str, spec: dict[str, Any], label: str) -> dict[str, Any]:
        manager.apply([_training_job(name, spec)], NS)
        tj = await _until(lambda: (s := _status(manager, TRAINING_JOBS, name)).get("phase") in ("Succeeded", "Failed") and s,
                          left(), f"training {name}")
        version = tj.get("modelVersion")
        timeline.event(f"{label} challenger trained", job=name, version=version, accuracy=round((tj.get("metrics") or {}).get("accuracy", 0), 4))
        await _until(lambda: (md_status().get("rollout") or {}).get("challenger") == version, left(), f"the canary of {version}")
        timeline.event("canary started", challenger=version, champion=md_status().get("modelVersion"), weight="25%")
        step = 1
        while (ro := md_status().get("rollout") or {}).get("phase") in ("Analysing", "AwaitingApproval"):
            if ro.get("step", 1) != step:
                step = ro["step"]
                timeline.event("canary step", challenger=version, step=f"{step}/{ro.get('steps')}", weight=f"{ro.get('weight')}%",
                               evidence=ro.get("message"))
            await send(4, True, f"canary {label}")
            if left() <= 1.0:
                raise TimeoutError(f"the canary of {version} was not decided in time")
        ro = md_status().get("rollout") or {}
        ch, cb = ro.get("challengerEvidence") or {}, ro.get("championEvidence") or {}
        outcome = {"version": version, "phase": ro.get("phase"), "reason": ro.get("reason"),
                   "challenger_error_rate": ch.get("errorRate"), "challenger_labelled": ch.get("labelled"),
                   "champion_error_rate": cb.get("errorRate"), "champion_labelled": cb.get("labelled"),
                   "p_worse": ro.get("pWorse"), "p_not_worse": ro.get("pNotWorse")}
        timeline.event("canary rolled back" if ro.get("phase") == "RolledBack" else "canary promoted"
                       if ro.get("phase") == "Promoted" else f"canary {ro.get('phase')}", **outcome)
        return outcome

    worse = await trial("cancer-worse", {**first_spec, "estimator": WORSE_ESTIMATOR}, "worse")
    good_spec = {**promoted_tj["spec"], "qualityGate": {"metric": "accuracy", "minimum": 0.8}}
    good_spec["estimator"] = {**good_spec["estimator"], "params": {**(good_spec["estimator"].get("params") or {}), "random_state": 1}}
    good = await trial("cancer-good", good_spec, "good")
    if good["phase"] == "Promoted":
        await _until(lambda: rolled_out(md_status(), good["version"]), left(), "the promoted challenger to roll out")
        timeline.event("rolled out", version=good["version"])
    return {"canary_worse": worse, "canary_good": good, "rejected_versions": md_status().get("rejectedVersions") or []}


def rollouts_done(result: dict[str, Any]) -> bool:
    """The worse challenger was rolled back and not retried; the good one was promoted."""
    worse, good = result.get("canary_worse") or {}, result.get("canary_good") or {}
    return (worse.get("phase") == "RolledBack" and worse.get("version") in result.get("rejected_versions", [])
            and good.get("phase") == "Promoted")


async def drive(manager: LocalManager, timeline: Timeline, budget: float, seed: int, rollouts: bool = False) -> dict[str, Any]:
    traffic = Traffic(seed)
    md_status = lambda: _status(manager, MODEL_DEPLOYMENTS, MD)  # noqa: E731
    dp_status = lambda: _status(manager, DRIFT_POLICIES, DP)  # noqa: E731
    deadline = time.monotonic() + budget

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    timeline.event("training started", job="cancer-v1")
    tj = await _until(lambda: (s := _status(manager, TRAINING_JOBS, "cancer-v1")).get("phase") in ("Succeeded", "Failed") and s, left(), "the first training run")
    timeline.event("trained", version=tj.get("modelVersion"), accuracy=round((tj.get("metrics") or {}).get("accuracy", 0), 4), gate=(tj.get("gate") or {}).get("result"))
    if tj.get("phase") != "Succeeded":
        raise RuntimeError(f"the first training run failed: {tj}")
    first = tj["modelVersion"]
    await _until(lambda: md_status().get("readyReplicas") and md_status().get("modelVersion") == first, left(), "the model to serve")
    base = await _until(lambda: manager.executor.service_address(NS, MD), left(), "the service address")
    timeline.event("serving", version=first, url=base)
    client = Client(base, "cancer")

    def point(phase: str) -> None:
        timeline.points.append(Point(timeline.now(), client.error_rate(), dp_status().get("score"), md_status().get("modelVersion"), phase))

    async def send(rounds: int, drifted: bool, phase: str) -> None:
        for _ in range(rounds):
            rows, labels = traffic.batch(25, drifted)
            await asyncio.to_thread(client.round, rows, labels)
            point(phase)
            await asyncio.sleep(0.05)

    await send(40, False, "baseline")
    before = client.error_rate(1000)
    timeline.event("baseline traffic", rows=len(client.outcomes), error_rate=before)

    timeline.event("drift injected", shifted=", ".join(SHIFTED), concept=f"{SUBGROUP} > {traffic.subgroup_cut:.2f} flips")
    drift_start = len(client.outcomes)
    detected = retrained = None
    drifted: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        await send(4, True, "drifted")
        dp = dp_status()
        if detected is None and dp.get("verdict") == "Drift":
            detected = timeline.now()
            drifted = drifted_by_importance(dp)
            timeline.event("drift detected", score=dp.get("score"), samples=dp.get("samples"), error_rate=client.error_rate(),
                           important=", ".join(d["feature"] for d in drifted if d["important"]) or None)
        if retrained is None and dp.get("activeRetrain"):
            retrained = dp["activeRetrain"]
            timeline.event("retraining", job=retrained)
        if md_status().get("modelVersion") not in (None, first):
            break
    after_drift = round(sum(client.outcomes[drift_start:]) / max(1, len(client.outcomes) - drift_start), 4)
    promoted = md_status().get("modelVersion")
    if promoted in (None, first):
        raise TimeoutError("no retrained model was promoted in time")
    retrain_tj = next((t for t in manager.cluster.list_now(TRAINING_JOBS) if (t.get("status") or {}).get("modelVersion") == promoted), {})
    gate = (retrain_tj.get("status") or {}).get("gate") or {}
    timeline.event("promoted", version=promoted, challenger=gate.get("value"), champion=gate.get("championValue"))
    await _until(lambda: rolled_out(md_status(), promoted), left(), "the new version to finish rolling out")
    timeline.event("rolled out", version=promoted)
    mark = len(client.outcomes)
    await send(40, True, "after promotion")
    after = round(sum(client.outcomes[mark:]) / max(1, len(client.outcomes) - mark), 4)
    timeline.event("error rate after promotion", error_rate=after, before_drift=before, during_drift=after_drift)
    extra = await canary_rollouts(manager, timeline, send, left) if rollouts else {}
    return {
        **extra,
        "error_rate_before_drift": before,
        "error_rate_after_drift": after_drift,
        "error_rate_after_promotion": after,
        "first_version": first,
        "promoted_version": promoted,
        "retrain": retrained or retrain_tj.get("metadata", {}).get("name"),
        "drift_detected_at": detected,
        "challenger_score": gate.get("value"),
        "champion_score": gate.get("championValue"),
        "drifted_features": drifted,
        "dropped_connections": client.dropped,
    }


def drifted_by_importance(dp_status: dict[str, Any]) -> list[dict[str, Any]]:
    """The features the detecting check called drifted, most important to the model first.

    The importance is the serving version's permutation importance (in the
    policy's scores); "drifted and important" explains the errors, "drifted
    but unimportant" does not.
    """
    scores = [s for s in dp_status.get("scores") or [] if s.get("feature")]
    top = max((float(s.get("importance") or 0.0) for s in scores), default=0.0)
    rows = [{"feature": s["feature"], "check": s.get("check"), "effect": s.get("effect"),
             "importance": s.get("importance"), "important": is_important(float(s.get("importance") or 0.0), top)}
            for s in scores if s.get("drifted")]
    return sorted(rows, key=lambda r: -float(r["importance"] or 0.0))


def rolled_out(status: dict[str, Any], version: str) -> bool:
    """Ready on ``version`` with the rollout finished: no pod of the old version takes traffic any more."""
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
    return (status.get("modelVersion") == version and ready.get("status") == "True"
            and progressing.get("status") != "True")


def recovered(result: dict[str, Any]) -> bool:
    """The loop closed: the new model's error rate is well below the drifted model's and near the old level."""
    after, during, before = result["error_rate_after_promotion"], result["error_rate_after_drift"], result["error_rate_before_drift"]
    return after < during and after <= max(before + 0.05, during / 2)


async def run_demo(root: Path, out: Path | None, budget: float, seed: int, rollouts: bool = False) -> int:
    manager = LocalManager(root, tick=0.5)
    atexit.register(manager.processes.kill_all_now)
    manager.apply([d.obj for d in load_paths([MANIFEST])], NS)
    timeline = Timeline()
    manager.cluster.event_listeners.append(
        lambda ev: timeline.events.append({"t": timeline.now(), "event": f"{ev.kind}/{ev.name} {ev.reason}", "message": ev.message})
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(manager.run(stop))
    result: dict[str, Any] = {}
    code = 1
    try:
        result = await drive(manager, timeline, budget, seed, rollouts)
        code = 0 if recovered(result) and (not rollouts or rollouts_done(result)) else 1
        print(("loop closed: " if code == 0 else "loop did NOT close: ") + json.dumps(result), flush=True)
    except (TimeoutError, RuntimeError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        for entry in timeline.events[-25:]:
            print(f"  {json.dumps(entry)}", file=sys.stderr)
        for key, err in manager.errors.items():
            print(f"  reconcile {'/'.join(key)}: {err}", file=sys.stderr)
    finally:
        stop.set()
        await runner
    if out:
        out.mkdir(parents=True, exist_ok=True)
        doc = {**result, "completed": code == 0, "events": timeline.events, "points": [asdict(p) for p in timeline.points]}
        (out / "timeline.json").write_text(json.dumps(doc, indent=2))
        written = write_report(out, doc)
        print("wrote " + ", ".join(str(p) for p in [out / "timeline.json", *written]), flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mlops-operator demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="write timeline.json, report.html and report.png here")
    p.add_argument("--root", type=Path, default=None, help="store, feedback and logs (default: a fresh temporary folder)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rollouts", action="store_true",
                   help="then show canary rollouts: a worse challenger rolled back, a good one promoted (about a minute more)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.root:
        return asyncio.run(run_demo(args.root, args.out, args.timeout, args.seed, args.rollouts))
    with tempfile.TemporaryDirectory(prefix="mlops-demo-") as tmp:
        return asyncio.run(run_demo(Path(tmp), args.out, args.timeout, args.seed, args.rollouts))
