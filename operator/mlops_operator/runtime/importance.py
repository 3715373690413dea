"""Permutation importance on the held-out rows: which input columns the fitted model leans on.

Each column is shuffled in turn and the drop of the gate's metric measured,
on rows the model never saw, through the whole pipeline (so a categorical
column counts once, not once per one-hot level). Stored in ``metadata.json``;
the top few go to the TrainingJob's status, and a DriftPolicy ranks drifted
features by it. It never fails a run: a model it cannot score gets the reason.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np

from .tuning import SCORERS

REPEATS = 5
MAX_ROWS = 2000
"""Held-out rows used at most (a random subset beyond), so the cost stays bounded: features x repeats predictions."""
TOP = 5
"""Features in the TrainingJob's status."""

Log = Callable[..., None]


def permutation_ranking(model: Any, X: np.ndarray, y: np.ndarray, features: Sequence[str], metric: str, *,
                        seed: int = 0, repeats: int = REPEATS, max_rows: int = MAX_ROWS, log: Log | None = None) -> dict[str, Any]:
    """``{"metric", "repeats", "rows", "features": [{"feature", "importance", "std"}, ...]}``, most important first.

    ``importance`` is the mean drop of ``metric`` (in its own direction: a
    drop of accuracy or a rise of rmse is positive) when the column is shuffled.
    """
    from sklearn.inspection import permutation_importance

    rng = np.random.default_rng(seed)
    if len(y) > max_rows:
        pick = np.sort(rng.choice(len(y), max_rows, replace=False))
        X, y = X[pick], y[pick]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = permutation_importance(model, X, y, scoring=SCORERS[metric], n_repeats=repeats, random_state=seed, n_jobs=1)
    except Exception as exc:  # noqa: BLE001 - an explanation never fails the run
        reason = f"{type(exc).__name__}: {exc}"[:500]
        if log:
            log("importance", level="warning", message=f"permutation importance could not be computed: {reason}")
        return {"metric": metric, "error": reason}
    ranked = sorted(
        ({"feature": str(f), "importance": round(float(m), 6), "std": round(float(s), 6)}
         for f, m, s in zip(features, found.importances_mean, found.importances_std)),
        key=lambda r: -r["importance"],
    )
    if log:
        log("importance", metric=metric, rows=int(len(y)), top=[(r["feature"], r["importance"]) for r in ranked[:TOP]])
    return {"metric": metric, "repeats": repeats, "rows": int(len(y)), "features": ranked}
