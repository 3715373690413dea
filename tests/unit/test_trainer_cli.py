"""``mlops-operator train``: exit codes, termination summary, stdout and stderr."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_operator.runtime import trainer
from mlops_operator.runtime.trainer import MAX_SUMMARY_BYTES, _fit_summary, main


def write_spec(path: Path, **spec: Any) -> Path:
    doc = {
        "apiVersion": "mlops.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "iris-v1", "namespace": "ml", "generation": 2},
        "spec": {
            "model": "iris",
            "data": {"source": "sklearn://iris", "target": "species"},
            "estimator": {"class": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 15, "random_state": 0}},
            "qualityGate": {"metric": "accuracy", "minimum": 0.8},
        },
    }
    for key, value in spec.items():
        if value is None:
            doc["spec"].pop(key, None)
        else:
            doc["spec"][key] = value
    path.write_text(yaml.safe_dump(doc))
    return path


def run(tmp_path: Path, spec: Path, *extra: str) -> tuple[int, dict[str, Any] | None]:
    term = tmp_path / "termination-log"
    code = main(["--spec", str(spec), "--store", str(tmp_path / "store"), "--termination-log", str(term), *extra])
    return code, (json.loads(term.read_text()) if term.exists() else None)


def events(err: str) -> list[str]:
    return [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]


def test_success_writes_summary_and_prints_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary = run(tmp_path, write_spec(tmp_path / "tj.yaml"))
    out, err = capsys.readouterr()
    assert code == 0
    assert set(summary) == {"version", "uri", "sha256", "metrics", "gate", "dataDigest", "rows", "task", "scikitLearn", "inference",
                            "importance"}
    assert summary["inference"] == "onnx"  # the iris forest compiles and verifies
    assert summary["scikitLearn"] == importlib.metadata.version("scikit-learn")
    assert summary["version"] == "iris-v1-g2" and summary["task"] == "classification"
    assert summary["gate"]["result"] == "Passed" and len(summary["sha256"]) == 64
    version_dir = tmp_path / "store" / "ml" / "iris" / "iris-v1-g2"
    assert out.strip() == str(version_dir)
    assert summary["uri"] == version_dir.as_uri()
    assert events(err) == ["start", "loaded_data", "split", "fitted", "evaluated", "gate", "importance", "compiled", "stored"]
    for line in err.splitlines():
        rec = json.loads(line)
        assert {"ts", "level", "event"} <= set(rec)

    # A retried pod finds the version and exits 0 with the same summary.
    code, again = run(tmp_path, write_spec(tmp_path / "tj.yaml"))
    assert code == 0 and again["sha256"] == summary["sha256"]
    assert events(capsys.readouterr().err) == ["exists"]


def test_stdin_and_explicit_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    spec = write_spec(tmp_path / "tj.yaml")
    monkeypatch.setattr("sys.stdin", io.StringIO(spec.read_text()))
    code, summary = run(tmp_path, Path("-"), "--version", "pinned-1")
    assert code == 0 and summary["version"] == "pinned-1"


def test_invalid_spec_exit_2_with_field_path(tmp_path: Path) -> None:
    code, summary = run(tmp_path, write_spec(tmp_path / "tj.yaml", estimator=None))
    assert code == 2 and summary["reason"] == "InvalidSpec"
    assert "spec.estimator" in summary["message"]
    code, summary = run(tmp_path, write_spec(tmp_path / "tj.yaml", qualityGate={"metric": "accuracy", "minimum": 2}))
    assert code == 2 and "spec.qualityGate.minimum" in summary["message"]
    assert not (tmp_path / "store").exists()


def test_disallowed_class_exit_2(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "tj.yaml", estimator={"class": "subprocess.Popen", "params": {}})
    code, summary = run(tmp_path, spec)
    assert code == 2 and summary["reason"] == "InvalidSpec" and "'subprocess.Popen'" in summary["message"]
    assert not (tmp_path / "store").exists()


def test_data_error_exit_2(tmp_path: Path) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    spec = write_spec(tmp_path / "tj.yaml", data={"source": csv.as_uri(), "target": "species"})
    code, summary = run(tmp_path, spec)
    assert code == 2 and summary == {"reason": "DataError", "message": f"{csv.as_uri()}: the file is empty"}


def test_gate_failed_exit_3(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "tj.yaml", estimator={"class": "sklearn.dummy.DummyClassifier", "params": {}})
    code, summary = run(tmp_path, spec)
    assert code == 3 and summary["reason"] == "GateFailed"
    assert summary["gate"]["result"] == "Failed" and summary["gate"]["bound"] == 0.8
    assert "accuracy" in summary["metrics"]
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


def test_unexpected_error_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(trainer, "build_pipeline", boom)
    code, summary = run(tmp_path, write_spec(tmp_path / "tj.yaml"))
    assert code == 1 and summary == {"reason": "Error", "message": "RuntimeError: disk on fire"}


def test_unwritable_termination_log_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--spec", str(write_spec(tmp_path / "tj.yaml")), "--store", str(tmp_path / "store"),
                 "--termination-log", str(tmp_path / "no" / "such" / "dir" / "log")])
    assert code == 0
    warnings = [json.loads(l) for l in capsys.readouterr().err.splitlines() if '"termination_log"' in l]
    assert warnings and warnings[0]["level"] == "warning"


def test_summary_is_trimmed_to_4k() -> None:
    summary = {"version": "v", "metrics": {f"m{i:03d}": 0.123456789 for i in range(400)}, "gate": {"result": "Passed"}}
    text = _fit_summary(summary)
    assert len(text.encode()) <= MAX_SUMMARY_BYTES and "\n" not in text
    assert json.loads(text)["gate"] == {"result": "Passed"}
    long = _fit_summary({"reason": "Error", "message": "x" * 10000})
    assert len(long.encode()) <= MAX_SUMMARY_BYTES and json.loads(long)["reason"] == "Error"


def test_top_level_cli_delegates(tmp_path: Path) -> None:
    from mlops_operator.cli import main as cli_main

    spec = write_spec(tmp_path / "tj.yaml", estimator={"class": "os.system", "params": {}})
    assert cli_main(["train", "--spec", str(spec), "--store", str(tmp_path / "s"), "--termination-log", str(tmp_path / "t")]) == 2
