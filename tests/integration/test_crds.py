"""The CRDs in crds/ as the real API server sees them.

Every CRD is accepted and Established; every example applies and reads back
with the schema defaults filled in; every manifest in tests/data/invalid/
marked ``# server: rejected`` is rejected with a message naming its field;
printer columns and ``kubectl explain`` work.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.envtest.controlplane import wait_for

ROOT = Path(__file__).resolve().parents[2]
# MLOPS_ENVTEST_CRDS: try CRDs from another directory without touching crds/.
CRD_DIR = Path(os.environ.get("MLOPS_ENVTEST_CRDS") or ROOT / "crds")
EXAMPLES_DIR = ROOT / "examples"
INVALID_DIR = ROOT / "tests" / "data" / "invalid"
GROUP = "mlops.dev"


def _yaml_files(directory: Path, recursive: bool = False) -> list[Path]:
    if not directory.is_dir():
        return []
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in directory.glob(pattern) if p.is_file() and p.suffix in (".yaml", ".yml"))


def _load_all(path: Path) -> list[dict[str, Any]]:
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if isinstance(d, dict)]


def _crd_docs() -> dict[str, dict[str, Any]]:
    """kind -> CRD document, from crds/."""
    docs = {}
    for path in _yaml_files(CRD_DIR):
        for doc in _load_all(path):
            if doc.get("kind") == "CustomResourceDefinition":
                docs[doc["spec"]["names"]["kind"]] = doc
    return docs


def _ids(paths: list[Path], base: Path) -> list[str]:
    return [str(p.relative_to(base)) for p in paths]


CRD_FILES = _yaml_files(CRD_DIR)
# examples/gitops holds Argo CD and Flux objects (checked by tests/unit/test_gitops.py), not mlops.dev ones.
EXAMPLE_FILES = [f for f in _yaml_files(EXAMPLES_DIR, recursive=True) if "gitops" not in f.relative_to(EXAMPLES_DIR).parts]


def _server_rejected(path: Path) -> tuple[bool, str | None]:
    """Parse the header: ``# server: rejected`` then ``# field: spec.x.y``."""
    lines = path.read_text().splitlines()
    if not lines or not re.fullmatch(r"#\s*server:\s*rejected\s*", lines[0]):
        return False, None
    field = None
    if len(lines) > 1:
        m = re.fullmatch(r"#\s*field:\s*(\S+)\s*", lines[1])
        if m:
            field = m.group(1)
    return True, field


INVALID_FILES = [p for p in _yaml_files(INVALID_DIR) if _server_rejected(p)[0]]


# -- CRDs ----------------------------------------------------------------------


@pytest.mark.parametrize("crd_file", CRD_FILES, ids=_ids(CRD_FILES, CRD_DIR))
def test_crd_is_accepted_and_established(control_plane, crd_file):
    for doc in _load_all(crd_file):
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        name = doc["metadata"]["name"]
        if name not in control_plane.crds:
            pytest.fail(f"{name} was not installed:\n{control_plane.crd_error}", pytrace=False)
        crd = json.loads(control_plane.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        # The stored schema is the one in the file (no field pruned by the server).
        served = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}
        for version in doc["spec"]["versions"]:
            assert served[version["name"]] == version["schema"]["openAPIV3Schema"]


# -- examples -------------------------------------------------------------------


def _expected_defaults(schema: dict[str, Any], value: Any, path: str) -> list[tuple[str, Any]]:
    """(path, default) for every schema default that ``value`` leaves out.

    Follows defaults into defaulted objects, as the API server does.
    """
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            sub_path = f"{path}.{key}"
            if key in value:
                found += _expected_defaults(sub, value[key], sub_path)
            elif "default" in sub:
                found.append((sub_path, sub["default"]))
                found += _expected_defaults(sub, sub["default"], sub_path)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += _expected_defaults(schema["items"], item, f"{path}[{i}]")
    return found


