"""Errors tell the truth, allowed modules reach serving, version warnings reach the operator — real servers on 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import sklearn
import sklearn.base
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from mlops_operator.api.modeldeployment import ModelDeploymentSpec
from mlops_operator.controllers.modeldeployment import server_args
from mlops_operator.controllers.settings import Settings
from mlops_operator.runtime.sensor import parse_metrics
from mlops_operator.store import ModelStore
from tests.waiting import wait_until

from .serving_estimators import FAIL_ON, ThresholdClassifier
from .test_server_support import Server, _pipeline, _write, run_serve

ALLOW = "tests.unit.serving_estimators"
FEATURES = [{"name": n, "dtype": "float64", "kind": "numeric"} for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
OTHER_SKLEARN = "1.0.0"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``custom``: a ThresholdClassifier (outside scikit-learn); ``old``: a forest pickled by another scikit-learn."""
    root = tmp_path_factory.mktemp("store")
    st = ModelStore(root)
    iris = load_iris()
    X, y = iris.data.astype(np.float64), iris.target
    _write(st, "custom", "v1", ThresholdClassifier(), X, y, FEATURES, "classification", "species")  # type: ignore[arg-type]
    # Another scikit-learn wrote this artifact: the version scikit-learn records in every estimator's state is
    # read from sklearn.base when pickling, so the test sets it there while the artifact is written.
    saved = sklearn.base.__version__
    sklearn.base.__version__ = OTHER_SKLEARN  # type: ignore[attr-defined]
    try:
        _write(st, "old", "v1", _pipeline(RandomForestClassifier(n_estimators=5, random_state=0), 4, []), X, y,
               FEATURES, "classification", "species")
    finally:
        sklearn.base.__version__ = saved  # type: ignore[attr-defined]
    return root


@pytest.fixture(scope="module")
def custom(store: Path):  # type: ignore[no-untyped-def]
    s = Server("--store", str(store), "--model", "custom", "--allow-module", ALLOW)
    yield s
    assert s.stop() == 0


def test_without_allow_module_the_server_refuses_to_start_and_says_why(store: Path) -> None:
    r = run_serve("--store", str(store), "--model", "custom")
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "ThresholdClassifier" in lines[0] and "--allow-module" in lines[0]


def test_with_allow_module_it_serves(custom: Server, store: Path) -> None:
    rows = [[4.5, 3.0, 1.3, 0.2], [7.5, 3.0, 6.0, 2.0]]
    status, _, body = custom.request("POST", "/v1/models/custom:predict", {"instances": rows})
    assert status == 200, body
    model = ModelStore(store, trusted_modules=(*ModelStore(store).trusted_modules, ALLOW + ".")).load_model("default", "custom", "v1")
    assert body["predictions"] == model.predict(np.array(rows)).tolist()


def test_a_model_exception_is_a_500_with_an_error_id_logged_and_counted(custom: Server) -> None:
    before = parse_metrics(custom.metrics()).requests.get(("v1", "500"), 0)
    status, _, body = custom.request("POST", "/v1/models/custom:predict", {"instances": [[FAIL_ON, 3.0, 1.3, 0.2]]})
    assert status == 500, body
    assert set(body) == {"error", "error_id"} and body["error_id"] in body["error"]
    eid = body["error_id"]
    # The server's stderr reaches custom.lines through a reader thread: wait for the whole traceback.
    def traceback_logged() -> str | None:
        text = "".join(custom.lines)
        return text if f"error id {eid}" in text and "RuntimeError" in text.split(f"error id {eid}")[1] else None

    logged = wait_until(traceback_logged, 10, what=f"the traceback of error {eid} in the log")
    assert re.search(rf"error id {eid}\).*RuntimeError", logged), logged[-2000:]
    assert "Traceback (most recent call last)" in logged.split(f"error id {eid}")[1]
    snap = parse_metrics(custom.metrics())
    assert snap.requests.get(("v1", "500"), 0) - before == 1
    # Input the schema refuses is still the client's error, named by field, and the server goes on serving.
    status, _, body = custom.request("POST", "/v1/models/custom:predict", {"instances": [["x", 3.0, 1.3, 0.2]]})
    assert status == 400 and body["field"] == "instances[0][0]"
    assert custom.request("POST", "/v1/models/custom:predict", {"instances": [[5.0, 3.0, 1.3, 0.2]]})[0] == 200


def test_a_model_from_another_scikit_learn_serves_and_says_so(store: Path) -> None:
    s = Server("--store", str(store), "--model", "old")
    try:
        assert s.request("POST", "/v1/models/old:predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]})[0] == 200
        logged = "".join(s.lines)
        assert "InconsistentVersionWarning" in logged and OTHER_SKLEARN in logged
        text = s.metrics()
        gauge = [line for line in text.splitlines() if line.startswith("mlops_model_inconsistent_version ")]
        assert gauge and float(gauge[0].split()[-1]) >= 1
        assert f'trained_with="{OTHER_SKLEARN}"' in text and f'serving_with="{sklearn.__version__}"' in text
        meta = s.request("GET", "/v2/models/old")[2]
        mismatch = meta["parameters"]["sklearn_version_mismatch"]
        assert {m["estimator"] for m in mismatch} >= {"RandomForestClassifier", "Pipeline"}
        assert all(m["trained_with"] == OTHER_SKLEARN and m["serving_with"] == sklearn.__version__ for m in mismatch)
    finally:
        assert s.stop() == 0


def test_a_model_from_this_scikit_learn_reports_no_mismatch(custom: Server) -> None:
    text = custom.metrics()
    assert "mlops_model_inconsistent_version 0.0" in text
    assert custom.request("GET", "/v2/models/custom")[2]["parameters"]["sklearn_version_mismatch"] == []


def test_the_deployment_passes_the_operators_allowed_modules_to_serve() -> None:
    md = {"metadata": {"name": "iris", "namespace": "ml"}, "spec": {"model": "iris"}}
    settings = Settings(allowed_estimator_modules=("sklearn.", "xgboost."))
    args = server_args(md, ModelDeploymentSpec.model_validate(md["spec"]), "v1", "0" * 64, settings)
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "--allow-module"]
    assert pairs == ["sklearn.", "xgboost."]
