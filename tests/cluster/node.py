"""A real one-node Kubernetes cluster, started and torn down by the tests.

``OneNodeCluster`` runs, as child processes of the test run:

* the test control plane (tests/envtest) with the endpointslice controller
  added (kube-proxy routes a Service only once its EndpointSlice exists) and
  kube-scheduler;
* containerd with its root, state, socket, runc state and network namespaces
  under the run's temporary directory, the sandbox image and the project's
  image imported from OCI archives (pods use ``imagePullPolicy: Never``);
* the kubelet, its pods' cgroups inside this process's own cgroup, its root
  dir and pod logs in the temporary directory;
* kube-proxy in iptables mode;
* the pods' name server (tests/cluster/dns.py) on the bridge address: Service
  names of the cluster domain resolve, nothing else does;
* the CNI bridge/host-local/portmap/loopback plugins on a bridge of its own,
  pod range ``POD_CIDR``; the Service range is the control plane's.

Traffic stays on the host: pods have a route to the Service range only (no
default route), and the host routes the Service range to the bridge.

``stop()`` removes every pod, container, mount, iptables chain, link,
cgroup and process the run created and restores the kernel settings the
kubelet changes; ``stop()`` returns what it could not remove.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from tests.cluster import hoststate
from tests.cluster.cgroups import PodCgroupRoot
from tests.cluster.dns import LOOKUP_TIMEOUT as DNS_LOOKUP_TIMEOUT, ClusterDNS
from tests.cluster.pieces import Image
from tests.envtest.controlplane import (
    DEFAULT_CONTROLLERS,
    HOST,
    SERVICE_CLUSTER_IP_RANGE,
    Component,
    ControlPlane,
    free_ports,
)

POD_CIDR = "10.244.0.0/24"
BRIDGE_IP = "10.244.0.1"
NODE_NAME = "mlops-node"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = "/usr/lib/cni"
# The control plane's controllers, plus: EndpointSlices for kube-proxy, the
# node lifecycle (it lifts the node's not-ready taint once the kubelet is Ready),
# the kube-root-ca.crt ConfigMap every pod's token volume mounts, service-account
# token Secrets, the binding of claims to PersistentVolumes and the removal of the
# protection finalizers admission puts on both (else deleting them never ends).
CLUSTER_CONTROLLERS = (*DEFAULT_CONTROLLERS, "endpointslice-controller", "node-lifecycle-controller",
                       "root-ca-certificate-publisher-controller", "serviceaccount-token-controller",
                       "persistentvolume-binder-controller", "persistentvolumeclaim-protection-controller",
                       "persistentvolume-protection-controller")
# containerd 1.6 puts its shims' sockets here whatever its configured state dir.
SHIM_SOCKET_DIRS = (Path("/run/containerd/s"), Path("/run/containerd"))
# One cluster per machine at a time: the bridge address and pod range are fixed.
LOCK_FILE = Path("/run/lock/mlops-operator-cluster.lock")
NODE_READY_TIMEOUT = 120.0
EVICTION_SIGNALS = ("memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available",
                    "imagefs.inodesFree", "pid.available")
POD_REMOVAL_TIMEOUT = 90.0
# A pod's sandbox and containers start in seconds here (local images, no pulls): longer means the node is stuck.
STUCK_CREATING_AFTER = 180.0
LOW_DISK_BYTES = 1 << 30


def _timestamp(text: str) -> float:
    """Seconds since the epoch of an API server timestamp (RFC 3339, UTC)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class ClusterError(RuntimeError):
    """A piece of the cluster failed to start; the message carries its log tail."""


