"""spec.tuning: search wall time on 1 CPU against all of them, and what the search gains over the default parameters.

    python bench/training/tuning.py [--rounds 3] [--json out.json]

Each case is a real TrainingJob run through the trainer (the same code a
training pod runs) on a data set that ships with scikit-learn: once without
tuning (the estimator's default parameters), then with the same search at
nJobs 1 and at nJobs = every CPU this process may use, interleaved, medians
of the rounds. Reported: the search's wall time at both settings and their
ratio, the cross-validated score of the defaults and of the winner on the
same folds, and the held-out metric (the rows the gate judges) of the
default run and of the tuned one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from mlops_operator.runtime.trainer import train  # noqa: E402
from mlops_operator.runtime.tuning import available_cpus  # noqa: E402

CASES: list[dict[str, Any]] = [
    {
        "name": "digits, DecisionTreeClassifier, random 24",
        "model": "digits", "source": "sklearn://digits", "target": "digit",
        "estimator": "sklearn.tree.DecisionTreeClassifier", "params": {"random_state": 0},
        "gate": {"metric": "accuracy", "minimum": 0.5},
        "tuning": {"strategy": "random", "cv": 3, "budget": {"candidates": 24},
                   "space": {"max_depth": {"int": [4, 30]}, "min_samples_leaf": {"int": [1, 10]},
                             "criterion": ["gini", "entropy"], "max_features": {"uniform": [0.3, 1.0]}}},
    },
    {
        "name": "diabetes, RandomForestRegressor, random 12",
        "model": "diabetes", "source": "sklearn://diabetes", "target": "progression",
        "estimator": "sklearn.ensemble.RandomForestRegressor", "params": {"n_estimators": 100, "random_state": 0},
        "gate": {"metric": "rmse", "maximum": 100},
        "tuning": {"strategy": "random", "cv": 3, "budget": {"candidates": 12},
                   "space": {"min_samples_leaf": {"int": [1, 30]}, "max_features": {"uniform": [0.2, 1.0]}}},
    },
    {
        "name": "breast_cancer, KNeighborsClassifier, halving 27",
        "model": "cancer", "source": "sklearn://breast_cancer", "target": "diagnosis",
        "estimator": "sklearn.neighbors.KNeighborsClassifier", "params": {},
        "gate": {"metric": "accuracy", "minimum": 0.5},
        "tuning": {"strategy": "halving", "cv": 3, "budget": {"candidates": 27},
                   "space": {"n_neighbors": {"int": [1, 60]}, "weights": ["uniform", "distance"], "p": [1, 2]}},
    },
]


def _job(case: dict[str, Any], tuning: dict[str, Any] | None, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": case["model"],
        "data": {"source": case["source"], "target": case["target"], "validation": {"fraction": 0.25, "seed": 0}},
        "estimator": {"class": case["estimator"], "params": case["params"]},
        "qualityGate": case["gate"],
    }
    if tuning is not None:
        spec["tuning"] = tuning
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": "bench", "generation": 1}, "spec": spec}


def _quiet(*args: Any, **kwargs: Any) -> None:
    pass


def run_case(case: dict[str, Any], rounds: int, cpus: int) -> dict[str, Any]:
    metric = case["gate"]["metric"]
    seconds: dict[int, list[float]] = {1: [], cpus: []}
    with tempfile.TemporaryDirectory() as tmp:
        default = train(_job(case, None, "default"), Path(tmp) / "default", log=_quiet)
        tuned_meta: dict[str, Any] = {}
        tuned_metric = None
        for r in range(rounds):
            for n_jobs in ((1, cpus) if r % 2 == 0 else (cpus, 1)):  # interleaved: drift in the machine's load hits both
                job = _job(case, {**case["tuning"], "nJobs": n_jobs}, f"tuned-{n_jobs}-{r}")
                result = train(job, Path(tmp) / f"s{n_jobs}-{r}", log=_quiet)
                seconds[n_jobs].append(result.metadata["tuning"]["seconds"])
                tuned_meta, tuned_metric = result.metadata["tuning"], result.metrics[metric]
    one, all_ = statistics.median(seconds[1]), statistics.median(seconds[cpus])
    return {
        "case": case["name"], "strategy": case["tuning"]["strategy"], "metric": metric, "cpus": cpus,
        "candidates": tuned_meta["candidates"], "seconds_1cpu": round(one, 2), "seconds_all": round(all_, 2),
        "speedup": round(one / all_, 2) if all_ else None,
        "cv_default": tuned_meta["defaultScore"], "cv_best": tuned_meta["bestScore"], "best_params": tuned_meta["bestParams"],
        "heldout_default": round(default.metrics[metric], 4), "heldout_tuned": round(tuned_metric, 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    cpus = available_cpus()
    if cpus < 2:
        print("only one CPU is available: nothing to compare", file=sys.stderr)
        return 1
    rows = [run_case(case, args.rounds, cpus) for case in CASES]
    print(f"CPUs available: {cpus}; load average at the end: {os.getloadavg()[0]:.1f}; medians of {args.rounds} rounds")
    print("| case | candidates | search, 1 CPU | search, all | speed-up | CV default -> best | held-out default -> tuned |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['candidates']} | {r['seconds_1cpu']:.2f} s | {r['seconds_all']:.2f} s | {r['speedup']}x | "
              f"{r['metric']} {r['cv_default']:.4g} -> {r['cv_best']:.4g} | {r['heldout_default']:.4g} -> {r['heldout_tuned']:.4g} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
