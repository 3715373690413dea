"""`mlops-operator validate`: what a GitOps CI step sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_operator.cli import main

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "tests" / "data" / "invalid").glob("*.yaml"))


def _expected_field(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# field: "):
            return line.removeprefix("# field: ").strip()
    raise AssertionError(f"{path} lacks a '# field:' header")


def test_examples_are_valid(capsys) -> None:
    assert main(["validate", str(ROOT / "examples")]) == 0
    out = capsys.readouterr().out
    assert "object(s) checked, 0 error(s)" in out and not out.startswith("0 ")


def test_there_are_enough_invalid_cases() -> None:
    kinds = {p.name.split("-")[0] for p in INVALID}
    assert len(INVALID) >= 15 and kinds == {"tj", "md", "dp"}


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_names_the_field(path: Path, capsys) -> None:
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    field = _expected_field(path)
    assert f"{path}#0" in err, err
    assert f": {field}:" in err, f"expected the field path {field!r} in:\n{err}"


def test_multi_document_file_reports_document_index_and_name(tmp_path: Path, capsys) -> None:
    good = (ROOT / "examples" / "iris" / "modeldeployment.yaml").read_text()
    bad = (ROOT / "tests" / "data" / "invalid" / "md-bad-version.yaml").read_text().replace("name: iris", "name: broken")
    f = tmp_path / "all.yaml"
    f.write_text(good + "\n---\n" + bad)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}#1 ModelDeployment/broken: spec.version:" in err
    assert "#0" not in err


def test_other_kinds_pass_untouched(tmp_path: Path, capsys) -> None:
    f = tmp_path / "cm.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n---\nkind: Whatever\nfoo: [1, 2]\n")
    assert main(["validate", str(f)]) == 0
    assert "0 mlops.dev object(s) checked" in capsys.readouterr().out


def test_unknown_kind_and_version_of_our_group(tmp_path: Path, capsys) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("apiVersion: mlops.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: x}\n---\napiVersion: mlops.dev/v2\nkind: TrainingJob\nmetadata: {name: y}\n")
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert "kind: unknown kind 'Pipeline'" in err
    assert "apiVersion: unsupported version 'mlops.dev/v2'" in err


def test_not_yaml_exits_2(tmp_path: Path, capsys) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("kind: [unclosed\n  - :\n")
    assert main(["validate", str(f)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_missing_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
