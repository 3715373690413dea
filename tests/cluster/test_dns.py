"""The cluster's DNS (tests/cluster/dns.py) as a pod sees it: Service names resolve, nothing else does.

One pod of the project's image looks names up with the C library's resolver
(Python's ``socket.getaddrinfo``), through the ``resolv.conf`` the kubelet
wrote from ``clusterDNS``/``clusterDomain``: a Service of its namespace by
its short name (the search path), the ``kubernetes`` Service by its full
name, a headless Service (its ready pod's address), and names outside the
cluster, which must fail at once without any query leaving the host.
"""

from __future__ import annotations

import json

from tests.cluster.node import BRIDGE_IP, NODE_NAME
from tests.cluster.test_smoke import kubectl, manifests, namespace, wait_for  # noqa: F401 (fixture)

LOOKUPS = {
    "smoke": "a Service of the pod's namespace, by its short name",
    "kubernetes.default.svc.cluster.local": "the API server's Service, by its full name",
    "smoke-headless": "a headless Service: its ready endpoints",
    "example.com": "outside the cluster",
    "nope.default.svc.cluster.local": "no such Service",
}
PROBE = (
    "import json, socket, time\n"
    f"names = {list(LOOKUPS)!r}\n"
    "out = {'resolv.conf': open('/etc/resolv.conf').read()}\n"
    "for name in names:\n"
    "    t = time.monotonic()\n"
    "    try:\n"
    "        out[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})\n"
    "    except socket.gaierror as e:\n"
    "        out[name] = e.strerror\n"
    "    out[name + ' seconds'] = round(time.monotonic() - t, 3)\n"
    "print(json.dumps(out))\n"
)
LOOKUP_SECONDS = 2.0
"""An answer, or its absence, comes from the responder on the host: no lookup should wait for a timeout."""


def probe_pod(namespace: str, image: str) -> dict:
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dns-probe", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "probe", "image": image, "imagePullPolicy": "Never",
                            "command": ["python3", "-c", PROBE], "securityContext": security}],
        },
    }


def test_pods_resolve_service_names_and_nothing_else(cluster, images, namespace) -> None:  # noqa: F811
    image = images["operator"].ref
    kubectl(cluster, "apply", "-f", "-", input=manifests(namespace, image))
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "smoke-headless", "namespace": namespace},
                "spec": {"clusterIP": "None", "selector": {"app": "smoke"}, "ports": [{"port": 8080}]}}
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(headless))
    kubectl(cluster, "rollout", "status", "deployment/smoke", "-n", namespace, "--timeout=180s", timeout=200)
    pods = json.loads(kubectl(cluster, "get", "pods", "-n", namespace, "-l", "app=smoke", "-o", "json"))["items"]
    pod_ips = sorted(p["status"]["podIP"] for p in pods)

    def ready_in_slice() -> bool:
        slices = json.loads(kubectl(cluster, "get", "endpointslices", "-n", namespace, "-l",
                                    "kubernetes.io/service-name=smoke-headless", "-o", "json"))["items"]
        return sorted(a for s in slices for e in s.get("endpoints") or [] if e["conditions"].get("ready")
                      for a in e["addresses"]) == pod_ips
    wait_for(ready_in_slice, 60, "the headless Service's EndpointSlice with both pods ready")

    kubectl(cluster, "apply", "-f", "-", input=json.dumps(probe_pod(namespace, image)))
    wait_for(lambda: json.loads(kubectl(cluster, "get", "pod", "dns-probe", "-n", namespace, "-o", "json"))
             ["status"].get("phase") in ("Succeeded", "Failed"), 120, "the probe pod to finish")
    found = json.loads(kubectl(cluster, "logs", "-n", namespace, "dns-probe").strip().splitlines()[-1])

    resolv = found["resolv.conf"].split("\n")
    assert f"nameserver {BRIDGE_IP}" in resolv, found["resolv.conf"]
    assert f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local" in resolv, found["resolv.conf"]
    service = json.loads(kubectl(cluster, "get", "service", "smoke", "-n", namespace, "-o", "json"))
    assert found["smoke"] == [service["spec"]["clusterIP"]], found
    assert found["kubernetes.default.svc.cluster.local"] == ["10.0.0.1"], found
    assert found["smoke-headless"] == pod_ips, found
    for name in ("example.com", "nope.default.svc.cluster.local"):
        assert isinstance(found[name], str), (name, found[name])  # an error, no address
    slow = {n: found[f"{n} seconds"] for n in LOOKUPS if found[f"{n} seconds"] > LOOKUP_SECONDS}
    assert not slow, slow
    assert json.loads(kubectl(cluster, "get", "pod", "dns-probe", "-n", namespace, "-o", "json"))["spec"]["nodeName"] \
        == NODE_NAME
