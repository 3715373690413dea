"""Run one client scenario against a server; read by the client venv's Python (``client_env.py``).

Input (stdin, JSON): a list of jobs ``{"client": ..., "url": "127.0.0.1:PORT", "grpc_url": ..., "model": ..., "rows": [[...]],
"datatype": "FP32" | "FP64" | "BYTES", "binary": bool, "outputs": [names] | null, "compress": bool}``.
Output (stdout, JSON): one result per job, what the client reported — liveness, readiness, metadata, each output as a list,
or the client's own exception (``{"error": {"type", "message", "status"}}``).  The test compares
the outputs with the model's own predictions; this script only drives the client at its defaults.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np


def _array(job: dict[str, Any]) -> np.ndarray:
    dt = job["datatype"]
    if dt == "BYTES":
        return np.array([[str(v) for v in row] for row in job["rows"]], dtype=np.object_)
    return np.array(job["rows"], dtype={"FP32": np.float32, "FP64": np.float64}[dt])


def _plain(a: Any) -> list[Any]:
    a = np.asarray(a)
    if a.dtype == np.object_ or a.dtype.kind == "S":
        return [v.decode() if isinstance(v, bytes) else v for v in a.reshape(-1).tolist()]
    return a.reshape(-1).tolist()


def triton_http(job: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.http as th

    c = th.InferenceServerClient(url=job["url"])
    x = _array(job)
    inp = th.InferInput("input-0", list(x.shape), job["datatype"])
    inp.set_data_from_numpy(x, binary_data=job["binary"])
    outs = None if job["outputs"] is None else [th.InferRequestedOutput(n, binary_data=job["binary"]) for n in job["outputs"]]
    kwargs = {"request_compression_algorithm": "gzip"} if job.get("compress") else {}
    r = c.infer(job["model"], [inp], outputs=outs, request_id="conf-1", **kwargs)
    resp = r.get_response()
    names = [o["name"] for o in resp["outputs"]]
    meta = c.get_model_metadata(job["model"])
    return {
        "live": c.is_server_live(), "ready": c.is_server_ready(), "model_ready": c.is_model_ready(job["model"]),
        "metadata_outputs": [o["name"] for o in meta["outputs"]], "id": resp.get("id"),
        "outputs": {n: _plain(r.as_numpy(n)) for n in names},
        "shapes": {o["name"]: o["shape"] for o in resp["outputs"]},
    }


def triton_grpc(job: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.grpc as tg

    c = tg.InferenceServerClient(url=job["grpc_url"])
    x = _array(job)
    inp = tg.InferInput("input-0", list(x.shape), job["datatype"])
    inp.set_data_from_numpy(x)
    outs = None if job["outputs"] is None else [tg.InferRequestedOutput(n) for n in job["outputs"]]
    r = c.infer(job["model"], [inp], outputs=outs, request_id="conf-1")
    resp = r.get_response(as_json=True)
    names = [o["name"] for o in resp["outputs"]]
    meta = c.get_model_metadata(job["model"], as_json=True)
    return {
        "live": c.is_server_live(), "ready": c.is_server_ready(), "model_ready": c.is_model_ready(job["model"]),
        "metadata_outputs": [o["name"] for o in meta["outputs"]], "id": resp.get("id"),
        "outputs": {n: _plain(r.as_numpy(n)) for n in names},
        "shapes": {o["name"]: [int(s) for s in o["shape"]] for o in resp["outputs"]},
    }


async def kserve_rest(job: dict[str, Any]) -> dict[str, Any]:
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    protocol = job["client"].split("-")[1]  # kserve-v1 | kserve-v2
    base = f"http://{job['url']}"
    async with InferenceRESTClient(RESTConfig(protocol=protocol)) as c:
        out: dict[str, Any] = {"live": await c.is_server_live(base), "model_ready": await c.is_model_ready(base, job["model"])}
        if protocol == "v1":
            r = await c.infer(base, {"instances": job["rows"]}, model_name=job["model"])
            out["outputs"] = {"predict": r["predictions"]}
            return out
        out["ready"] = await c.is_server_ready(base)
        x = _array(job)
        inp = InferInput("input-0", list(x.shape), job["datatype"])
        inp.set_data_from_numpy(x, binary_data=job["binary"])
        outs = None
        if job["outputs"] is not None:
            outs = [RequestedOutput(n, {"binary_data": job["binary"]}) for n in job["outputs"]]
        req = InferRequest(job["model"], [inp], request_id="conf-1", request_outputs=outs,
                           parameters={"binary_data_output": True} if job["binary"] else None)
        r = await c.infer(base, req, model_name=job["model"])
        out["id"] = r.id
        out["outputs"] = {o.name: _plain(o.as_numpy()) for o in r.outputs}
        out["shapes"] = {o.name: list(o.shape) for o in r.outputs}
        return out


async def kserve_grpc(job: dict[str, Any]) -> dict[str, Any]:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async with InferenceGRPCClient(job["grpc_url"]) as c:
        out: dict[str, Any] = {"live": await c.is_server_live(), "ready": await c.is_server_ready(),
                               "model_ready": await c.is_model_ready(job["model"])}
        x = _array(job)
        inp = InferInput("input-0", list(x.shape), job["datatype"])
        inp.set_data_from_numpy(x)
        r = await c.infer(InferRequest(job["model"], [inp], request_id="conf-1"))
        out["id"] = r.id
        out["outputs"] = {o.name: _plain(o.as_numpy()) for o in r.outputs}
        out["shapes"] = {o.name: list(o.shape) for o in r.outputs}
        return out


def run(job: dict[str, Any]) -> dict[str, Any]:
    client = job["client"]
    if client == "triton-http":
        return triton_http(job)
    if client == "triton-grpc":
        return triton_grpc(job)
    if client.startswith("kserve-v"):
        return asyncio.run(kserve_rest(job))
    if client == "kserve-grpc":
        return asyncio.run(kserve_grpc(job))
    raise SystemExit(f"unknown client {client}")


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    try:
        return run(job)
    except Exception as exc:  # the client's own error is the result: the test checks it
        status = getattr(exc, "status", None)
        return {"error": {"type": type(exc).__name__, "message": str(exc), "status": status() if callable(status) else status}}


def main() -> None:
    json.dump([run_one(job) for job in json.load(sys.stdin)], sys.stdout)


if __name__ == "__main__":
    main()
