"""Training data on a PersistentVolumeClaim (``data.source: pvc://<claim>/<path>``), read by the real trainer pod.

The claim is bound to a hostPath volume holding a folder of two CSV files
(and Spark's ``_SUCCESS``), which the trainer reads as one table; the operator mounts
the claim read-only where the trainer looks (``/mnt/pvc/<claim>``); nothing
else about the run changes.
"""

from __future__ import annotations

import json

from sklearn.datasets import load_iris

from tests.cluster.test_install import (
    NAMESPACE, TRAINING_TIMEOUT, data_claim, explained, get_json, iris_training_job, wait_until,
)
from tests.cluster.test_smoke import kubectl

NAME = "iris-from-claim"
CLAIM = "training-data"


def test_a_trainingjob_reads_its_data_from_a_claim_mounted_read_only(cluster, installed) -> None:
    """Succeeded on every row of both files; the Job's pod has the claim as a read-only volume."""
    frame = load_iris(as_frame=True).frame.rename(columns={"target": "species"})
    frame["species"] = frame["species"].map(dict(enumerate(load_iris().target_names)))
    folder = cluster.work_dir / "data-claim"
    (folder / "iris").mkdir(parents=True)
    frame.iloc[:75].to_csv(folder / "iris" / "part-00000.csv", index=False)
    frame.iloc[75:].to_csv(folder / "iris" / "part-00001.csv", index=False)
    (folder / "iris" / "_SUCCESS").write_text("")
    tj = iris_training_job(NAME, model=NAME)
    with data_claim(cluster, folder, CLAIM) as claim, explained(cluster):
        tj["spec"]["data"]["source"] = f"{claim}/iris/"
        kubectl(cluster, "apply", "-f", "-", input=json.dumps(tj))
        try:
            def finished() -> dict | None:
                status = get_json(cluster, "trainingjob", NAME).get("status") or {}
                return status if status.get("phase") in ("Succeeded", "Failed") else None

            status = wait_until(finished, TRAINING_TIMEOUT, f"TrainingJob {NAME} finished", interval=2.0)
            assert status["phase"] == "Succeeded", status
            assert status["metrics"]["accuracy"] >= tj["spec"]["qualityGate"]["minimum"], status["metrics"]
            (job,) = get_json(cluster, "jobs", "-l", f"mlops.dev/training-job={NAME}")["items"]
            pod = job["spec"]["template"]["spec"]
            assert {"name": "data", "persistentVolumeClaim": {"claimName": CLAIM, "readOnly": True}} in pod["volumes"]
            # Both files, every row: the version's manifest in the store counts 150.
            (manifest,) = (installed / "mlops-model-store").rglob(f"{NAME}/*/metadata.json")
            assert json.loads(manifest.read_text())["rows"]["total"] == len(frame)
        finally:
            kubectl(cluster, "delete", "trainingjob", NAME, "-n", NAMESPACE, "--ignore-not-found", "--timeout=120s",
                    timeout=150)
