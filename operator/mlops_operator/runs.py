"""``mlops-operator runs MODEL``: the versions of a model side by side, from the store and (when given) the cluster.

The store holds every version that passed its gate, with its lineage, data
digest, parameters and metrics (``metadata.json``). What happened to a
version afterwards (served, still serving, rolled back) lives in the
ModelDeployments' status, and a run that failed its gate exists only as a
TrainingJob: with those objects (from the API server, or from the snapshot
the embedded runner leaves in its root) the table says that too; from the
store alone, a version that is another one's parent is known to have served.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

Obj = dict[str, Any]

COLUMNS = ("VERSION", "PARENT", "TRIGGER", "DATA", "PARAMS", "METRIC", "GATE", "STATE")


def read_versions(store: Any, namespace: str, model: str) -> list[Obj]:
    """The ``metadata.json`` of every stored version of ``model`` (a version that cannot be read is listed with why)."""
    out = []
    for version in store.list_versions(namespace, model):
        try:
            out.append(store.read_metadata(namespace, model, version))
        except Exception as exc:  # noqa: BLE001 - one unreadable version must not hide the others
            out.append({"version": version, "error": f"{type(exc).__name__}: {exc}"[:200]})
    return out


def _trigger(lineage: Obj) -> str:
    """``<policy>: <what>`` for a retrain, '' for a run a person (or Git) started."""
    policy, what = lineage.get("triggeredBy"), lineage.get("trigger")
    if not policy:
        return ""
    return f"{policy}: {what}" if what else str(policy)


def _history(deployments: Iterable[Obj], model: str) -> tuple[set[str], set[str], set[str]]:
    """(serving now, ever served, rolled back) versions of ``model`` according to its ModelDeployments."""
    serving: set[str] = set()
    served: set[str] = set()
    rolled_back: set[str] = set()
    for md in deployments:
        if (md.get("spec") or {}).get("model") != model:
            continue
        status = md.get("status") or {}
        if status.get("modelVersion"):
            serving.add(status["modelVersion"])
        history = [h for h in status.get("history") or [] if isinstance(h, dict) and h.get("version")]  # newest first
        served.update(h["version"] for h in history)
        # A rollout whose reason says it rolled back replaced the version rolled out just before it.
        for newer, older in zip(history, history[1:]):
            if "roll" in str(newer.get("reason", "")).lower() and "back" in str(newer.get("reason", "")).lower():
                rolled_back.add(older["version"])
        rolled_back.update(v for v in status.get("rejectedVersions") or [] if isinstance(v, str))
    return serving, served, rolled_back


def runs_table(versions: Sequence[Obj], training_jobs: Sequence[Obj] = (), deployments: Sequence[Obj] = (),
               model: str = "") -> list[Obj]:
    """One row per version, oldest first: what ``runs`` prints (``--json`` prints these rows as they are)."""
    model = model or next((v.get("model") for v in versions if v.get("model")), "")
    serving, served, rolled_back = _history(deployments, model)
    parents = {(v.get("lineage") or {}).get("parent") for v in versions} | {
        ((t.get("status") or {}).get("lineage") or {}).get("parent") for t in training_jobs}
    rows: dict[str, Obj] = {}
    for meta in versions:
        lineage = meta.get("lineage") or {}
        gate = meta.get("gate") or {}
        tuning = meta.get("tuning") or {}
        rows[meta["version"]] = {
            "version": meta["version"],
            "trainedAt": meta.get("trainedAt"),
            "trainingJob": lineage.get("trainingJob"),
            "parent": lineage.get("parent"),
            "trigger": _trigger(lineage),
            "dataDigest": meta.get("dataDigest"),
            "params": meta.get("params") or {},
            "tuned": sorted((tuning.get("bestParams") or {})),
            "metrics": meta.get("metrics") or {},
            "gate": {k: gate.get(k) for k in ("result", "metric", "value", "championVersion", "championValue") if gate.get(k) is not None},
            "stored": "error" not in meta,
            **({"error": meta["error"]} if "error" in meta else {}),
        }
    for tj in training_jobs:  # runs the store never got: failed gates, failures, runs still going
        if (tj.get("spec") or {}).get("model") != model:
            continue
        status = tj.get("status") or {}
        version = status.get("modelVersion")
        if not version or version in rows:
            continue
        lineage = status.get("lineage") or {}
        labels = (tj.get("metadata") or {}).get("labels") or {}
        annotations = (tj.get("metadata") or {}).get("annotations") or {}
        rows[version] = {
            "version": version,
            "trainedAt": status.get("completionTime") or status.get("startTime"),
            "trainingJob": tj["metadata"]["name"],
            "parent": lineage.get("parent") or labels.get("mlops.dev/parent-version"),
            "trigger": _trigger({"triggeredBy": labels.get("mlops.dev/triggered-by"),
                                 "trigger": annotations.get("mlops.dev/retrain-trigger")}),
            "dataDigest": lineage.get("dataDigest"),
            "params": ((tj.get("spec") or {}).get("estimator") or {}).get("params") or {},
            "tuned": sorted(((status.get("tuning") or {}).get("bestParams") or {})),
            "metrics": status.get("metrics") or {},
            "gate": {k: v for k, v in (status.get("gate") or {}).items() if k in ("result", "metric", "value", "championVersion", "championValue")},
            "stored": False,
            "phase": status.get("phase"),
        }
    for row in rows.values():
        v = row["version"]
        if v in rolled_back:
            state = "rolled back"
        elif v in serving:
            state = "serving"
        elif v in served or v in parents:
            state = "served"
        elif row["gate"].get("result") == "Failed":
            state = "gate failed"
        elif row.get("phase") in ("Pending", "Running"):
            state = "running"
        elif row.get("phase") == "Failed":
            state = "failed"
        else:
            state = "not served"
        row["state"] = state
        row["promoted"] = bool(row["trigger"]) and state in ("serving", "served", "rolled back")
    return sorted(rows.values(), key=lambda r: (r.get("trainedAt") or "", r["version"]))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(rows: Sequence[Obj]) -> str:
    """The rows as an aligned text table (the gate's metric and value; tuned parameters marked with *)."""
    lines = [COLUMNS]
    for r in rows:
        params = ", ".join(f"{k}{'*' if k in r['tuned'] else ''}={json.dumps(v)}" for k, v in sorted(r["params"].items()))
        metric = r["gate"].get("metric") or next(iter(r["metrics"]), "")
        value = r["gate"].get("value", r["metrics"].get(metric))
        state = r["state"] + (" (promoted)" if r["promoted"] and r["state"] != "rolled back" else "")
        lines.append((
            r["version"], r["parent"] or "-", _cut(r["trigger"] or "-", 28), (r["dataDigest"] or "-").removeprefix("sha256:")[:12],
            _cut(params or "-", 44), f"{metric} {value:.4g}" if metric and isinstance(value, (int, float)) else "-",
            r["gate"].get("result") or "-", state,
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
