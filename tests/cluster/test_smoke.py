"""Pods from the project's image run on the real kubelet; their HTTP answers from the host and through a Service.

The pods run the image's Python with a small HTTP server that answers with
the pod's own name, so the test can tell which pod answered. Two replicas,
created by a Deployment (deployment and replicaset controllers) and placed by
kube-scheduler (no nodeName); the Service's ClusterIP is routed by kube-proxy
once the endpointslice controller has published the pods.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid

import pytest

from tests.cluster.node import EVICTION_SIGNALS, NODE_NAME, POD_CIDR

PORT = 8080
REPLICAS = 2
SERVER = (
    "import http.server, socket\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = socket.gethostname().encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    f"http.server.ThreadingHTTPServer(('', {PORT}), H).serve_forever()\n"
)


def kubectl(cluster, *args: str, input: str | None = None, timeout: float = 60) -> str:
    from tests.envtest.fixtures import find_kubectl

    proc = subprocess.run([find_kubectl(), f"--kubeconfig={cluster.kubeconfig}", *args], input=input,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}{proc.stdout}"
    return proc.stdout


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        assert resp.status == 200
        return resp.read().decode()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture
def namespace(cluster):
    name = f"smoke-{uuid.uuid4().hex[:6]}"
    kubectl(cluster, "create", "namespace", name)
    yield name
    kubectl(cluster, "delete", "namespace", name, "--wait=false")


def manifests(namespace: str, image: str) -> str:
    labels = {"app": "smoke"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "smoke", "namespace": namespace},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "http",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-c", SERVER],
                        "ports": [{"containerPort": PORT}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": PORT}, "periodSeconds": 1},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "smoke", "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": PORT}]},
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [deployment, service]})


def test_pods_answer_from_the_host_and_through_the_service(cluster, images, namespace) -> None:
    kubectl(cluster, "apply", "-f", "-", input=manifests(namespace, images["operator"].ref))
    kubectl(cluster, "rollout", "status", "deployment/smoke", "-n", namespace, "--timeout=180s", timeout=200)

    pods = json.loads(kubectl(cluster, "get", "pods", "-n", namespace, "-l", "app=smoke", "-o", "json"))["items"]
    assert len(pods) == REPLICAS
    names = {p["metadata"]["name"] for p in pods}
    prefix = POD_CIDR.rsplit(".", 1)[0] + "."
    for pod in pods:
        ip = pod["status"]["podIP"]
        assert ip.startswith(prefix), f"pod IP {ip} outside {POD_CIDR}"
        assert pod["spec"]["nodeName"] == "mlops-node"  # placed by kube-scheduler
        # Straight to the pod's network namespace, over the bridge.
        assert get(f"http://{ip}:{PORT}/") == pod["metadata"]["name"]

    cluster_ip = json.loads(kubectl(cluster, "get", "service", "smoke", "-n", namespace, "-o", "json"))["spec"]["clusterIP"]
    # The endpointslice controller publishes the ready pods; kube-proxy then programs them.
    wait_for(lambda: ready_endpoints(cluster, namespace) == {p["status"]["podIP"] for p in pods}, 60,
             "an EndpointSlice with both pods ready")
    # kube-proxy spreads connections at random over the endpoints it has programmed so far:
    # every pod must answer, and nothing but these pods.
    # kube-proxy may program the second endpoint a while after the first (a loaded node syncs
    # slowly): keep asking for the whole minute, a tenth of a second apart.
    answered: set[str | None] = set()
    deadline = time.monotonic() + 60
    for _ in range(600):
        answered.add(_answers(f"http://{cluster_ip}/"))
        if answered >= names or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    answered.discard(None)  # connections refused before kube-proxy's first sync
    assert answered == names


def ready_endpoints(cluster, namespace: str) -> set[str]:
    slices = json.loads(kubectl(cluster, "get", "endpointslices", "-n", namespace,
                                "-l", "kubernetes.io/service-name=smoke", "-o", "json"))["items"]
    return {address for s in slices for e in (s.get("endpoints") or [])
            if e.get("conditions", {}).get("ready") for address in e["addresses"]}


def _answers(url: str) -> str | None:
    try:
        return get(url)
    except OSError:
        return None


def test_the_node_is_healthy_and_evicts_nothing_for_the_machines_disk_or_memory(cluster) -> None:
    """The kubelet, asked for its running configuration, has every eviction signal off; the node reports no problem.

    Its disk and memory signals measure the whole machine, which the tests share with everything else on it.
    """
    config = json.loads(kubectl(cluster, "get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/configz"))["kubeletconfig"]
    assert config["evictionHard"] == {signal: "0%" for signal in EVICTION_SIGNALS}
    assert cluster.health() == []
