"""Drifted features ranked by their importance to the model, so "drifted but unimportant" reads differently.

The serving version's ``metadata.json`` carries the permutation importance
measured on its held-out rows at training time; a check's scores get each
feature's importance, and the check's message (the Drifting condition, the
DriftDetected event) names the drifted features, most important first.
"""

from __future__ import annotations

from typing import Any

from ..cluster import Obj
from .checks import CheckResult

UNIMPORTANT_SHARE = 0.1
"""A feature whose importance is below this share of the most important one's (or not above 0) is 'unimportant'."""


def importances(metadata: Obj | None) -> dict[str, float]:
    """Feature -> permutation importance, from a version's metadata ({} when it has none)."""
    rows = ((metadata or {}).get("importance") or {}).get("features") or []
    out: dict[str, float] = {}
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("feature"), str) and isinstance(row.get("importance"), (int, float)):
            out[row["feature"]] = float(row["importance"])
    return out


def is_important(value: float, top: float) -> bool:
    return value > 0 and value >= UNIMPORTANT_SHARE * top


def rank_by_importance(result: CheckResult, metadata: Obj | None) -> None:
    """Add ``importance`` to each feature's score, and the drifted features by importance to the message."""
    known = importances(metadata)
    if not known:
        return
    top = max(known.values())
    for score in result.scores:
        if score.get("feature") in known:
            score["importance"] = round(known[score["feature"]], 6)
    drifted: dict[str, Any] = {}
    for score in result.scores:
        if score.get("drifted") and score.get("feature") in known:
            drifted[score["feature"]] = known[score["feature"]]
    if not drifted:
        return
    ranked = sorted(drifted.items(), key=lambda kv: -kv[1])
    parts = [f"{name} ({value:.3g}{'' if is_important(value, top) else ', unimportant'})" for name, value in ranked[:10]]
    more = f" and {len(ranked) - 10} more" if len(ranked) > 10 else ""
    result.message += "; drifted features by importance to the model: " + ", ".join(parts) + more
