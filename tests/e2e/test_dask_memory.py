"""Data larger than the memory of any one process: the single-process trainer is OOM-killed, Dask trains on it.

The data set is 20 million rows of 16 numeric features and a label: 2.7 GB as
the trainer's float64 columns (245 MB of Parquet, in 200 row groups). Memory
limits are enforced by the kernel through a memory cgroup this test creates
(tests/memcg.py), as a pod's limit is on a node:

- the single-process trainer, limited to 512 MiB, is killed by the kernel's
  OOM killer before it can store anything (on a cluster, the kubelet reports
  that kill as ``OOMKilled`` and the TrainingJob says so:
  tests/unit/test_trainingjob_controller.py);
- ``spec.distributed`` with two workers of 768 MiB each trains on the same
  file, its whole run (runner, scheduler, both workers) inside 2 GiB: less
  than the data, so no process of it held all the rows. (A local worker of
  512 MiB, some 300 MiB of it libraries, was restarted by Dask at 95 % now and
  then; the cluster's test runs worker pods of 512Mi on 15.7 million rows.)
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("distributed", reason="the dask extra is not installed")

from tests.bigdata import FEATURES, ROW_GROUP, write_parquet  # noqa: E402
from tests.memcg import memory_cgroup  # noqa: E402

MiB = 1 << 20
RUN_SECONDS = 600
ROWS = 20_000_000
IN_MEMORY = ROWS * (FEATURES + 1) * 8
WORKER_MEMORY = 768 * MiB


@pytest.fixture(scope="module")
def big_parquet(tmp_path_factory) -> Path:
    (path,) = write_parquet(tmp_path_factory.mktemp("big"), rows=ROWS)
    return path


def _job(tmp_path: Path, source: Path, distributed: bool) -> Path:
    spec = {
        "model": "events",
        "data": {"source": f"file://{source}", "target": "label"},
        "estimator": {"class": "sklearn.linear_model.SGDClassifier", "params": {"max_iter": 1, "tol": None, "random_state": 0}},
        "preprocessing": {"numeric": {"impute": "none", "scale": "standard"}},
        "qualityGate": {"metric": "accuracy", "minimum": 0.85},
    }
    if distributed:
        spec["distributed"] = {"engine": "dask", "workers": 2, "resources": {"limits": {"memory": f"{WORKER_MEMORY // MiB}Mi"}}}
    path = tmp_path / "trainingjob.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob",
                                    "metadata": {"name": "events", "namespace": "ml"}, "spec": spec}))
    return path


def _train(tmp_path: Path, spec: Path, limit: int):  # type: ignore[no-untyped-def]
    try:
        with memory_cgroup(limit) as group:
            done = group.run([sys.executable, "-m", "mlops_operator.cli", "train", "--spec", str(spec), "--store",
                              str(tmp_path / "store"), "--termination-log", str(tmp_path / "summary")],
                             timeout=RUN_SECONDS, capture_output=True, text=True)
            return done, group.oom_kills(), group.peak()
    except PermissionError as exc:
        pytest.skip(f"no memory cgroup can be made here ({exc}); the limits could not be enforced")


def test_dask_single_process_trainer_is_oom_killed_at_512mib(tmp_path, big_parquet) -> None:
    done, oom_kills, _ = _train(tmp_path, _job(tmp_path, big_parquet, distributed=False), 512 * MiB)
    assert done.returncode == -signal.SIGKILL and oom_kills >= 1, done.stderr[-2000:]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("metadata.json"))
    assert not (tmp_path / "summary").exists()  # killed mid-run: no summary, hence the kubelet's OOMKilled is all there is


def test_dask_two_workers_of_768mib_train_on_2_7gb_within_less_memory_than_the_data(tmp_path, big_parquet) -> None:
    limit = 512 * MiB + 2 * WORKER_MEMORY  # runner (with the scheduler) and two workers
    done, oom_kills, peak = _train(tmp_path, _job(tmp_path, big_parquet, distributed=True), limit)
    assert done.returncode == 0 and oom_kills == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert peak < limit < IN_MEMORY
    summary = json.loads((tmp_path / "summary").read_text())
    assert summary["rows"]["total"] == ROWS and summary["rows"]["evaluated"] < summary["rows"]["test"]
    assert summary["gate"]["result"] == "Passed" and summary["metrics"]["accuracy"] >= 0.85
    meta = json.loads(next((tmp_path / "store").rglob("metadata.json")).read_text())
    assert meta["distributed"]["partitions"] == ROWS // ROW_GROUP + (ROWS % ROW_GROUP > 0)
