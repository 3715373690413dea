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


@pytest.fixture(scope="session")
def cluster(images):
    """A real one-node cluster (tests/cluster/node.py) for the whole session.

    Teardown fails the session if anything the cluster created is still on
    the host afterwards: an iptables chain, a link, a mount, a cgroup, a
    process.
    """
    from tests.cluster.node import OneNodeCluster
    from tests.envtest.controlplane import ControlPlaneError, ensure_binaries

    try:
        plane_bin = ensure_binaries()
    except ControlPlaneError as err:
        pytest.fail(f"control plane binaries: {err}")
    node = OneNodeCluster(plane_bin, pieces.node_binaries(), images)
    node.start()
    try:
        yield node
    finally:
        problems = node.stop()
    assert not problems, "the cluster left things behind on the host:\n  " + "\n  ".join(problems)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed cluster test, print the components' and the pods' logs."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or "cluster" not in item.fixturenames:
        return
    node = item.funcargs.get("cluster")
    if node is None:
        return
    for name, tail in {**node.logs(), **{f"pod {k}": v for k, v in node.pod_logs().items()}}.items():
        report.sections.append((f"log of {name}", tail))
