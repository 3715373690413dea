"""``spec.tuning``: a parameter search with scikit-learn's searchers, before the one fit the trainer stores.

The candidates are cross-validated on the training rows only (the held-out
rows stay for the metrics and the gate), ranked by the gate's metric, and
fitted in parallel on the CPUs the pod may use. The trainer then refits the
winner on all training rows. The whole table goes to ``metadata.json``; the
summary (and so the TrainingJob's status) gets the winner and the best few.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..api.trainingjob import LOWER_IS_BETTER, Task, Tuning
from .pipeline import SpecError, json_value

STEP = "model"
"""The estimator's step in the trainer's pipeline: a space's ``C`` is the pipeline's ``model__C``."""
DEFAULT_CANDIDATES = 20
SCORERS = {
    "accuracy": "accuracy", "balanced_accuracy": "balanced_accuracy", "f1_macro": "f1_macro", "roc_auc_ovr": "roc_auc_ovr",
    "log_loss": "neg_log_loss", "rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2",
}
"""Each gate metric as a scikit-learn scorer (greater is better: the lower-is-better ones negated)."""

Log = Callable[..., None]


def scoring_metric(tuning: Tuning | None, gate_metric: str | None, task: Task) -> str:
    """What the search ranks by: ``tuning.scoring``, else the gate's metric, else accuracy / rmse."""
    if tuning is not None and tuning.scoring:
        return tuning.scoring
    return gate_metric or ("accuracy" if task == "classification" else "rmse")


def in_metric_units(metric: str, score: float) -> float:
    """A scorer's value as the metric itself (rmse positive again)."""
    return -score if metric in LOWER_IS_BETTER else score


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (a pod's limits.cpu)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, math.floor(quota)) if quota else cpus)


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "200000 100000"
        parts = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if parts and parts[0] != "max":
            return max(1.0, int(parts[0]) / int(parts[1]))
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return max(1.0, quota / period) if quota > 0 else None
    except (OSError, ValueError):
        return None


def check_space(tuning: Tuning, estimator: Any, class_path: str) -> None:
    """Every name in the space is a parameter of the estimator, and every listed value (and range bound) one it accepts.

    Raises :class:`SpecError` naming the path (``spec.tuning.space.max_dept``) before any data is read.
    """
    from sklearn.base import clone

    valid = estimator.get_params(deep=False)
    for name, values in tuning.space.items():
        path = f"spec.tuning.space.{name}"
        if name not in valid:
            raise SpecError(f"{path}: {class_path} has no parameter {name!r}; valid: {', '.join(sorted(valid))}")
        if isinstance(values, list):
            probes = list(enumerate(values))
        else:
            kind, (low, high) = next(iter(values.items()))
            probes = [(0, int(low) if kind == "int" else float(low)), (1, int(high) if kind == "int" else float(high))]
        for i, value in probes:
            trial = clone(estimator).set_params(**{name: value})
            validate = getattr(trial, "_validate_params", None)
            if callable(validate) and hasattr(trial, "_parameter_constraints"):
                try:
                    validate()
                except (TypeError, ValueError) as exc:
                    raise SpecError(f"{path}[{i}]: {exc}") from None


def distributions(space: dict[str, Any]) -> dict[str, Any]:
    """The space as scikit-learn takes it: lists stay lists, ranges become scipy distributions."""
    from scipy import stats

    out: dict[str, Any] = {}
    for name, values in space.items():
        if isinstance(values, list):
            out[name] = values
            continue
        kind, (low, high) = next(iter(values.items()))
        if kind == "uniform":
            out[name] = stats.uniform(low, high - low)
        elif kind == "loguniform":
            out[name] = stats.loguniform(low, high)
        else:
            out[name] = stats.randint(int(low), int(high) + 1)
    return out


@dataclass
class SearchResult:
    """What a search found, in the metric's own units."""

    strategy: str
    metric: str
    best_params: dict[str, Any]
    best_score: float | None
    default_score: float | None
    table: list[dict[str, Any]]
    """Every candidate evaluated: params, score, std, rank (1 = best), fitSeconds (and round/rows for halving)."""
    seconds: float
    n_jobs: int
    cv: int
    stopped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self, top: int) -> dict[str, Any]:
        """The status' view: the winner, the default's score, the best ``top``."""
        ranked = sorted((r for r in self.table if r["score"] is not None), key=lambda r: r["rank"])
        out = {
            "strategy": self.strategy, "scoring": self.metric, "bestParams": self.best_params, "bestScore": self.best_score,
            "defaultScore": self.default_score, "candidates": len({_key(r["params"]) for r in self.table}),
            "seconds": round(self.seconds, 3), "nJobs": self.n_jobs,
            "top": [{"params": r["params"], "score": r["score"], "std": r["std"]} for r in _unique(ranked)[:top]],
        }
        if self.stopped:
            out["stopped"] = self.stopped
        return out

    def metadata(self) -> dict[str, Any]:
        """``metadata.json``'s ``tuning``: the summary plus the whole table."""
        return {**self.summary(len(self.table)), "cv": self.cv, "table": self.table, **self.extra}


