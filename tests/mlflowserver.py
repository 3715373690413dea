"""A real MLflow tracking server for the tests: ``mlflow server`` on 127.0.0.1, SQLite backend, local artifacts.

MLflow (with Flask, SQLAlchemy, alembic and its own pins) lives in a venv of
its own under the cache folder (``tests/tool_venv.py``), installed from the
package index on first use, so it never changes the versions the operator is
tested with.  The server proxies artifacts (``mlflow-artifacts:``), its
default; its background job runner is off (it starts a handful of worker
processes these tests never use).  Everything it writes stays under the
directory it is given; it is stopped (its process group, and only that) after.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.tool_venv import tool_venv

MLFLOW_REQUIREMENTS = ("mlflow[auth]==3.17.2",)
ADMIN_USER = "admin"
START_SECONDS = 120.0
"""A cold start imports MLflow and migrates a fresh SQLite database: 15 s on an idle machine, more on a busy one."""


@dataclass(frozen=True)
class MlflowServer:
    url: str
    auth: tuple[str, str] | None = None
    """The (user, password) the tests read with, on a basic-auth server."""

    def api(self, method: str, endpoint: str, body: Any = None, **query: str) -> dict[str, Any]:
        """One REST call as a test reads MLflow (raises HTTPError on an error status)."""
        url = f"{self.url}/api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def runs(self, experiment: str) -> list[dict[str, Any]]:
        exp = self.api("GET", "experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
        return self.api("POST", "runs/search", {"experiment_ids": [exp], "max_results": 100}).get("runs") or []

    def alias(self, model: str, alias: str) -> dict[str, Any] | None:
        """The model version an alias points at, or None."""
        try:
            return self.api("GET", "registered-models/alias", name=model, alias=alias)["model_version"]
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            if exc.code == 404 or (exc.code == 400 and "not found" in body.lower()):  # the basic-auth app answers 400
                return None
            raise AssertionError(f"alias {alias} of {model}: HTTP {exc.code} {body}") from None

    def versions(self, model: str) -> list[dict[str, Any]]:
        found = self.api("GET", "model-versions/search", filter=f"name='{model}'").get("model_versions") or []
        return sorted(found, key=lambda v: int(v["version"]))

    def artifacts(self, run_id: str, path: str) -> list[str]:
        return [f["path"] for f in self.api("GET", "artifacts/list", run_id=run_id, path=path).get("files") or []]


def mlflow_binary() -> Path:
    return tool_venv("mlflow-server", MLFLOW_REQUIREMENTS) / "bin" / "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _auth_config(workdir: Path, admin_password: str) -> dict[str, str]:
    """MLflow's basic-auth app: users in a SQLite file of the workdir, an admin with this password, others read-only."""
    ini = workdir / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{workdir}/basic_auth.db\n"
                   f"admin_username = {ADMIN_USER}\nadmin_password = {admin_password}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}


@contextmanager
def running_mlflow(workdir: Path, admin_password: str | None = None) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` with its database and artifacts under ``workdir``; stop it afterwards.

    With ``admin_password``, the server runs MLflow's basic-auth app: every
    request needs a user's credentials (``ADMIN_USER`` and that password).
    """
    binary = mlflow_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    auth = _auth_config(workdir, admin_password) if admin_password else {}
    last = ""
    for _attempt in range(3):  # a port picked as free may be taken before the server binds it
        port = free_port()
        log = open(workdir / "mlflow.log", "ab")
        proc = subprocess.Popen(
            [str(binary), "server", "--backend-store-uri", f"sqlite:///{workdir}/mlflow.db",
             "--artifacts-destination", str(workdir / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", *(["--app-name", "basic-auth"] if auth else [])],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **auth},
        )
        log.close()
        server = MlflowServer(f"http://127.0.0.1:{port}", (ADMIN_USER, admin_password) if admin_password else None)
        try:
            last = _wait_ready(proc, server)
        except BaseException:
            _stop(proc)
            raise
        if not last:
            try:
                yield server
            finally:
                _stop(proc)
            return
        _stop(proc)
    tail = (workdir / "mlflow.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"mlflow server did not start: {last}\n{tail}")


def _wait_ready(proc: subprocess.Popen, server: MlflowServer) -> str:
    """'' once /health answers; else why not (the process exited, or the time ran out)."""
    deadline = time.monotonic() + START_SECONDS
    error = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return ""
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # the basic-auth app answers, and wants credentials even here
                return ""
            error = str(exc)
        except (urllib.error.URLError, OSError) as exc:
            error = str(exc)
        time.sleep(0.25)
    return f"not ready after {START_SECONDS:.0f}s: {error}"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)
