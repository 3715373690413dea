"""The one-node cluster tests: the project's image on a real kubelet (see docs/development.md).

They need root, Debian packages (installed by hack/cluster/packages.sh) and a
few minutes of building on a cold machine, so they run only when asked:
``MLOPS_CLUSTER_TESTS=1`` (set by ``make cluster-test``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cluster import pieces

HERE = Path(__file__).resolve().parent
OPT_IN = "MLOPS_CLUSTER_TESTS"


def pytest_collection_modifyitems(config, items):
    skip = None
    if os.environ.get(OPT_IN) != "1":
        skip = pytest.mark.skip(reason=f"one-node cluster tests run only with {OPT_IN}=1 (make cluster-test)")
    elif os.geteuid() != 0:
        skip = pytest.mark.skip(reason="one-node cluster tests need root (containerd, kubelet, iptables)")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cluster)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def images() -> dict[str, pieces.Image]:
    """The project's image (built from the Dockerfile) and the sandbox image."""
    pieces.install_packages()
    return pieces.images()
