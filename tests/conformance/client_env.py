"""A venv holding the real inference clients (KServe's SDK, tritonclient), cached between runs.

Why a separate venv: ``kserve`` 0.21 pins ``pandas<3`` and an older
``kubernetes``, which would downgrade the versions the operator and its image
are tested with.  The clients run as subprocesses of this venv's Python
(``client_script.py``), which also keeps KServe's and Triton's protobuf
modules (both define ``inference.*`` messages) out of one process.
"""

from __future__ import annotations

from pathlib import Path

from tests.tool_venv import tool_venv

CLIENT_REQUIREMENTS = ("kserve==0.21.0", "tritonclient[http,grpc]==2.73.0")


def client_python() -> Path:
    """The Python of the client venv, created (once per requirement set) under the cache folder."""
    return tool_venv("conformance-clients", CLIENT_REQUIREMENTS) / "bin" / "python"


if __name__ == "__main__":
    print(client_python())
