"""spec.tuning and permutation importance: real searches on scikit-learn's bundled data sets, through the real trainer.

The tuning tests run scikit-learn's searchers with n_jobs 1 (the machine is
shared; parallelism is measured in bench/training/tuning.py, not asserted).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_iris

from mlops_operator.api.trainingjob import TrainingJobStatus
from mlops_operator.api.validation import validate_object
from mlops_operator.controllers.trainingjob import _explained
from mlops_operator.runtime.pipeline import SpecError
from mlops_operator.runtime.trainer import MAX_SUMMARY_BYTES, _fit_summary, train
from mlops_operator.runtime.tuning import available_cpus
from mlops_operator.store import ModelStore
from tests.unit.test_trainer import manifest, no_artifacts, quiet


def tuned(tuning: dict[str, Any], **kw: Any) -> dict[str, Any]:
    doc = manifest(**kw)
    doc["spec"]["tuning"] = {"cv": 3, "nJobs": 1, **tuning}
    return doc


# --------------------------------------------------------------------------- searches that must find the better parameters


def test_tuning_grid_finds_the_known_better_depth_and_stores_it(tmp_path: Path) -> None:
    """A depth-1 tree can separate only two of iris' three species; the grid must pick a deeper one and say what it gained."""
    doc = tuned({"strategy": "grid", "space": {"max_depth": [1, 4]}},
                estimator="sklearn.tree.DecisionTreeClassifier", params={"max_depth": 1, "random_state": 0},
                gate={"metric": "accuracy", "minimum": 0.8})
    result = train(doc, tmp_path, log=quiet)
    tuning = result.metadata["tuning"]
    assert tuning["bestParams"] == {"max_depth": 4} and tuning["scoring"] == "accuracy"
    assert tuning["defaultScore"] < 0.7 < 0.9 < tuning["bestScore"], "depth 1 tops out at two thirds"
    assert [r["params"] for r in sorted(tuning["table"], key=lambda r: r["rank"])] == [{"max_depth": 4}, {"max_depth": 1}]
    assert result.metadata["params"] == {"max_depth": 4, "random_state": 0}, "the effective parameters"
    loaded = ModelStore(tmp_path).load_model(result.namespace, result.model, result.version, expected_sha256=result.sha256)
    assert loaded.named_steps["model"].get_params()["max_depth"] == 4, "the winner was refitted and stored"
    assert result.metrics["accuracy"] >= 0.9 and result.gate["result"] == "Passed"
    summary = result.summary()["tuning"]
    assert summary["bestParams"] == {"max_depth": 4} and summary["candidates"] == 2 and "table" not in summary


def test_tuning_regression_ranks_by_the_gates_rmse_lower_is_better(tmp_path: Path) -> None:
    doc = tuned({"strategy": "grid", "space": {"alpha": [0.01, 10000.0]}}, model="diabetes", source="sklearn://diabetes",
                target="progression", estimator="sklearn.linear_model.Ridge", params={},
                gate={"metric": "rmse", "maximum": 80})
    result = train(doc, tmp_path, log=quiet)
    tuning = result.metadata["tuning"]
    by_alpha = {r["params"]["alpha"]: r["score"] for r in tuning["table"]}
    assert tuning["scoring"] == "rmse" and tuning["bestParams"] == {"alpha": 0.01}
    assert 40 < by_alpha[0.01] < by_alpha[10000.0], "scores in rmse units, the smaller one wins"
    assert tuning["bestScore"] == by_alpha[0.01]


def test_tuning_random_samples_ranges_within_their_bounds(tmp_path: Path) -> None:
    doc = tuned({"strategy": "random", "space": {"C": {"loguniform": [0.0001, 100]}, "fit_intercept": [True, False]},
                 "budget": {"candidates": 6}, "seed": 3},
                model="cancer", source="sklearn://breast_cancer", target="diagnosis",
                estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 300},
                gate={"metric": "roc_auc_ovr", "minimum": 0.9})
    result = train(doc, tmp_path, log=quiet)
    table = result.metadata["tuning"]["table"]
    assert len(table) == 6 and len({r["params"]["C"] for r in table}) == 6
    assert all(0.0001 <= r["params"]["C"] <= 100 for r in table)
    assert result.metadata["tuning"]["scoring"] == "roc_auc_ovr", "the gate's metric ranks the candidates"
    best = result.metadata["tuning"]["bestParams"]["C"]
    assert best > 0.001, "the most regularised candidates lose"
    json.dumps(result.metadata)  # numpy values became plain JSON


