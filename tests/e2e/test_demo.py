"""The demo's loop, end to end: drift injected, detected, retrained, promoted, error rate recovered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlops_operator.local.demo import SHIFTED
from tests.e2e.conftest import processes_mentioning

ROOT = Path(__file__).resolve().parents[2]


def test_the_loop_closes(tmp_path: Path) -> None:
    out, root = tmp_path / "out", tmp_path / "root"
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_operator.cli", "demo", "--out", str(out), "--root", str(root), "--timeout", "480"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    doc = json.loads((out / "timeline.json").read_text())
    assert doc["completed"] is True, report
    assert doc["promoted_version"] != doc["first_version"] and doc["promoted_version"].startswith("cancer-retrain-")
    # The retrained model serves, and on the same drifted traffic it errs far less than the old one did.
    assert doc["error_rate_after_promotion"] < doc["error_rate_after_drift"] / 2, report
    assert doc["challenger_score"] > doc["champion_score"], report
    names = [e["event"] for e in doc["events"]]
    for step in ("trained", "serving", "drift injected", "drift detected", "promoted", "rolled out"):
        assert step in names, report
    assert (out / "report.html").read_text().count("<svg") == 1
    # The drifted features, ranked by the model's permutation importance: the shifted measurements are among
    # them, each with its importance, and the report says which matter to the model.
    drifted = doc["drifted_features"]
    assert set(SHIFTED) & {d["feature"] for d in drifted}, drifted
    assert all(d["importance"] is not None for d in drifted if d["check"] == "dataDrift"), drifted
    importances = [d["importance"] or 0.0 for d in drifted]
    assert importances == sorted(importances, reverse=True), drifted
    assert "Drifted features, by importance to the model" in (out / "report.html").read_text()
    assert processes_mentioning(str(root)) == [], "the demo left a process behind"


def test_demo_canary_rolls_back_the_worse_challenger_and_promotes_the_good_one(tmp_path: Path) -> None:
    """``demo --rollouts``: after the loop, canary rollouts decided on live traffic and feedback.

    The demo's client fails on any answer that is not 200, so a run that
    completes also shows that no request got an error while the champions'
    processes rolled at each step and a challenger came and went. A
    connection closed without an answer (locally, a replaced process) is sent
    once more and counted in ``dropped_connections``; a second one fails.
    """
    out, root = tmp_path / "out", tmp_path / "root"
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_operator.cli", "demo", "--rollouts", "--out", str(out), "--root", str(root),
         "--timeout", "480"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    doc = json.loads((out / "timeline.json").read_text())
    worse, good = doc["canary_worse"], doc["canary_good"]
    assert (worse["phase"], worse["reason"]) == ("RolledBack", "Worse"), report
    assert worse["challenger_error_rate"] > worse["champion_error_rate"] + 0.1 and worse["p_worse"] < 0.01, report
    assert doc["rejected_versions"] == [worse["version"]]
    assert good["phase"] == "Promoted" and good["version"] != worse["version"], report
    names = [e["event"] for e in doc["events"]]
    for step in ("canary started", "canary rolled back", "canary step", "canary promoted",
                 "ModelDeployment/cancer RolledBack", "ModelDeployment/cancer RolloutPromoted"):
        assert step in names, report
    assert names.index("canary rolled back") < names.index("canary promoted")
    page = (out / "report.html").read_text()
    assert "Canary rollouts on live evidence" in page and worse["version"] in page
    assert processes_mentioning(str(root)) == [], "the demo left a process behind"