def _key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Halving scores a candidate once per round: keep its latest (best-ranked) row."""
    seen: set[str] = set()
    out = []
    for r in rows:
        k = _key(r["params"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _folds(task: Task, cv: int, seed: int) -> Any:
    from sklearn.model_selection import KFold, StratifiedKFold

    return StratifiedKFold(cv, shuffle=True, random_state=seed) if task == "classification" else KFold(cv, shuffle=True, random_state=seed)


def _prefixed(params: dict[str, Any]) -> dict[str, Any]:
    return {f"{STEP}__{k}": v for k, v in params.items()}


def _plain(value: Any) -> Any:
    value = json_value(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows(results: dict[str, Any], metric: str, offset: int = 0) -> list[dict[str, Any]]:
    """cv_results_ as table rows (params without the step prefix, scores in metric units)."""
    rows = []
    for i, params in enumerate(results["params"]):
        mean, std = results["mean_test_score"][i], results["std_test_score"][i]
        row = {
            "params": {k.split("__", 1)[1]: _plain(v) for k, v in params.items()},
            "score": None if not np.isfinite(mean) else round(in_metric_units(metric, float(mean)), 6),
            "std": None if not np.isfinite(std) else round(float(std), 6),
            "fitSeconds": round(float(results["mean_fit_time"][i]), 4),
        }
        if "iter" in results:
            row["round"] = int(results["iter"][i])
            row["rows"] = int(results["n_resources"][i])
        rows.append(row)
    return rows


def _rank(rows: list[dict[str, Any]], metric: str, halving: bool) -> None:
    """rank 1 = best; a failed candidate (no score) ranks last; for halving later rounds rank first."""
    sign = 1 if metric in LOWER_IS_BETTER else -1
    order = sorted(range(len(rows)), key=lambda i: (
        -(rows[i].get("round", 0)) if halving else 0,
        rows[i]["score"] is None,
        sign * (rows[i]["score"] or 0.0),
    ))
    for rank, i in enumerate(order, 1):
        rows[i]["rank"] = rank


def _candidates(tuning: Tuning) -> list[dict[str, Any]]:
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if tuning.strategy == "grid":
        grid = list(ParameterGrid(tuning.space))
        if tuning.budget.candidates is not None and len(grid) > tuning.budget.candidates:
            raise SpecError(f"spec.tuning.budget.candidates: the grid has {len(grid)} combinations, "
                            f"more than the budget of {tuning.budget.candidates}")
        return grid
    n = tuning.budget.candidates or DEFAULT_CANDIDATES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a space of lists smaller than n: each combination once
        # A range is sampled with replacement: draw more, keep the first n distinct (a repeat would waste the budget).
        drawn = ParameterSampler(distributions(tuning.space), n_iter=10 * n, random_state=tuning.seed)
        out: dict[str, dict[str, Any]] = {}
        for candidate in drawn:
            out.setdefault(_key({k: _plain(v) for k, v in candidate.items()}), candidate)
            if len(out) == n:
                break
        return list(out.values())


def search(pipeline: Any, X: np.ndarray, y: np.ndarray, tuning: Tuning, metric: str, task: Task, log: Log,
           *, clock: Callable[[], float] = time.monotonic) -> SearchResult:
    """Cross-validate the candidates of ``tuning`` on ``(X, y)``; the winner's parameters, unfitted."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, cross_val_score

    n_jobs = tuning.n_jobs or available_cpus()
    folds = _folds(task, tuning.cv, tuning.seed)
    scorer = SCORERS[metric]
    started = clock()
    stopped = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        if tuning.strategy == "halving":
            rows, best = _halving(pipeline, X, y, tuning, scorer, folds, n_jobs, metric)
        else:
            candidates = _candidates(tuning)
            rows = []
            # Without a time budget one search takes every candidate (best use of the CPUs); with one, batches
            # of a few candidates per CPU, and no batch starts after the budget is spent.
            batch = len(candidates) if tuning.budget.seconds is None else max(2 * n_jobs, 1)
            for start in range(0, len(candidates), batch):
                if tuning.budget.seconds is not None and start and clock() - started >= tuning.budget.seconds:
                    stopped = (f"the time budget of {tuning.budget.seconds:g}s was spent after {start} of "
                               f"{len(candidates)} candidates")
                    break
                grid = [{k: [v] for k, v in _prefixed(c).items()} for c in candidates[start:start + batch]]
                found = GridSearchCV(pipeline, grid, scoring=scorer, cv=folds, n_jobs=n_jobs, refit=False, error_score=np.nan)
                found.fit(X, y)
                rows += _rows(found.cv_results_, metric)
            _rank(rows, metric, halving=False)
            best = min(rows, key=lambda r: r["rank"])
        default = cross_val_score(pipeline, X, y, scoring=scorer, cv=folds, n_jobs=n_jobs, error_score=np.nan)
    if best["score"] is None:
        raise SpecError("spec.tuning: every candidate failed to fit; check the space against the estimator's documentation")
    default_score = float(np.mean(default))
    result = SearchResult(
        strategy=tuning.strategy, metric=metric, best_params=best["params"], best_score=best["score"],
        default_score=round(in_metric_units(metric, default_score), 6) if math.isfinite(default_score) else None,
        table=rows, seconds=clock() - started, n_jobs=n_jobs, cv=tuning.cv, stopped=stopped,
    )
    log("tuned", strategy=tuning.strategy, scoring=metric, candidates=len(_unique(rows)), bestScore=result.best_score,
        defaultScore=result.default_score, bestParams=result.best_params, seconds=round(result.seconds, 3), nJobs=n_jobs,
        **({"stopped": stopped} if stopped else {}))
    return result


def _halving(pipeline: Any, X: np.ndarray, y: np.ndarray, tuning: Tuning, scorer: str, folds: Any, n_jobs: int,
             metric: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Successive halving: ``budget.candidates`` sampled candidates, a third of them kept each round on 3x the rows."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401 - makes the class importable
    from sklearn.model_selection import HalvingRandomSearchCV

    found = HalvingRandomSearchCV(
        pipeline, _prefixed(distributions(tuning.space)), n_candidates=tuning.budget.candidates or DEFAULT_CANDIDATES,
        factor=3, scoring=scorer, cv=folds, n_jobs=n_jobs, refit=False, random_state=tuning.seed, error_score=np.nan,
    )
    found.fit(X, y)
    rows = _rows(found.cv_results_, metric)
    _rank(rows, metric, halving=True)
    best_params = {k.split("__", 1)[1]: _plain(v) for k, v in found.best_params_.items()}
    best = next((r for r in rows if r["params"] == best_params and r.get("round") == max(r.get("round", 0) for r in rows)),
                min(rows, key=lambda r: r["rank"]))
    return rows, best