def test_tuning_halving_stays_within_its_candidate_budget(tmp_path: Path) -> None:
    doc = tuned({"strategy": "halving", "space": {"max_depth": {"int": [1, 12]}, "min_samples_leaf": {"int": [1, 20]}},
                 "budget": {"candidates": 9}},
                model="digits", source="sklearn://digits", target="digit",
                estimator="sklearn.tree.DecisionTreeClassifier", params={"random_state": 0},
                gate={"metric": "accuracy", "minimum": 0.5})
    result = train(doc, tmp_path, log=quiet)
    tuning = result.metadata["tuning"]
    first = [r for r in tuning["table"] if r["round"] == 0]
    last_round = max(r["round"] for r in tuning["table"])
    assert len(first) == 9 and tuning["candidates"] == 9, "nine sampled candidates, never more"
    assert last_round >= 1 and len([r for r in tuning["table"] if r["round"] == last_round]) <= 3
    rows = sorted({(r["round"], r["rows"]) for r in tuning["table"]})
    assert rows[0][1] < rows[-1][1], "later rounds see more rows"
    winner = next(r for r in tuning["table"] if r["rank"] == 1)
    assert winner["round"] == last_round and winner["params"] == tuning["bestParams"]


def test_tuning_time_budget_stops_between_batches(tmp_path: Path) -> None:
    doc = tuned({"strategy": "random", "space": {"n_neighbors": {"int": [1, 40]}}, "budget": {"candidates": 40, "seconds": 0.001}},
                estimator="sklearn.neighbors.KNeighborsClassifier", params={})
    result = train(doc, tmp_path, log=quiet)
    tuning = result.metadata["tuning"]
    assert len(tuning["table"]) == 2, "the first batch (2 per CPU, 1 CPU) runs; none after the budget"
    assert "time budget of 0.001s was spent after 2 of 40 candidates" in tuning["stopped"]


def test_tuning_uses_the_cpus_the_pod_may_use_by_default(tmp_path: Path) -> None:
    doc = tuned({"strategy": "grid", "space": {"n_neighbors": [3, 5]}}, estimator="sklearn.neighbors.KNeighborsClassifier",
                params={})
    del doc["spec"]["tuning"]["nJobs"]
    result = train(doc, tmp_path, log=quiet)
    assert result.metadata["tuning"]["nJobs"] == available_cpus() >= 1


# --------------------------------------------------------------------------- validation, with paths


@pytest.mark.parametrize("space,error", [
    ({"max_dept": [1, 2]}, "spec.tuning.space.max_dept: sklearn.tree.DecisionTreeClassifier has no parameter 'max_dept'"),
    ({"max_depth": [2, 0]}, "spec.tuning.space.max_depth[1]: The 'max_depth' parameter"),
    ({"criterion": ["gini", "purity"]}, "spec.tuning.space.criterion[1]"),
])
def test_tuning_space_errors_name_the_path_before_reading_data(tmp_path: Path, space, error) -> None:
    doc = tuned({"strategy": "grid", "space": space}, source="file:///nonexistent/rows.csv",
                estimator="sklearn.tree.DecisionTreeClassifier", params={})
    with pytest.raises(SpecError) as exc:
        train(doc, tmp_path, log=quiet)
    assert error in str(exc.value)
    assert no_artifacts(tmp_path)


def test_tuning_a_grid_over_its_budget_is_refused(tmp_path: Path) -> None:
    doc = tuned({"strategy": "grid", "space": {"max_depth": [1, 2, 3], "min_samples_leaf": [1, 2]}, "budget": {"candidates": 5}},
                estimator="sklearn.tree.DecisionTreeClassifier", params={})
    with pytest.raises(SpecError, match=r"spec.tuning.budget.candidates: the grid has 6 combinations, more than the budget of 5"):
        train(doc, tmp_path, log=quiet)


