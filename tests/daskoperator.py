"""The real Dask operator for the tests: its CRDs and its controller (a kopf operator) as a host process.

It comes from the ``dask-kubernetes`` package of the test extra, as a user's cluster runs it from its chart;
the tests run it against the envtest control plane (tests/integration) and the one-node cluster (tests/cluster).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.envtest.controlplane import install_crds

STOP_TIMEOUT = 20


def dask_crd_dir() -> Path:
    import dask_kubernetes

    return Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"


@contextmanager
def running_dask_operator(kubeconfig: Path, namespace: str, log_path: Path) -> Iterator[Path]:
    """Install the CRDs and run the controller watching ``namespace``; its log's path. The CRDs stay afterwards.

    Stop it only after what it made is deleted: it removes its own finalizers.
    """
    install_crds(kubeconfig, dask_crd_dir())
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace,
             "-m", "dask_kubernetes.operator.controller"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield log_path
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
