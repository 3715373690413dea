"""Conformance: the real KServe and Triton clients, at their defaults, against a real server on 127.0.0.1.

Every scenario runs the client library itself (``client_script.py`` in the
client venv of ``client_env.py``: KServe's SDK cannot share our environment,
see there) and compares what the client decoded with the model's own
``predict``/``predict_proba`` on the same rows: REST V1, REST V2 with the
binary data extension on and off, gzip request bodies, and gRPC.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.test_server_support import GrpcServer, make_store, serving

from .client_env import client_python

HERE = Path(__file__).resolve().parent
CLIENT_SECONDS = 300



@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("store")
    return root, make_store(root)


@pytest.fixture(scope="module")
def servers(models: tuple[Path, dict[str, Any]]):  # type: ignore[no-untyped-def]
    with serving(GrpcServer, models[0], ("iris", "shop", "diabetes"), "--grpc-port", "0") as started:
        yield started


def _rows(models: tuple[Path, dict[str, Any]], model: str) -> np.ndarray:
    _, m = models
    X = m[model][1]
    return X[::37][:6]


def _job(client: str, model: str, datatype: str = "FP32", binary: bool = True, outputs: list[str] | None = None,
         compress: bool = False) -> dict[str, Any]:
    return {"client": client, "model": model, "datatype": datatype, "binary": binary, "outputs": outputs, "compress": compress}


TRITON = {
    "http-binary-default-outputs": _job("triton-http", "iris"),
    "http-json": _job("triton-http", "iris", binary=False, outputs=["predict", "predict_proba"]),
    "http-binary-fp64-predict-only": _job("triton-http", "iris", "FP64", outputs=["predict"]),
    "http-gzip-request": _job("triton-http", "iris", compress=True),
    "http-bytes-binary": _job("triton-http", "shop", "BYTES"),
    "http-bytes-json": _job("triton-http", "shop", "BYTES", binary=False, outputs=["predict", "predict_proba"]),
    "http-regression": _job("triton-http", "diabetes", "FP64"),
    "grpc-default-outputs": _job("triton-grpc", "iris"),
    "grpc-fp64-predict-only": _job("triton-grpc", "iris", "FP64", outputs=["predict"]),
    "grpc-bytes": _job("triton-grpc", "shop", "BYTES"),
    "grpc-regression": _job("triton-grpc", "diabetes", "FP64"),
    "grpc-unknown-model": _job("triton-grpc", "no-such-model"),
    "http-unknown-model": _job("triton-http", "no-such-model"),
}
KSERVE = {
    "v1": _job("kserve-v1", "iris", "FP64", outputs=["predict"]),
    "v1-mixed": _job("kserve-v1", "shop", "BYTES", outputs=["predict"]),
    "v2-binary": _job("kserve-v2", "iris"),
    "v2-json": _job("kserve-v2", "iris", binary=False),
    "v2-json-predict-only": _job("kserve-v2", "iris", "FP64", binary=False, outputs=["predict"]),
    "v2-bytes-binary": _job("kserve-v2", "shop", "BYTES"),
    "v2-bytes-json": _job("kserve-v2", "shop", "BYTES", binary=False),
    "grpc": _job("kserve-grpc", "iris"),
}


def _run(jobs: dict[str, dict[str, Any]], models: tuple[Path, dict[str, Any]], servers: dict[str, GrpcServer]) -> dict[str, Any]:
    """All jobs of one client library in one process of the client venv (its import is the slow part)."""
    batch = []
    for job in jobs.values():
        s = servers.get(job["model"], servers["iris"])
        rows = _rows(models, job["model"] if job["model"] in servers else "iris")
        plain = [[v.item() if isinstance(v, np.generic) else v for v in r] for r in rows.tolist()]
        batch.append({**job, "url": f"127.0.0.1:{s.port}", "grpc_url": s.grpc_url, "rows": plain})
    r = subprocess.run([str(client_python()), str(HERE / "client_script.py")], input=json.dumps(batch),
                       capture_output=True, text=True, timeout=CLIENT_SECONDS)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(zip(jobs, json.loads(r.stdout), strict=True))


@pytest.fixture(scope="module")
def triton(models: Any, servers: dict[str, GrpcServer]) -> dict[str, Any]:
    return _run(TRITON, models, servers)


@pytest.fixture(scope="module")
def kserve(models: Any, servers: dict[str, GrpcServer]) -> dict[str, Any]:
    return _run(KSERVE, models, servers)


def _expected(models: tuple[Path, dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    _, m = models
    pipe = m[job["model"]][0]
    rows = _rows(models, job["model"])
    if job["datatype"] == "FP32":  # the client sent float32: the model sees those values
        rows = rows.astype(np.float32).astype(np.float64)
    out: dict[str, Any] = {"predict": pipe.predict(rows)}
    if hasattr(pipe, "predict_proba"):
        out["predict_proba"] = pipe.predict_proba(rows)
    return out


def _check(models: Any, job: dict[str, Any], got: dict[str, Any]) -> None:
    assert "error" not in got, got
    want = _expected(models, job)
    names = job["outputs"] or list(want)  # no outputs asked: every output the model produces
    assert sorted(got["outputs"]) == sorted(names)
    pred = want["predict"]
    if pred.dtype.kind == "f":
        assert np.allclose(got["outputs"]["predict"], pred)
    else:
        assert got["outputs"]["predict"] == pred.tolist()
    if "predict_proba" in names:
        proba = np.array(got["outputs"]["predict_proba"]).reshape(want["predict_proba"].shape)
        assert np.allclose(proba, want["predict_proba"])
        if "shapes" in got:
            assert list(got["shapes"]["predict_proba"]) == list(want["predict_proba"].shape)


@pytest.mark.parametrize("case", [k for k in TRITON if "unknown" not in k])
def test_tritonclient(case: str, models: Any, triton: dict[str, Any]) -> None:
    job, got = TRITON[case], triton[case]
    _check(models, job, got)
    assert got["live"] and got["ready"] and got["model_ready"] and got["id"] == "conf-1"
    assert got["metadata_outputs"] == (["predict"] if job["model"] == "diabetes" else ["predict", "predict_proba"])


def test_tritonclient_sees_not_found(triton: dict[str, Any]) -> None:
    grpc_err, http_err = triton["grpc-unknown-model"]["error"], triton["http-unknown-model"]["error"]
    assert grpc_err["type"] == "InferenceServerException" and "NOT_FOUND" in str(grpc_err["status"])
    assert "no-such-model" in grpc_err["message"]
    assert http_err["type"] == "InferenceServerException" and "404" in str(http_err["status"])


@pytest.mark.parametrize("case", list(KSERVE))
def test_kserve_sdk(case: str, models: Any, kserve: dict[str, Any]) -> None:
    job, got = KSERVE[case], kserve[case]
    _check(models, job, got)
    assert got["live"] is True and got["model_ready"] is True
    if job["client"] != "kserve-v1":
        assert got["ready"] is True and got["id"] == "conf-1"
