"""The generated CRDs: in step with the models, structural, and shaped for kubectl."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from mlops_operator.api.crd import rendered_files
from mlops_operator.api.kinds import KINDS
from mlops_operator.cli import main

ROOT = Path(__file__).resolve().parents[2]
CRDS = {name: yaml.safe_load(text) for name, text in rendered_files().items()}


def test_checked_in_crds_match_the_generator() -> None:
    assert main(["crds", "--check", "--dir", str(ROOT / "crds")]) == 0


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    assert main(["crds", "--dir", str(tmp_path)]) == 0
    victim = next(tmp_path.glob("*.yaml"))
    victim.write_text(victim.read_text().replace("shortNames", "shortnames"))
    assert main(["crds", "--check", "--dir", str(tmp_path)]) == 1


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("name", sorted(CRDS))
def test_schema_is_structural(name: str) -> None:
    """The apiextensions rules: a type everywhere, no $ref, no nullable unions, no additionalProperties beside properties."""
    for path, node in _walk(_schema(CRDS[name])):
        assert "$ref" not in node and "$defs" not in node, path
        assert "title" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "anyOf" not in node and "oneOf" not in node and "allOf" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: OpenAPI v3.0 wants a boolean {bound}"
        if "default" in node and node.get("type") == "string":
            assert isinstance(node["default"], str), path


@pytest.mark.parametrize("name", sorted(CRDS))
def test_cel_rules_only_touch_bounded_values(name: str) -> None:
    """The CEL cost budget needs maxLength / maxItems on what rules iterate over."""
    for path, node in _walk(_schema(CRDS[name])):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"], path
        if node.get("type") == "array" and any(
            "x-kubernetes-validations" in n for _, n in _walk(node)
        ):
            assert "maxItems" in node, path
        if node.get("type") == "array" and node.get("items", {}).get("type") == "string":
            assert "maxLength" in node["items"] and "maxItems" in node, path


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_names_columns_and_subresources(kind) -> None:
    crd = CRDS[f"{kind.crd_name}.yaml"]
    names = crd["spec"]["names"]
    assert names["shortNames"] == [kind.short] and names["categories"] == ["mlops"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    cols = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert cols["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert cols["Age"]["type"] == "date"
    assert cols["Reason"]["priority"] == 1 and cols["Message"]["priority"] == 1


def test_every_spec_field_is_documented() -> None:
    for name, crd in CRDS.items():
        spec = _schema(crd)["properties"]["spec"]
        for path, node in _walk(spec, "spec"):
            if path != "spec" and not path.endswith("[]"):
                assert node.get("description"), f"{name}: {path} has no description for kubectl explain"


def test_nested_defaults_reach_the_api_server() -> None:
    """Objects with defaulted fields default to {} so the server fills them in even when left out."""
    spec = _schema(CRDS["trainingjobs.mlops.dev.yaml"])["properties"]["spec"]
    assert spec["properties"]["data"]["properties"]["validation"]["default"] == {}
    assert spec["properties"]["preprocessing"]["default"] == {}
    dp = _schema(CRDS["driftpolicies.mlops.dev.yaml"])["properties"]["spec"]
    assert dp["properties"]["checks"]["default"] == [{"type": "dataDrift"}]
    assert dp["properties"]["checks"]["x-kubernetes-list-type"] == "map"