def _get_path(obj: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            obj = obj[int(part[1:-1])]
        else:
            obj = obj[part]
    return obj


def _server_knows(control_plane, api_version: str, kind: str) -> bool:
    from kubernetes import client

    api_client = control_plane.api_client()
    try:
        if "/" in api_version:
            group, version = api_version.split("/", 1)
            resources = client.CustomObjectsApi(api_client).get_api_resources(group, version)
        else:
            resources = client.CoreV1Api(api_client).get_api_resources()
        return kind in {r.kind for r in resources.resources}
    except client.exceptions.ApiException:
        return False
    finally:
        api_client.close()


@pytest.mark.parametrize(
    "example", EXAMPLE_FILES, ids=_ids(EXAMPLE_FILES, EXAMPLES_DIR)
)
def test_example_applies_and_gets_defaults(crds, namespace, example):
    crd_docs = _crd_docs()
    docs = []
    for doc in _load_all(example):
        group = doc.get("apiVersion", "").split("/")[0]
        if group != GROUP and not _server_knows(crds, doc["apiVersion"], doc["kind"]):
            continue  # e.g. a kind from another project's CRD we do not install
        docs.append(doc)
    assert docs, f"{example.name} has no kinds this server knows"

    manifest = yaml.safe_dump_all(docs)
    crds.kubectl("apply", "--server-side", "--field-manager=examples", "-n", namespace, "-f", "-", input=manifest)
    got = json.loads(crds.kubectl("get", "-n", namespace, "-o", "json", "-f", "-", input=manifest).stdout)
    items = got["items"] if got.get("kind", "").endswith("List") else [got]
    assert len(items) == len(docs)

    for applied, stored in zip(docs, items):
        assert stored["kind"] == applied["kind"]
        assert stored["metadata"]["name"] == applied["metadata"]["name"]
        crd = crd_docs.get(applied["kind"])
        if crd is None or applied.get("apiVersion", "").split("/")[0] != GROUP:
            continue
        version = applied["apiVersion"].split("/")[1]
        schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
        # Everything we wrote is stored as written...
        for key, value in applied.get("spec", {}).items():
            assert stored["spec"][key] == _merged(value, stored["spec"][key]), key
        # ...and every default the schema promises is filled in.
        for path, default in _expected_defaults(schema["properties"]["spec"], applied.get("spec", {}), "spec"):
            try:
                actual = _get_path(stored, path)
            except (KeyError, IndexError, TypeError):
                pytest.fail(f"{applied['kind']}/{applied['metadata']['name']}: default {path} missing")
            if isinstance(default, dict):
                assert isinstance(actual, dict), path
                assert _merged(default, actual) == actual, path
            else:
                assert actual == default, path


def _merged(written: Any, stored: Any) -> Any:
    """``written`` with the keys the server added (defaults) taken from ``stored``."""
    if isinstance(written, dict) and isinstance(stored, dict):
        out = dict(stored)
        out.update({k: _merged(v, stored.get(k)) for k, v in written.items()})
        return out
    if isinstance(written, list) and isinstance(stored, list) and len(written) == len(stored):
        return [_merged(w, s) for w, s in zip(written, stored)]
    return written


# -- invalid manifests ------------------------------------------------------------


@pytest.mark.parametrize(
    "manifest", INVALID_FILES, ids=_ids(INVALID_FILES, INVALID_DIR)
)
def test_invalid_manifest_is_rejected_naming_the_field(crds, namespace, manifest):
    _, field = _server_rejected(manifest)
    proc = crds.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", str(manifest), check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"accepted:\n{output}"
    # Rejected by the API server (kubectl itself does no schema checks).
    assert "Error from server" in output or " is invalid" in output, output
    if field is None:
        pytest.fail(f"{manifest.name}: second line should be '# field: <path>'", pytrace=False)
    assert field in output, f"the error does not name {field}:\n{output}"


# -- kubectl ergonomics -------------------------------------------------------------


def test_printer_columns(crds, namespace):
    kinds = _crd_docs()
    short = [kinds[k]["spec"]["names"].get("shortNames", [kinds[k]["spec"]["names"]["plural"]])[0] for k in kinds]
    assert {"tj", "md", "dp"} <= set(short), short
    example_dir = EXAMPLES_DIR / "iris"
    crds.kubectl("apply", "--server-side", "-n", namespace, "-f", str(example_dir))
    out = crds.kubectl("get", "tj,md,dp", "-n", namespace).stdout
    headers = [line for line in out.splitlines() if line.startswith("NAME")]
    assert len(headers) == 3, out
    for header in headers:
        columns = header.split()
        assert "READY" in columns and "AGE" in columns, header


def test_kubectl_explain_shows_field_docs(crds):
    crd = _crd_docs()["TrainingJob"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    data = schema["properties"]["spec"]["properties"]["data"]

    def explain():
        proc = crds.kubectl("explain", "trainingjob.spec.data", check=False)
        return proc.stdout if proc.returncode == 0 else None

    # The OpenAPI document is published a moment after the CRD is Established.
    out = wait_for(explain, timeout=30, what="kubectl explain trainingjob.spec.data")
    assert "FIELD: data" in out or "FIELD:    data" in out or re.search(r"FIELD:\s+data", out), out
    description = " ".join(data.get("description", "").split())
    assert description, "spec.data has no description in the CRD"
    assert description[:40] in " ".join(out.split()), out
    for sub in data.get("properties", {}):
        assert re.search(rf"^\s+{re.escape(sub)}\b", out, re.MULTILINE), f"{sub} not listed:\n{out}"
