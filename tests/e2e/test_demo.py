"""The demo's loop, end to end: drift injected, detected, retrained, promoted, error rate recovered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert processes_mentioning(str(root)) == [], "the demo left a process behind"
