"""`mlops-operator local` on the Dask example: the TrainingJob trains on a LocalCluster of two worker
processes, and the stored model (scikit-learn's LogisticRegression) is served and answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sklearn.datasets import load_breast_cancer

from tests.e2e.conftest import processes_mentioning
from tests.e2e.test_local import _post, _read_until, _start, _stop


def test_dask_local_cluster_trains_and_the_model_serves(tmp_path: Path) -> None:
    store = tmp_path / "local"
    seen: list[str] = []
    proc = _start(store, "examples/dask/trainingjob.yaml", "examples/dask/modeldeployment.yaml")
    try:
        url = _read_until(proc, r"service default/cancer-dask listens on (http://127\.0\.0\.1:\d+)", 300, seen).group(1)
        _read_until(proc, r"ModelDeployment/cancer-dask Ready", 300, seen)
        data = load_breast_cancer()
        rows = data.data[[0, 19]]  # a malignant and a benign case of the data set
        expected = [str(data.target_names[t]) for t in data.target[[0, 19]]]
        answer = _post(f"{url}/v1/models/cancer-dask:predict", {"instances": rows.tolist()})
        assert answer["predictions"] == expected == ["malignant", "benign"]
    finally:
        code = _stop(proc)
    assert code == 0

    log = "\n".join(p.read_text() for p in sorted((store / "logs").glob("default.cancer-dask-g1-*.log")))
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    dask = [e for e in events if e.get("event") == "dask"]
    assert dask and dask[0]["scheduler"] == "local" and dask[0]["workers"] == 2, log[-2000:]
    fitted = next(e for e in events if e.get("event") == "fitted_on_dask")
    assert fitted["workers"] == 2 and fitted["partitions"] >= 2
    stored = next(e for e in events if e.get("event") == "gate")
    assert stored["result"] == "Passed" and stored["value"] >= 0.9
    meta = json.loads(next(store.rglob("cancer-dask-g1/metadata.json")).read_text())
    assert meta["distributed"] == {"engine": "dask", "workers": 2, "partitions": fitted["partitions"],
                                   "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}}
    assert meta["estimator"] == "dask_ml.linear_model.LogisticRegression" and meta["classes"] == ["benign", "malignant"]
    # The LocalCluster's worker processes went with the trainer.
    deadline = time.monotonic() + 10
    while processes_mentioning(str(store)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_mentioning(str(store)) == []