class ClusterControlPlane(ControlPlane):
    """The test control plane plus kube-scheduler, more controllers and kubelet client certs.

    Pods reach it: it listens on the bridge address (a local address, so the
    traffic never leaves the host), publishes that address as the endpoint of
    the ``kubernetes`` Service and gives pods service-account tokens.
    """

    def __init__(self, bin_dir: Path, node_bin_dir: Path, **kwargs):
        super().__init__(bin_dir, controllers=CLUSTER_CONTROLLERS, bind_address=BRIDGE_IP,
                         service_account_tokens=True, endpoint_reconciler="lease", **kwargs)
        self.node_bin_dir = node_bin_dir

    def start(self) -> "ClusterControlPlane":
        super().start()
        try:
            self._start_scheduler()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_apiserver(self) -> None:
        assert self.certs is not None
        # `kubectl logs` goes through the API server to the kubelet, which trusts our CA.
        self.extra_apiserver_args += [
            f"--kubelet-client-certificate={self.certs.admin_crt}",
            f"--kubelet-client-key={self.certs.admin_key}",
            # The node's name resolves nowhere; its address is the bridge's.
            "--kubelet-preferred-address-types=InternalIP",
        ]
        super()._start_apiserver()

    def restart_apiserver(self, down_seconds: float) -> None:
        """An API server outage: stop kube-apiserver, keep it down ``down_seconds``, start it again.

        It comes back with the same arguments (so the same port, certificates and
        etcd data); returns once it is ready again (bounded by the start timeout).
        """
        (component,) = [c for c in self.components if c.name == "kube-apiserver"]
        component.stop(self.stop_timeout)
        time.sleep(down_seconds)  # the outage itself, not a wait for a state
        component.start()
        self._await(component)

    def _start_scheduler(self) -> None:
        assert self.work_dir is not None and self.kubeconfig is not None
        kubeconfig = str(self.kubeconfig)

        def start_once() -> Component:
            (port,) = free_ports(1)
            self._scheduler_port = port
            return self._launch("kube-scheduler", [
                str(self.node_bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={HOST}",
                f"--secure-port={port}",
                f"--cert-dir={self.work_dir / 'scheduler'}",
                "--leader-elect=false",
            ])

        self._start_with_port_retry(start_once)

    @property
    def _readiness(self):
        checks = dict(super()._readiness)
        checks["kube-scheduler"] = lambda: _healthz(self._scheduler_port)
        return checks


def _healthz(port: int, scheme: str = "https") -> bool:
    import ssl
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a self-signed serving certificate
    with urllib.request.urlopen(f"{scheme}://{HOST}:{port}/healthz", timeout=2,
                                context=ctx if scheme == "https" else None) as resp:
        return resp.status == 200


class OneNodeCluster:
    """See the module docstring. Attributes after ``start()``: ``plane``, ``kubeconfig``, ``work_dir``."""

    def __init__(self, plane_bin_dir: Path, node_bin_dir: Path, images: dict[str, Image], *,
                 start_timeout: float = NODE_READY_TIMEOUT):
        self.plane_bin_dir = plane_bin_dir
        self.node_bin_dir = node_bin_dir
        self.images = images
        self.start_timeout = start_timeout
        self.work_dir: Path | None = None
        self.plane: ClusterControlPlane | None = None
        self.components: list[Component] = []
        self.cgroups: PodCgroupRoot | None = None
        self.bridge: str | None = None
        self.dns: ClusterDNS | None = None
        self.before: hoststate.HostState | None = None
        self._sysctls: dict[str, str] = {}
        self._shim_dirs_before: set[Path] = set()
        self._lock = None

    # -- paths ---------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        assert self.plane is not None and self.plane.kubeconfig is not None
        return self.plane.kubeconfig

    @property
    def containerd_socket(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "containerd" / "containerd.sock"

    @property
    def pod_logs_dir(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "pod-logs"

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> "OneNodeCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "OneNodeCluster":
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(LOCK_FILE, "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.before = hoststate.HostState.snapshot()
        self._sysctls = hoststate.sysctls()
        self._shim_dirs_before = {d for d in SHIM_SOCKET_DIRS if d.exists()}
        self.work_dir = Path(tempfile.mkdtemp(prefix="mlops-cluster-"))
        # Components write their logs here; the containerd socket path must stay short.
        (self.work_dir / "logs").mkdir()
        try:
            # The bridge first: the API server listens on its address.
            self._make_bridge()
            self.plane = ClusterControlPlane(self.plane_bin_dir, self.node_bin_dir,
                                             log_dir=self.work_dir / "logs").start()
            self._write_cni_config()
            self._start_dns()
            self.cgroups = PodCgroupRoot(f"mlops-cluster-{os.getpid()}").create()
            self._start_containerd()
            self._import_images()
            self._start_kubelet()
            self._start_kube_proxy()
            self._await_node_ready()
            # The kubelet sets kernel.panic & co. once at start; put them back at once.
            hoststate.restore_sysctls(self._sysctls)
        except BaseException:
            problems = self.stop()
            if problems:
                print("cluster: after a failed start, left behind:\n  " + "\n  ".join(problems), file=sys.stderr)
            raise
        return self

    def stop(self) -> list[str]:
        """Tear everything down; return what is still left afterwards (empty when clean)."""
        if self.work_dir is None:
            return []
        work_dir = self.work_dir
        self._delete_all_pods()
        for component in reversed(self.components):
            with contextlib.suppress(Exception):
                component.stop(15)
        self._remove_containers()
        for component in [c for c in self.components if c.name == "containerd"]:
            with contextlib.suppress(Exception):
                component.stop(15)
        self.components = []
        problems = []
        if self.dns is not None:
            problems += self.dns.stop()
            self.dns = None
        if self.plane is not None:
            self.plane.stop()
            self.plane = None

        leaf = self.cgroups.leaf if self.cgroups else f"mlops-cluster-{os.getpid()}"
        stray = hoststate.processes_of(work_dir, leaf)
        if stray:
            problems += [f"process {pid} still running: {cmd}" for pid, cmd in stray.items()]
            for pid in stray:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        hoststate.unmount_all(work_dir)
        if self.before is not None:
            hoststate.remove_iptables_changes(self.before)
        if self.bridge:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30, check=False)
        if self.cgroups is not None:
            problems += [f"cgroup not removed: {c}" for c in self.cgroups.remove()]
            problems += [f"cgroup still there: {c}" for c in self.cgroups.exists_anywhere()]
        hoststate.restore_sysctls(self._sysctls)
        for directory in SHIM_SOCKET_DIRS:
            if directory not in self._shim_dirs_before and directory.exists():
                try:
                    directory.rmdir()
                except OSError as err:
                    problems.append(f"{directory} not removed: {err.strerror}")
        problems += [f"mount still there: {m}" for m in hoststate.mounts_under(work_dir)]
        problems += [f"socket still open: {s}" for s in hoststate.sockets_on(BRIDGE_IP)]
        if self.before is not None:
            problems += hoststate.leftovers(self.before, hoststate.HostState.snapshot())
        problems += [f"sysctl {k} is {v!r}, was {self._sysctls[k]!r}"
                     for k, v in hoststate.sysctls().items() if self._sysctls.get(k, v) != v]
        shutil.rmtree(work_dir, ignore_errors=True)
        self.work_dir = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        return problems

    # -- tools -------------------------------------------------------------

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def logs(self) -> dict[str, str]:
        """Log tails of every component (the control plane's too), for failure reports."""
        tails = dict(self.plane.logs()) if self.plane else {}
        tails.update({c.name: c.tail(60) for c in self.components})
        if self.dns is not None:
            tails["dns"] = self.dns.tail(60)
        return tails

    def health(self) -> list[str]:
        """What is wrong with the node itself, whatever the test: an exited component, a node that is not
        Ready or under pressure, pods stuck in ContainerCreating, a disk nearly full. Empty when healthy."""
        problems = [f"{c.name} exited" for c in self.components if not c.running()]
        if self.plane is None or self.work_dir is None:
            return problems
        free = shutil.disk_usage(self.work_dir).free
        if free < LOW_DISK_BYTES:
            problems.append(f"{free >> 20} MiB free on the disk of {self.work_dir}")
        try:
            node = self._get(f"/api/v1/nodes/{NODE_NAME}")
            pods = self._get("/api/v1/pods")["items"]
        except (OSError, ValueError) as err:
            return problems + [f"API server not answering: {err}"]
        for c in node.get("status", {}).get("conditions", []):
            if (c["type"] == "Ready") != (c["status"] == "True"):
                problems.append(f"node {c['type']}={c['status']}: {c.get('message', '')}")
        now = time.time()
        for pod in pods:
            for status in pod.get("status", {}).get("containerStatuses", []):
                waiting = status.get("state", {}).get("waiting") or {}
                age = now - _timestamp(pod["metadata"]["creationTimestamp"])
                if waiting.get("reason") == "ContainerCreating" and age > STUCK_CREATING_AFTER:
                    problems.append(f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']} "
                                    f"in ContainerCreating for {age:.0f}s")
        return problems

    def summary(self, problems: list[str], events: int = 15) -> str:
        """A short account of the node for a failure report: ``problems`` (:meth:`health`'s), its conditions, the
        disk and the latest Warning events."""
        lines = [f"problems: {'; '.join(problems) or 'none'}"]
        if self.work_dir is not None:
            lines.append(f"disk free under {self.work_dir}: {shutil.disk_usage(self.work_dir).free >> 20} MiB")
        try:
            node = self._get(f"/api/v1/nodes/{NODE_NAME}")
            warnings = [e for e in self._get("/api/v1/events")["items"] if e.get("type") == "Warning"]
        except (OSError, ValueError) as err:
            return "\n".join([*lines, f"API server not answering: {err}"])
        lines += [f"node {c['type']}={c['status']} ({c.get('reason', '')})"
                  for c in node.get("status", {}).get("conditions", [])]
        warnings.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        for e in warnings[-events:]:
            obj = e.get("involvedObject", {})
            lines.append(f"Warning {e.get('lastTimestamp') or e.get('eventTime')} {obj.get('namespace', '')}/"
                         f"{obj.get('kind')}/{obj.get('name')} {e.get('reason')} x{e.get('count', 1)}: "
                         f"{(e.get('message') or '')[:300]}")
        return "\n".join(lines)

    def _get(self, path: str) -> dict:
        assert self.plane is not None
        status, body = self.plane.request(path, timeout=10)
        if status != 200:
            raise ValueError(f"GET {path}: HTTP {status}")
        return json.loads(body)

    def pod_logs(self) -> dict[str, str]:
        """The containers' own output, as the kubelet stored it: ``namespace_pod_uid/container`` -> tail."""
        found = {}
        if self.work_dir is not None and self.pod_logs_dir.is_dir():
            for log in sorted(self.pod_logs_dir.glob("*/*/*.log")):
                lines = log.read_text(errors="replace").splitlines()[-40:]
                found[f"{log.parent.parent.name}/{log.parent.name}"] = "\n".join(lines)
        return found

    # -- pieces ----------------------------------------------------------------

    def _launch(self, name: str, argv: list[str]) -> Component:
        assert self.work_dir is not None
        component = Component(name, argv, self.work_dir / "logs" / f"{name}.log")
        self.components.append(component)
        component.start()
        return component

    def _await(self, component: Component, check, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last = ""
        while time.monotonic() < deadline:
            if not component.running():
                raise ClusterError(f"{component.name} exited while starting; last lines of its log:\n{component.tail(60)}")
            try:
                if check():
                    return
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise ClusterError(f"{what} not reached after {timeout or self.start_timeout:.0f}s ({last or 'no error'}); "
                           f"last lines of {component.name}'s log:\n{component.tail(60)}")

    def _make_bridge(self) -> None:
        """The pods' bridge, made before the CNI plugin so that the host routes are ours from the start."""
        name = f"mlopsbr{os.getpid() % 100000}"
        for argv in (
            ["ip", "link", "add", name, "type", "bridge"],
            ["ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", name],
            ["ip", "link", "set", name, "up"],
            # Service addresses without an endpoint must not leave through the default route.
            ["ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", name, "src", BRIDGE_IP],
        ):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            if proc.returncode != 0:
                raise ClusterError(f"{' '.join(argv)}: {proc.stderr.strip()}")
            self.bridge = name

    def _write_cni_config(self) -> None:
        assert self.work_dir is not None and self.bridge is not None
        conf_dir = self.work_dir / "cni" / "net.d"
        conf_dir.mkdir(parents=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "mlops-cluster",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]],
                        # Only the Service range goes through the host; no default route.
                        "routes": [{"dst": SERVICE_CLUSTER_IP_RANGE}],
                        "dataDir": str(self.work_dir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (conf_dir / "10-mlops.conflist").write_text(json.dumps(conflist, indent=2) + "\n")

    def _start_dns(self) -> None:
        """The pods' name server, before any pod: it answers from the API server, so after the control plane."""
        assert self.work_dir is not None and self.plane is not None
        try:
            plane = self.plane
            self.dns = ClusterDNS(lambda path: plane.request(path, timeout=DNS_LOOKUP_TIMEOUT), BRIDGE_IP,
                                  self.work_dir / "logs" / "dns.log", domain=CLUSTER_DOMAIN).start()
        except OSError as err:
            raise ClusterError(f"the DNS responder cannot listen on {BRIDGE_IP}:53: {err}") from err

    def _start_containerd(self) -> None:
        assert self.work_dir is not None
        base = self.work_dir / "containerd"
        base.mkdir()
        pause = self.images["pause"].ref
        config = f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # The sandbox refuses CAP_SYS_RESOURCE: a negative oom_score_adj would kill runc's init.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.work_dir / 'cni' / 'net.d'}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{base / 'runc'}"
"""
        (base / "config.toml").write_text(config)
        component = self._launch("containerd", ["containerd", "--config", str(base / "config.toml")])
        self._await(component, lambda: self.ctr("version", timeout=10).returncode == 0, "containerd answering")

    def _import_images(self) -> None:
        for image in self.images.values():
            proc = self.ctr("images", "import", str(image.archive))
            if proc.returncode != 0:
                raise ClusterError(f"ctr images import {image.archive} failed: {proc.stderr.strip()}")
            listed = self.ctr("images", "ls", "-q").stdout.split()
            if image.ref not in listed:
                raise ClusterError(f"{image.ref} not among containerd's images after import: {listed}")

    def _start_kubelet(self) -> None:
        assert self.work_dir is not None and self.plane is not None and self.cgroups is not None
        root = self.work_dir / "kubelet"
        root.mkdir()
        resolv = self.work_dir / "resolv.conf"
        # The node's own resolv.conf (pods with dnsPolicy Default): no real name server, nothing resolves.
        # Every other pod asks clusterDNS, which knows the cluster's Services and nothing else.
        resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        port, healthz = free_ports(2)
        self.kubelet_healthz_port = healthz
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": BRIDGE_IP,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": HOST,
            "healthzPort": healthz,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.plane.certs.ca_crt)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroups.path,
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.pod_logs_dir),
            "resolvConf": str(resolv),
            "clusterDNS": [BRIDGE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            # The imported images must never be garbage-collected: nothing could pull them back.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # No node-pressure eviction ("0%" turns a signal off). The kubelet measures the machine's disk
            # and memory, which the tests do not own: with a shared disk under a few per cent free, it
            # would evict the operator's pods and delete unused images (nothing can pull them back) to
            # reclaim space, and the replacements would wait in ContainerCreating for good. Containers'
            # own limits stay enforced by the kernel (OOMKilled), which is what the tests need.
            "evictionHard": {signal: "0%" for signal in EVICTION_SIGNALS},
            "podCIDR": POD_CIDR,
            "maxPods": 30,
            "serializeImagePulls": False,
        }
        config_path = root / "config.json"
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        self._launch("kubelet", [
            str(self.node_bin_dir / "kubelet"),
            f"--config={config_path}",
            f"--kubeconfig={self.plane.kubeconfig}",
            f"--root-dir={root}",
            f"--cert-dir={root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={BRIDGE_IP}",
            "--v=1",
        ])

    def _start_kube_proxy(self) -> None:
        assert self.work_dir is not None and self.plane is not None
        healthz, metrics = free_ports(2)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.plane.kubeconfig)},
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "hostnameOverride": NODE_NAME,
            "bindAddress": BRIDGE_IP,
            "healthzBindAddress": f"{HOST}:{healthz}",
            "metricsBindAddress": f"{HOST}:{metrics}",
            # NodePorts only on our bridge, and not on 127.0.0.1 (that would need route_localnet).
            "nodePortAddresses": [f"{BRIDGE_IP}/32"],
            "iptables": {"localhostNodePorts": False},
            # Leave the host's conntrack table sizes alone.
            "conntrack": {"maxPerCore": 0},
        }
        path = self.work_dir / "kube-proxy.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        component = self._launch("kube-proxy", [str(self.node_bin_dir / "kube-proxy"), f"--config={path}", "--v=1"])
        self._await(component, lambda: _healthz(healthz, "http"), "kube-proxy healthy")

    def _await_node_ready(self) -> None:
        kubelet = next(c for c in self.components if c.name == "kubelet")

        def ready() -> bool:
            status, body = self.plane.request(f"/api/v1/nodes/{NODE_NAME}")
            if status != 200:
                return False
            conditions = json.loads(body).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        self._await(kubelet, ready, f"node {NODE_NAME} Ready")

    # -- teardown ----------------------------------------------------------------

    def _delete_all_pods(self) -> None:
        """Let the kubelet stop every pod (CNI teardown, sandbox removal) while everything still runs."""
        if self.plane is None or self.plane.kubeconfig is None or not any(c.name == "kubelet" and c.running() for c in self.components):
            return
        kubectl = _kubectl()
        if kubectl is None:
            return
        base = [kubectl, f"--kubeconfig={self.plane.kubeconfig}"]
        # Controllers would recreate the pods of Deployments and Jobs; remove those first.
        subprocess.run([*base, "delete", "deployments,replicasets,jobs,statefulsets,daemonsets", "--all",
                        "--all-namespaces", "--wait=false"], capture_output=True, timeout=60, check=False)
        subprocess.run([*base, "delete", "pods", "--all", "--all-namespaces", "--grace-period=5",
                        f"--timeout={POD_REMOVAL_TIMEOUT:.0f}s"], capture_output=True, timeout=POD_REMOVAL_TIMEOUT + 30, check=False)
        deadline = time.monotonic() + 30
        # The kubelet stops the sandboxes (network teardown) right after the containers.
        while time.monotonic() < deadline:
            ready = self.ctr("tasks", "ls", "-q", timeout=10).stdout.split()
            if not ready:
                break
            time.sleep(0.5)

    def _remove_containers(self) -> None:
        """Kill and delete whatever containerd still runs (after a failed test or start)."""
        if not any(c.name == "containerd" and c.running() for c in self.components):
            return
        for task in self.ctr("tasks", "ls", "-q", timeout=30).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, timeout=30)
        deadline = time.monotonic() + 30
        while self.ctr("tasks", "ls", "-q", timeout=10).stdout.split() and time.monotonic() < deadline:
            for task in self.ctr("tasks", "ls", "-q", timeout=10).stdout.split():
                self.ctr("tasks", "delete", "-f", task, timeout=30)
            time.sleep(0.5)
        for container in self.ctr("containers", "ls", "-q", timeout=30).stdout.split():
            self.ctr("containers", "delete", container, timeout=30)


def _kubectl() -> str | None:
    candidate = Path(sys.executable).parent / "kubectl"
    return str(candidate) if os.access(candidate, os.X_OK) else shutil.which("kubectl")


def _main(argv: list[str] | None = None) -> int:
    """``python -m tests.cluster.node up``: start the cluster by hand, stop it on Ctrl-C."""
    import argparse

    from tests.cluster import pieces
    from tests.envtest.controlplane import ensure_binaries

    parser = argparse.ArgumentParser(prog="python -m tests.cluster.node",
                                     description="Run the one-node test cluster by hand (root needed).")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build what is missing, start the cluster and wait until Ctrl-C")
    up.add_argument("--max-hours", type=float, default=4.0, help="stop by itself after this long (default 4)")
    args = parser.parse_args(argv)

    pieces.install_packages()
    node = OneNodeCluster(ensure_binaries(), pieces.node_binaries(), pieces.images())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.monotonic()
    try:
        node.start()
        print(f"cluster up in {time.monotonic() - started:.1f}s; node {NODE_NAME}, pods {POD_CIDR}, "
              f"Services {SERVICE_CLUSTER_IP_RANGE}")
        print(f"image: {node.images['operator'].ref} (imagePullPolicy: Never)")
        print(f"logs: {node.work_dir / 'logs'}  pod logs: {node.pod_logs_dir}")
        print(f"export KUBECONFIG={node.kubeconfig}")
        print("Ctrl-C to stop.", flush=True)
        until = time.monotonic() + args.max_hours * 3600
        while all(c.running() for c in node.components) and time.monotonic() < until:
            time.sleep(1)
        for c in node.components:
            if not c.running():
                print(f"{c.name} exited; last lines of its log:\n{c.tail()}", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        problems = node.stop()
        print("cluster stopped" + ("; left behind:\n  " + "\n  ".join(problems) if problems else ", nothing left behind"),
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(_main())
