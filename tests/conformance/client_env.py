"""A venv holding the real inference clients (KServe's SDK, tritonclient), cached between runs.

Why a separate venv: ``kserve`` 0.21 pins ``pandas<3`` and an older
``kubernetes``, which would downgrade the versions the operator and its image
are tested with.  The clients run as subprocesses of this venv's Python
(``client_script.py``), which also keeps KServe's and Triton's protobuf
modules (both define ``inference.*`` messages) out of one process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

CLIENT_REQUIREMENTS = ("kserve==0.21.0", "tritonclient[http,grpc]==2.73.0")
INSTALL_TIMEOUT_SECONDS = 900


def cache_root() -> Path:
    return Path(os.environ.get("MLOPS_OPERATOR_CACHE", Path.home() / ".cache" / "mlops-operator"))


def client_python() -> Path:
    """The Python of the client venv, created (once per requirement set) under the cache folder."""
    key = hashlib.sha256(("\n".join(CLIENT_REQUIREMENTS) + sys.version.split()[0]).encode()).hexdigest()[:12]
    root = cache_root() / "conformance-clients" / key
    py = root / "bin" / "python"
    done = root / ".installed"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not build one venv at once
        if not done.exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(root)
            subprocess.run(
                [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *CLIENT_REQUIREMENTS],
                check=True, timeout=INSTALL_TIMEOUT_SECONDS,
            )
            done.write_text("\n".join(CLIENT_REQUIREMENTS) + "\n")
    return py


if __name__ == "__main__":
    print(client_python())
