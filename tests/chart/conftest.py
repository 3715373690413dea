"""Fixtures of the chart tests: the helm binary, rendering, and the real API server.

The control plane fixtures come from tests/conftest.py: the chart is checked
against the same kube-apiserver the operator tests use, in the same session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "hack" / "helm" / "build.sh"
BUILD_TIMEOUT = 3600


class Helm:
    """The helm binary, with its config, cache and data homes in a temporary folder."""

    def __init__(self, path: str, home: Path):
        self.path = path
        self.env = dict(os.environ, HELM_CONFIG_HOME=str(home / "config"), HELM_CACHE_HOME=str(home / "cache"),
                        HELM_DATA_HOME=str(home / "data"))

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.path, *args], capture_output=True, text=True, timeout=timeout, check=False, env=self.env)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))


def helm_binary() -> str:
    """Path of the helm binary: $MLOPS_HELM, else hack/helm/build.sh (instant when cached).

    Skips only when there is no binary and the build script failed.
    """
    explicit = os.environ.get("MLOPS_HELM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"MLOPS_HELM={explicit} is not an executable file")
        return explicit
    try:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, timeout=BUILD_TIMEOUT, check=False)
        built = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode == 0 and built and os.access(built, os.X_OK):
            return built
        failure = f"exit code {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = str(exc)
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    pytest.skip(f"no helm binary and hack/helm/build.sh failed ({failure})")


MONITORING_BUILD = ROOT / "hack" / "monitoring" / "build.sh"


@pytest.fixture(scope="session")
def monitoring_tools() -> Path:
    """promqlcheck and the Prometheus Operator CRDs (hack/monitoring/build.sh, instant when cached)."""
    proc = subprocess.run(["bash", str(MONITORING_BUILD)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        pytest.fail(f"hack/monitoring/build.sh exited {proc.returncode}: {proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def monitoring_crds(control_plane, monitoring_tools: Path) -> list[str]:
    """The ServiceMonitor and PrometheusRule CRDs, installed in the test API server."""
    files = sorted((monitoring_tools / "crds").glob("*.yaml"))
    assert len(files) == 2, files
    args = [a for f in files for a in ("-f", str(f))]
    control_plane.kubectl("apply", "--server-side", "--field-manager=chart-test", *args)
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *args)
    return [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