@pytest.mark.parametrize("tuning,error", [
    ({"strategy": "grid", "space": {"max_depth": {"int": [1, 5]}}}, "spec.tuning.space.max_depth: a grid search takes lists"),
    ({"strategy": "random", "space": {"C": {"loguniform": [0, 1]}}}, "spec.tuning.space.C: loguniform: low must be above 0"),
    ({"strategy": "random", "space": {"C": {"normal": [0, 1]}}}, "spec.tuning.space.C: a list of values, or one range"),
    ({"strategy": "random", "space": {"C": []}}, "spec.tuning.space.C: a list of 1 to 1000 values"),
    ({"strategy": "random", "space": {"model__C": [1]}}, "spec.tuning.space.model__C"),
    ({"strategy": "halving", "space": {"C": [1]}, "budget": {"seconds": 60}}, "spec.tuning.budget.seconds"),
    ({"strategy": "random", "space": {"C": [1]}, "scoring": "f1_macro"}, "spec.tuning.scoring: the search must rank"),
    ({"strategy": "bayes", "space": {"C": [1]}}, "spec.tuning.strategy: must be 'grid', 'random' or 'halving'"),
])
def test_tuning_spec_errors_name_the_field(tuning, error) -> None:
    doc = manifest(gate={"metric": "accuracy", "minimum": 0.5})
    doc["spec"]["tuning"] = tuning
    errors = [str(e) for e in validate_object(doc)]
    assert any(e.startswith(error) for e in errors), errors


# --------------------------------------------------------------------------- what reaches status


def test_tuning_and_importance_reach_status_within_the_summary_limit(tmp_path: Path) -> None:
    doc = tuned({"strategy": "random", "space": {"n_neighbors": {"int": [1, 30]}, "weights": ["uniform", "distance"]},
                 "budget": {"candidates": 8}, "top": 3},
                estimator="sklearn.neighbors.KNeighborsClassifier", params={})
    summary = train(doc, tmp_path, log=quiet).summary()
    status = _explained(json.loads(_fit_summary(summary)))
    TrainingJobStatus.model_validate(status)
    assert len(status["tuning"]["top"]) == 3 and status["tuning"]["candidates"] == 8
    scores = [c["score"] for c in status["tuning"]["top"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == status["tuning"]["bestScore"]
    assert status["importance"][0]["feature"].startswith("petal") and len(status["importance"]) == 4
    # A summary with a long table of long parameters is trimmed to fit the termination log, top rows last kept.
    big = copy.deepcopy(summary)
    big["tuning"]["top"] = [{"params": {"p": "x" * 300, "i": i}, "score": 0.5, "std": 0.1} for i in range(20)]
    text = _fit_summary(big)
    assert len(text.encode()) <= MAX_SUMMARY_BYTES
    kept = json.loads(text)
    assert 0 < len(kept["tuning"]["top"]) < 20 and kept["tuning"]["top"][0]["params"]["i"] == 0
    assert kept["tuning"]["bestParams"] == summary["tuning"]["bestParams"] and kept["metrics"] == summary["metrics"]


# --------------------------------------------------------------------------- permutation importance


def test_importance_ranks_informative_columns_above_noise(tmp_path: Path) -> None:
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    rng = np.random.default_rng(0)
    frame["noise"] = rng.normal(size=len(frame))
    frame["species"] = frame.pop("target").map(dict(enumerate(iris.target_names)))
    path = tmp_path / "iris_noise.csv"
    frame.to_csv(path, index=False)
    doc = manifest(source=path.as_uri(), params={"n_estimators": 50, "random_state": 0})
    result = train(doc, tmp_path / "store", log=quiet)
    importance = result.metadata["importance"]
    ranked = [r["feature"] for r in importance["features"]]
    assert importance["metric"] == "accuracy" and importance["rows"] == len(result.y_test) and importance["repeats"] == 5
    assert set(ranked[:2]) <= {"petal_length", "petal_width"}, ranked
    noise = next(r for r in importance["features"] if r["feature"] == "noise")
    # A shuffled noise column moves at most a couple of the 38 held-out rows; either petal column moves many more.
    assert noise["importance"] <= 0.06 and noise["importance"] + 0.05 < importance["features"][1]["importance"]
    assert sorted(ranked) == sorted(["sepal_length", "sepal_width", "petal_length", "petal_width", "noise"])
    assert result.summary()["importance"] == importance["features"][:5]
