"""Shared test settings: where the repository's folders are."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real control plane: one per test session, shared by tests/integration and tests/chart.
from tests.envtest.fixtures import control_plane, crds, namespace  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (SeaweedFS) on 127.0.0.1 for the whole session; see tests/s3server.py."""
    from tests.s3server import running_s3

    with running_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow tracking server on 127.0.0.1 for the whole session; see tests/mlflowserver.py."""
    from tests.mlflowserver import running_mlflow

    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        yield server
