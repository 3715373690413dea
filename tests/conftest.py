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
