"""Venvs of their own for the real third-party tools the tests talk to, cached between runs.

Why separate venvs: a tool's requirements (KServe's SDK pins ``pandas<3``;
the MLflow server brings Flask, SQLAlchemy, alembic and its own pins) must
not change the versions the operator and its image are tested with.  Each
venv is built once per requirement set and Python version, under the cache
folder, by whichever test run gets there first (a file lock keeps two runs
from building one venv at once); later runs reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

INSTALL_TIMEOUT_SECONDS = 900


def cache_root() -> Path:
    return Path(os.environ.get("MLOPS_OPERATOR_CACHE", Path.home() / ".cache" / "mlops-operator"))


def tool_venv(name: str, requirements: Sequence[str]) -> Path:
    """The folder of a venv holding ``requirements``, created (once per requirement set) under ``<cache>/<name>/``."""
    key = hashlib.sha256(("\n".join(requirements) + sys.version.split()[0]).encode()).hexdigest()[:12]
    root = cache_root() / name / key
    done = root / ".installed"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(root)
            subprocess.run(
                [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                check=True, timeout=INSTALL_TIMEOUT_SECONDS,
            )
            done.write_text("\n".join(requirements) + "\n")
    return root
