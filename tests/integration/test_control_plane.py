"""The test control plane is a real Kubernetes: version, SSA, RBAC, controllers."""

from __future__ import annotations

import json

from kubernetes import client

from tests.envtest.controlplane import k8s_version_from_gomod, wait_for


def test_version_matches_the_pinned_release(control_plane):
    expected = k8s_version_from_gomod()
    status, body = control_plane.plane.request("/version")
    assert status == 200
    info = json.loads(body)
    assert info["gitVersion"] == expected
    major, minor = expected.lstrip("v").split(".")[:2]
    assert (info["major"], info["minor"]) == (major, minor)

    out = control_plane.kubectl("version", "-o", "json").stdout
    assert json.loads(out)["serverVersion"]["gitVersion"] == expected


def test_server_side_apply_records_the_field_manager(control_plane, namespace):
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ssa", "namespace": namespace},
            "data": {"a": "1"},
        }
    )
    control_plane.kubectl("apply", "--server-side", "--field-manager=mlops-test", "-f", "-", input=manifest)

    api_client = control_plane.api_client()
    try:
        cm = client.CoreV1Api(api_client).read_namespaced_config_map("ssa", namespace)
    finally:
        api_client.close()
    assert cm.data == {"a": "1"}
    managers = {(m.manager, m.operation) for m in cm.metadata.managed_fields}
    assert ("mlops-test", "Apply") in managers

    # A second manager that takes the same field conflicts unless forced.
    other = manifest.replace('"1"', '"2"')
    proc = control_plane.kubectl(
        "apply", "--server-side", "--field-manager=someone-else", "-f", "-", input=other, check=False
    )
    assert proc.returncode != 0
    assert "conflict" in (proc.stderr + proc.stdout).lower()


def test_rbac_denies_an_unprivileged_service_account(control_plane):
    denied = control_plane.kubectl(
        "auth", "can-i", "create", "pods", "--as=system:serviceaccount:x:y", check=False
    )
    assert denied.stdout.strip() == "no"
    assert denied.returncode != 0
    allowed = control_plane.kubectl("auth", "can-i", "create", "pods")
    assert allowed.stdout.strip() == "yes"


def test_garbage_collector_deletes_dependents(control_plane, namespace):
    api_client = control_plane.api_client()
    core = client.CoreV1Api(api_client)
    try:
        owner = core.create_namespaced_config_map(
            namespace, {"metadata": {"name": "owner"}, "data": {"role": "owner"}}
        )
        core.create_namespaced_config_map(
            namespace,
            {
                "metadata": {
                    "name": "child",
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "ConfigMap",
                            "name": "owner",
                            "uid": owner.metadata.uid,
                            "blockOwnerDeletion": False,
                        }
                    ],
                },
                "data": {"role": "child"},
            },
        )
        core.delete_namespaced_config_map("owner", namespace)

        def child_gone():
            try:
                core.read_namespaced_config_map("child", namespace)
            except client.exceptions.ApiException as err:
                return err.status == 404
            return False

        wait_for(child_gone, what="the garbage collector to delete the child ConfigMap")
    finally:
        api_client.close()


def test_job_controller_creates_pods(control_plane, namespace):
    api_client = control_plane.api_client()
    try:
        client.BatchV1Api(api_client).create_namespaced_job(
            namespace,
            {
                "metadata": {"name": "hello"},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                        }
                    },
                },
            },
        )
        core = client.CoreV1Api(api_client)
        # No kubelet here: the Pod is created but never runs.
        pods = wait_for(
            lambda: core.list_namespaced_pod(namespace, label_selector="job-name=hello").items,
            what="the job controller to create a Pod",
        )
        assert pods[0].metadata.owner_references[0].kind == "Job"
    finally:
        api_client.close()


def test_deployment_controller_creates_a_replicaset(control_plane, namespace):
    api_client = control_plane.api_client()
    try:
        labels = {"app": "web"}
        client.AppsV1Api(api_client).create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
                    },
                },
            },
        )
        core = client.CoreV1Api(api_client)
        wait_for(
            lambda: core.list_namespaced_pod(namespace, label_selector="app=web").items,
            what="deployment -> replicaset -> pod",
        )
    finally:
        api_client.close()


def test_namespace_gets_a_default_service_account(control_plane, namespace):
    api_client = control_plane.api_client()
    core = client.CoreV1Api(api_client)
    try:
        def has_default():
            try:
                return core.read_namespaced_service_account("default", namespace)
            except client.exceptions.ApiException as err:
                if err.status == 404:
                    return None
                raise

        wait_for(has_default, what="the serviceaccount controller")
    finally:
        api_client.close()
