"""The one-node cluster tests: the project's image on a real kubelet (see docs/development.md).

They are part of ``make test``: they need root, Debian packages (installed by
hack/cluster/packages.sh) and a few minutes of building on a cold machine
(``make cluster-pieces``, cached outside the repository). They run last, so
the cluster is gone before nothing else runs beside it. Without root they are
skipped with that reason; ``MLOPS_CLUSTER_TESTS=0`` skips them on purpose
(``make cluster-test`` runs only them).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.cluster import pieces

HERE = Path(__file__).resolve().parent
OPT_OUT = "MLOPS_CLUSTER_TESTS"


def pytest_collection_modifyitems(config, items):
    """Mark the cluster tests, skip them where they cannot run, and move them to the end of the session.

    Last, because the cluster is a session fixture: torn down when the
    session ends, it would otherwise keep two cores busy under every test
    collected after it.
    """
    skip = None
    if os.environ.get(OPT_OUT) == "0":
        skip = pytest.mark.skip(reason=f"one-node cluster tests skipped: {OPT_OUT}=0")
    elif os.geteuid() != 0:
        skip = pytest.mark.skip(reason="one-node cluster tests need root (containerd, kubelet, iptables)")
    ours = [item for item in items if HERE in Path(str(item.fspath)).resolve().parents]
    for item in ours:
        item.add_marker(pytest.mark.cluster)
        if skip is not None:
            item.add_marker(skip)
    chosen = set(map(id, ours))
    items[:] = [item for item in items if id(item) not in chosen] + ours


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


# Set at the first failure that finds the node itself unhealthy: the tests after it fail at once, saying so,
# instead of each waiting out its timeouts on a node that cannot run their pods.
UNHEALTHY = pytest.StashKey[str]()
# The node's summary at the first failed cluster test, printed again at the very end of the run.
FIRST_FAILURE = pytest.StashKey[str]()
HEALTH_RECHECK_SECONDS = 15


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failed cluster test, print the node's summary and the components' and the pods' logs."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed or "cluster" not in item.fixturenames:
        return
    node = item.funcargs.get("cluster")
    if node is None:
        return
    problems = node.health()
    summary = node.summary(problems)
    report.sections.append(("one-node cluster", summary))
    item.config.stash.setdefault(FIRST_FAILURE, f"{item.nodeid}\n{summary}")
    if problems and UNHEALTHY not in item.config.stash:
        time.sleep(HEALTH_RECHECK_SECONDS)  # a problem that lasts, not a moment's (the API server restarting, say)
        problems = node.health()
        if problems:
            item.config.stash[UNHEALTHY] = f"{item.nodeid}: {'; '.join(problems)}"
    for name, tail in {**node.logs(), **{f"pod {k}": v for k, v in node.pod_logs().items()}}.items():
        report.sections.append((f"log of {name}", tail))


@pytest.fixture(autouse=True)
def node_still_healthy(request):
    """Fail a cluster test at once when an earlier one found the node unhealthy."""
    unhealthy = request.config.stash.get(UNHEALTHY, None)
    if unhealthy is not None:
        pytest.fail(f"not run: the node has been unhealthy since {unhealthy}", pytrace=False)


def pytest_terminal_summary(terminalreporter, config):
    """The node as the first failed cluster test found it, where a truncated log still shows it: at the end."""
    first = config.stash.get(FIRST_FAILURE, None)
    if first is not None:
        terminalreporter.section("one-node cluster at the first failed test")
        terminalreporter.write_line(first)


@pytest.fixture(scope="session")
def helm(tmp_path_factory):
    from tests.chart.conftest import Helm, helm_binary

    return Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def installed(cluster, images, helm):
    """The chart installed as docs/install.md says, with the run's image, once per session; removed afterwards.

    Shared by the install test and the rollout and fault tests that run on its
    release (they come after it: test files run in name order).
    """
    from tests.cluster.test_install import (
        NAMESPACE, OPERATOR, OPERATOR_READY_TIMEOUT, RELEASE, ROOT, explained, persistent_volumes, uninstall,
    )
    from tests.cluster.test_smoke import kubectl

    store_dir = cluster.work_dir / "volumes"
    kubectl(cluster, "apply", "-f", "-", input=persistent_volumes(store_dir))
    repository, _, tag = images["operator"].ref.rpartition(":")
    kubeconfig = f"--kubeconfig={cluster.kubeconfig}"
    try:
        with explained(cluster):
            helm("install", RELEASE, str(ROOT / "charts" / "mlops-operator"), kubeconfig,
                 "--namespace", NAMESPACE, "--create-namespace",
                 "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                 "--set", "image.pullPolicy=Never",
                 # Its own namespace only: test_s3_loop installs a second release that watches another.
                 "--set", f"watchNamespaces={{{NAMESPACE}}}",
                 "--set", "store.create=true",
                 "--set", "store.accessModes={ReadWriteOnce}", "--set", "feedback.accessModes={ReadWriteOnce}")
            kubectl(cluster, "-n", NAMESPACE, "rollout", "status", OPERATOR, f"--timeout={OPERATOR_READY_TIMEOUT}s",
                    timeout=OPERATOR_READY_TIMEOUT + 30)
        yield store_dir
    finally:
        uninstall(cluster, helm, kubeconfig)


@pytest.fixture(scope="session")
def served(cluster, installed) -> str:
    """examples/iris applied, iris-v1 trained and served: the base URL of the ``iris`` Service's ClusterIP."""
    from tests.cluster.test_install import (
        NAMESPACE, ROOT, SERVICE_PREFIX, SERVING_TIMEOUT, TRAINING_JOB, TRAINING_TIMEOUT, explained, get_json, wait_until,
    )
    from tests.cluster.test_smoke import kubectl

    with explained(cluster):
        kubectl(cluster, "apply", "-n", NAMESPACE, "-f", str(ROOT / "examples" / "iris"))
        wait_until(lambda: (get_json(cluster, "trainingjob", TRAINING_JOB).get("status") or {}).get("phase")
                   == "Succeeded", TRAINING_TIMEOUT, f"TrainingJob {TRAINING_JOB} Succeeded")
        kubectl(cluster, "wait", "-n", NAMESPACE, "--for=condition=Ready", "modeldeployment/iris",
                f"--timeout={SERVING_TIMEOUT}s", timeout=SERVING_TIMEOUT + 30)
        service = get_json(cluster, "service", "iris")
    cluster_ip = service["spec"]["clusterIP"]
    assert cluster_ip.startswith(SERVICE_PREFIX), cluster_ip  # only the cluster's own range
    return f"http://{cluster_ip}:{service['spec']['ports'][0]['port']}"
