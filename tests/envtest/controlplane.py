"""A real, local Kubernetes control plane for the integration tests.

``ControlPlane`` runs etcd, kube-apiserver and kube-controller-manager (built by
``hack/envtest/build.sh``) as child processes bound to 127.0.0.1, with
certificates generated on the fly, and writes an admin kubeconfig.

    with ControlPlane(bin_dir) as cp:
        print(cp.kubeconfig)

By hand, for debugging::

    python -m tests.envtest.controlplane up [--bin-dir DIR] [--crds crds/]

Only the standard library and the ``openssl`` command are needed to start the
plane; ``api_client()`` and ``install_crds()`` use the ``kubernetes`` package.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"

# Controllers the operator relies on: owner-reference garbage collection,
# namespace deletion, Jobs (training), Deployments/ReplicaSets (serving) and
# the per-namespace "default" ServiceAccount, and the aggregation of the chart's
# user roles into the built-in view/edit/admin ClusterRoles.
DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "garbage-collector-controller",
    "namespace-controller",
    "job-controller",
    "deployment-controller",
    "replicaset-controller",
    "serviceaccount-controller",
    "clusterrole-aggregation-controller",
)

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"

# How long one component may take to become healthy, and how long stop()
# waits after SIGTERM before SIGKILL.
DEFAULT_START_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 15.0
# A free port can be taken by someone else between picking and binding it.
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """A component failed to start; the message carries the tail of its log."""


def default_cache_root() -> Path:
    root = os.environ.get("MLOPS_ENVTEST_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mlops-operator" / "envtest"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def k8s_version_from_gomod(root: Path | None = None) -> str:
    """The Kubernetes version pinned in hack/envtest/go.mod (e.g. ``v1.36.3``)."""
    gomod = (root or repo_root()) / "hack" / "envtest" / "go.mod"
    for line in gomod.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes" and parts[1].startswith("v"):
            return parts[1]
    raise ControlPlaneError(f"no k8s.io/kubernetes requirement in {gomod}")


BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")


def default_bin_dir() -> Path:
    """``$MLOPS_ENVTEST_BIN`` or the cache directory build.sh writes to."""
    env = os.environ.get("MLOPS_ENVTEST_BIN")
    if env:
        return Path(env)
    return default_cache_root() / k8s_version_from_gomod()


def missing_binaries(bin_dir: Path) -> list[str]:
    return [b for b in BINARIES if not os.access(bin_dir / b, os.X_OK)]


def ensure_binaries(bin_dir: Path | None = None, *, build_timeout: float = 7200.0) -> Path:
    """Return a directory holding the three binaries, building them if needed.

    ``hack/envtest/build.sh`` is only run when something is missing and
    ``MLOPS_ENVTEST_BIN`` is not set (a directory given explicitly is never
    built into).
    """
    explicit = bin_dir is not None or bool(os.environ.get("MLOPS_ENVTEST_BIN"))
    bin_dir = Path(bin_dir) if bin_dir is not None else default_bin_dir()
    missing = missing_binaries(bin_dir)
    if not missing:
        return bin_dir
    if explicit:
        raise ControlPlaneError(
            f"{', '.join(missing)} not found in {bin_dir}; run `bash hack/envtest/build.sh` "
            "and point MLOPS_ENVTEST_BIN at the directory it prints"
        )
    script = repo_root() / "hack" / "envtest" / "build.sh"
    proc = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=None,  # build progress goes straight to the terminal
        text=True,
        timeout=build_timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(f"{script} failed with exit code {proc.returncode}")
    built = Path(lines[-1])
    missing = missing_binaries(built)
    if missing:
        raise ControlPlaneError(f"{script} finished but {', '.join(missing)} missing in {built}")
    return built


# --------------------------------------------------------------------------
# Ports and processes


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports on 127.0.0.1 that were free a moment ago."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the child when the process that started it dies.

    Keeps etcd and friends from outliving a test run that was SIGKILLed.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class Component:
    """One child process with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"+ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches only us, and we
                # stop the components in order.
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def failure(self, why: str) -> ControlPlaneError:
        return ControlPlaneError(
            f"{self.name} {why}; last lines of {self.log_path}:\n{self.tail()}"
        )

    def address_in_use(self) -> bool:
        return "address already in use" in self.tail(200).lower()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=timeout)


# --------------------------------------------------------------------------
# Certificates (openssl CLI)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


class Certs:
    """A throw-away PKI: CA, apiserver serving cert, admin client cert, SA keys."""

    def __init__(self, directory: Path, days: int = 7, *, ip_sans: Sequence[str] = ()):
        self.dir = directory
        self.days = str(days)
        # Addresses besides 127.0.0.1 the API server answers on (e.g. a bridge pods reach).
        self.ip_sans = tuple(ip_sans)
        self.ca_crt = directory / "ca.crt"
        self.ca_key = directory / "ca.key"
        self.serving_crt = directory / "apiserver.crt"
        self.serving_key = directory / "apiserver.key"
        self.admin_crt = directory / "admin.crt"
        self.admin_key = directory / "admin.key"
        self.front_proxy_crt = directory / "front-proxy-client.crt"
        self.front_proxy_key = directory / "front-proxy-client.key"
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"

    def generate(self) -> "Certs":
        if shutil.which("openssl") is None:
            raise ControlPlaneError("the openssl command is needed to generate certificates")
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        _openssl(
            "req", "-x509", "-new", *ec, "-days", self.days,
            "-keyout", self.ca_key.name, "-out", self.ca_crt.name,
            "-subj", "/CN=mlops-envtest-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            cwd=d,
        )
        sans = ",".join(
            [
                f"IP:{HOST}",
                *(f"IP:{ip}" for ip in self.ip_sans if ip != HOST),
                "IP:10.0.0.1",  # first address of the service range: the kubernetes Service
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
            ]
        )
        self._leaf(
            "apiserver", "/CN=kube-apiserver",
            [f"subjectAltName={sans}", "extendedKeyUsage=serverAuth"],
        )
        self._leaf(
            "admin", "/O=system:masters/CN=admin", ["extendedKeyUsage=clientAuth"],
        )
        # The identity the API server uses towards aggregated API servers;
        # configuring it also publishes the request-header CA that
        # kube-controller-manager's delegated authentication looks for.
        self._leaf(
            "front-proxy-client", "/CN=front-proxy-client", ["extendedKeyUsage=clientAuth"],
        )
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", self.sa_key.name, cwd=d)
        _openssl("ec", "-in", self.sa_key.name, "-pubout", "-out", self.sa_pub.name, cwd=d)
        for key in d.glob("*.key"):
            key.chmod(0o600)
        return self

    def _leaf(self, name: str, subject: str, extensions: list[str]) -> None:
        d = self.dir
        ext = d / f"{name}.ext"
        ext.write_text(
            "\n".join(
                [
                    "basicConstraints=critical,CA:FALSE",
                    "keyUsage=critical,digitalSignature,keyEncipherment",
                    *extensions,
                ]
            )
            + "\n"
        )
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", self.ca_crt.name, "-CAkey", self.ca_key.name,
            "-CAcreateserial", "-days", self.days, "-sha256", "-extfile", ext.name,
            "-out", f"{name}.crt",
            cwd=d,
        )


# --------------------------------------------------------------------------
# The control plane


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

    Attributes available after ``start()``: ``kubeconfig`` (path of an admin
    kubeconfig), ``server`` (https URL), ``certs``, ``work_dir``, ``log_dir``.
    """

    def __init__(
        self,
        bin_dir: str | os.PathLike[str] | None = None,
        *,
        controllers: Iterable[str] = DEFAULT_CONTROLLERS,
        apiserver_args: Sequence[str] = (),
        controller_manager_args: Sequence[str] = (),
        log_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        keep_work_dir: bool = False,
        bind_address: str = HOST,
        service_account_tokens: bool = False,
        endpoint_reconciler: str = "none",
    ):
        """The last three are for pods that talk to the API server (tests/cluster).

        ``bind_address``: where the API server listens and what it advertises
        as the ``kubernetes`` Service's endpoint (a local address pods reach);
        ``service_account_tokens``: the ServiceAccount admission plugin, which
        gives pods their token volume; ``endpoint_reconciler``: ``lease`` to
        publish that endpoint (a loopback address is not a valid one).
        """
        self.bin_dir = Path(bin_dir) if bin_dir is not None else default_bin_dir()
        self.controllers = tuple(controllers)
        self.extra_apiserver_args = list(apiserver_args)
        self.extra_controller_manager_args = list(controller_manager_args)
        self._log_dir_arg = Path(log_dir) if log_dir is not None else None
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.keep_work_dir = keep_work_dir
        self.bind_address = bind_address
        self.service_account_tokens = service_account_tokens
        self.endpoint_reconciler = endpoint_reconciler

        self.work_dir: Path | None = None
        self.log_dir: Path | None = None
        self.certs: Certs | None = None
        self.kubeconfig: Path | None = None
        self.server: str | None = None
        self.etcd_url: str | None = None
        self.components: list[Component] = []

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "ControlPlane":
        if self.work_dir is not None:
            raise ControlPlaneError("control plane already started")
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise ControlPlaneError(
                f"{', '.join(missing)} not found in {self.bin_dir}; run `bash hack/envtest/build.sh`"
            )
        self.work_dir = Path(tempfile.mkdtemp(prefix="mlops-envtest-"))
        self.log_dir = self._log_dir_arg or (self.work_dir / "logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.certs = Certs(self.work_dir / "pki", ip_sans=[self.bind_address]).generate()
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop all components (reverse order) and remove the temp dir. Idempotent."""
        for component in reversed(self.components):
            try:
                component.stop(self.stop_timeout)
            except Exception as exc:  # keep tearing down the rest
                print(f"envtest: stopping {component.name}: {exc}", file=sys.stderr)
        self.components = []
        if self.work_dir is not None and not self.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        self.work_dir = None

    def logs(self) -> dict[str, str]:
        """Name -> log tail of every component, for test failure reports."""
        return {c.name: c.tail() for c in self.components}

    # -- components --------------------------------------------------------

    def _start_with_port_retry(self, start_once) -> None:
        """Run ``start_once()``; if the component lost a port race, try new ports."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            component = start_once()
            try:
                return self._await(component)
            except ControlPlaneError:
                component.stop(self.stop_timeout)
                self.components.remove(component)
                if attempt < PORT_ATTEMPTS and component.address_in_use():
                    continue
                raise

    def _launch(self, name: str, argv: Sequence[str]) -> Component:
        assert self.log_dir is not None
        component = Component(name, argv, self.log_dir / f"{name}.log")
        self.components.append(component)
        component.start()
        return component

    def _await(self, component: Component) -> None:
        check = self._readiness[component.name]
        deadline = time.monotonic() + self.start_timeout
        last_error = ""
        while time.monotonic() < deadline:
            if not component.running():
                code = component.proc.returncode if component.proc else None
                raise component.failure(f"exited with code {code} while starting")
            try:
                if check():
                    return
            except Exception as exc:  # not up yet
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)
        raise component.failure(
            f"not ready after {self.start_timeout:.0f}s (last probe error: {last_error or 'none'})"
        )

    def _start_etcd(self) -> None:
        assert self.work_dir is not None

        def start_once() -> Component:
            client, peer = free_ports(2)
            self.etcd_url = f"http://{HOST}:{client}"
            data_dir = self.work_dir / "etcd"
            shutil.rmtree(data_dir, ignore_errors=True)
            peer_url = f"http://{HOST}:{peer}"
            return self._launch(
                "etcd",
                [
                    str(self.bin_dir / "etcd"),
                    "--name=envtest",
                    f"--data-dir={data_dir}",
                    f"--listen-client-urls={self.etcd_url}",
                    f"--advertise-client-urls={self.etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=envtest={peer_url}",
                    "--initial-cluster-state=new",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
            )

        self._start_with_port_retry(start_once)

    def _start_apiserver(self) -> None:
        assert self.work_dir is not None and self.certs is not None
        certs = self.certs

        def start_once() -> Component:
            (port,) = free_ports(1)
            self.server = f"https://{self.bind_address}:{port}"
            return self._launch(
                "kube-apiserver",
                [
                    str(self.bin_dir / "kube-apiserver"),
                    f"--bind-address={self.bind_address}",
                    f"--advertise-address={self.bind_address}",
                    f"--secure-port={port}",
                    f"--etcd-servers={self.etcd_url}",
                    f"--cert-dir={self.work_dir / 'apiserver'}",
                    f"--client-ca-file={certs.ca_crt}",
                    f"--tls-cert-file={certs.serving_crt}",
                    f"--tls-private-key-file={certs.serving_key}",
                    f"--service-account-key-file={certs.sa_pub}",
                    f"--service-account-signing-key-file={certs.sa_key}",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--requestheader-client-ca-file={certs.ca_crt}",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={certs.front_proxy_crt}",
                    f"--proxy-client-key-file={certs.front_proxy_key}",
                    "--authorization-mode=RBAC",
                    *([] if self.service_account_tokens else ["--disable-admission-plugins=ServiceAccount"]),
                    # As on OpenShift: setting blockOwnerDeletion needs update on
                    # the owner's finalizers, which the chart's RBAC grants.
                    "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    "--allow-privileged=true",
                    # A loopback address is not a valid endpoint for the
                    # "kubernetes" Service; only pods need it.
                    f"--endpoint-reconciler-type={self.endpoint_reconciler}",
                    *self.extra_apiserver_args,
                ],
            )

        self._start_with_port_retry(start_once)

    def _start_controller_manager(self) -> None:
        assert self.certs is not None and self.kubeconfig is not None
        certs = self.certs
        kubeconfig = str(self.kubeconfig)

        def start_once() -> Component:
            (port,) = free_ports(1)
            self._kcm_port = port
            return self._launch(
                "kube-controller-manager",
                [
                    str(self.bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    f"--bind-address={HOST}",
                    f"--secure-port={port}",
                    f"--cert-dir={self.work_dir / 'controller-manager'}",
                    f"--controllers={','.join(self.controllers)}",
                    f"--service-account-private-key-file={certs.sa_key}",
                    f"--root-ca-file={certs.ca_crt}",
                    "--use-service-account-credentials=false",
                    "--leader-elect=false",
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    *self.extra_controller_manager_args,
                ],
            )

        self._start_with_port_retry(start_once)

    # -- readiness probes ---------------------------------------------------

    @property
    def _readiness(self):
        return {
            "etcd": self._etcd_healthy,
            "kube-apiserver": self._apiserver_ready,
            "kube-controller-manager": self._controller_manager_ready,
        }

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
            return json.load(resp).get("health") == "true"

    def admin_ssl_context(self) -> ssl.SSLContext:
        assert self.certs is not None
        ctx = ssl.create_default_context(cafile=str(self.certs.ca_crt))
        ctx.load_cert_chain(str(self.certs.admin_crt), str(self.certs.admin_key))
        return ctx

    def request(self, path: str, *, timeout: float = 5) -> tuple[int, bytes]:
        """GET ``path`` from the API server as admin; returns (status, body)."""
        assert self.server is not None
        try:
            with urllib.request.urlopen(
                f"{self.server}{path}", timeout=timeout, context=self.admin_ssl_context()
            ) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _apiserver_ready(self) -> bool:
        status, _ = self.request("/readyz")
        return status == 200

    def _controller_manager_ready(self) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # its self-signed serving cert
        with urllib.request.urlopen(f"https://{HOST}:{self._kcm_port}/healthz", timeout=2, context=ctx) as resp:
            if resp.status != 200:
                return False
        # The controllers are really working once the serviceaccount
        # controller has filled in the "default" ServiceAccount.
        if "serviceaccount-controller" in self.controllers:
            status, _ = self.request("/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200
        return True

    # -- clients -----------------------------------------------------------

    def _write_kubeconfig(self) -> None:
        assert self.work_dir is not None and self.certs is not None
        certs = self.certs
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "envtest",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(certs.ca_crt),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": _b64(certs.admin_crt),
                        "client-key-data": _b64(certs.admin_key),
                    },
                }
            ],
            "contexts": [
                {"name": "envtest", "context": {"cluster": "envtest", "user": "admin", "namespace": "default"}}
            ],
            "current-context": "envtest",
        }
        path = self.work_dir / "kubeconfig"
        # JSON is valid YAML; no need for a YAML library here.
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        self.kubeconfig = path

    def api_client(self):
        """A new ``kubernetes.client.ApiClient`` authenticated as admin."""
        from kubernetes import config

        assert self.kubeconfig is not None, "control plane not started"
        return config.new_client_from_config(config_file=str(self.kubeconfig))


def wait_for(predicate, *, timeout: float = 60.0, interval: float = 0.5, what: str = "condition"):
    """Poll ``predicate()`` until it returns something truthy; return that.

    Raises ``TimeoutError`` naming ``what`` and the last value after
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------
# CRDs


def _crd_documents(crd_dir: Path) -> list[dict[str, Any]]:
    import yaml

    docs = []
    files = sorted(p for p in crd_dir.glob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        with open(path) as fh:
            for doc in yaml.safe_load_all(fh):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    docs.append(doc)
    return docs


def install_crds(
    kubeconfig: str | os.PathLike[str],
    crd_dir: str | os.PathLike[str],
    *,
    timeout: float = 60.0,
) -> list[str]:
    """Create or update every CRD in ``crd_dir/*.yaml`` and wait until usable.

    Waits (at most ``timeout`` seconds overall) until each CRD has the
    Established condition and every served version lists its plural in
    discovery. Returns the CRD names. A missing or empty directory installs
    nothing.
    """
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    crd_dir = Path(crd_dir)
    if not crd_dir.is_dir():
        return []
    docs = _crd_documents(crd_dir)
    if not docs:
        return []

    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        ext = client.ApiextensionsV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        installed: list[dict[str, Any]] = []
        errors: list[str] = []
        # Try every CRD so that one bad file does not hide the others.
        for doc in docs:
            name = doc["metadata"]["name"]
            try:
                _create_or_replace_crd(ext, doc)
            except ApiException as err:
                errors.append(f"CRD {name} rejected: {_status_message(err)}")
            else:
                installed.append(doc)

        deadline = time.monotonic() + timeout
        for doc in installed:
            name = doc["metadata"]["name"]
            group = doc["spec"]["group"]
            plural = doc["spec"]["names"]["plural"]
            versions = [v["name"] for v in doc["spec"]["versions"] if v.get("served", True)]
            while True:
                problem = _crd_problem(ext, custom, name, group, plural, versions)
                if problem is None:
                    break
                if time.monotonic() > deadline:
                    errors.append(f"CRD {name} not usable after {timeout:.0f}s: {problem}")
                    break
                time.sleep(0.2)
        if errors:
            raise ControlPlaneError("\n".join(errors))
        return [doc["metadata"]["name"] for doc in installed]
    finally:
        api_client.close()


def _create_or_replace_crd(ext, doc: dict[str, Any]) -> None:
    from kubernetes.client.rest import ApiException

    name = doc["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(doc)
        return
    except ApiException as err:
        if err.status != 409:
            raise
    current = ext.read_custom_resource_definition(name)
    doc = dict(doc, metadata=dict(doc["metadata"], resourceVersion=current.metadata.resource_version))
    ext.replace_custom_resource_definition(name, doc)


def _status_message(err: Exception) -> str:
    """The ``message`` of a Kubernetes Status error body, else the error text."""
    body = getattr(err, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return str(body)
    return str(err)


def _crd_problem(ext, custom, name: str, group: str, plural: str, versions: list[str]) -> str | None:
    """None when the CRD is Established and served, else what is missing."""
    from kubernetes.client.rest import ApiException

    crd = ext.read_custom_resource_definition(name)
    conditions = {c.type: c for c in (crd.status.conditions or [])} if crd.status else {}
    for ctype in ("NamesAccepted", "Established"):
        cond = conditions.get(ctype)
        if cond is None or cond.status != "True":
            detail = f" ({cond.reason}: {cond.message})" if cond is not None else ""
            return f"condition {ctype} not True{detail}"
    for version in versions:
        try:
            resources = custom.get_api_resources(group, version)
        except ApiException as err:
            return f"{group}/{version} not in discovery yet ({err.status})"
        if resources is None or plural not in {r.name for r in resources.resources}:
            return f"{plural} not listed in {group}/{version} discovery yet"
    return None


# --------------------------------------------------------------------------
# Command line


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.envtest.controlplane",
        description="Run the integration-test Kubernetes control plane by hand.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start it and wait until Ctrl-C")
    up.add_argument("--bin-dir", help="directory with etcd, kube-apiserver, kube-controller-manager "
                    "(default: $MLOPS_ENVTEST_BIN or the build cache; built if missing)")
    up.add_argument("--crds", default=None,
                    help="also install the CRDs in this directory (e.g. crds/)")
    up.add_argument("--log-dir", default=None, help="keep component logs here")
    up.add_argument("--max-hours", type=float, default=12.0,
                    help="stop by itself after this long (default 12)")
    args = parser.parse_args(argv)

    bin_dir = ensure_binaries(Path(args.bin_dir) if args.bin_dir else None)
    plane = ControlPlane(bin_dir, log_dir=args.log_dir)
    # Turn SIGTERM into a normal exit so the finally-block tears down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.monotonic()
    try:
        plane.start()
        if args.crds:
            names = install_crds(plane.kubeconfig, args.crds)
            print(f"installed {len(names)} CRDs: {', '.join(names) or '-'}")
        print(f"control plane up in {time.monotonic() - started:.1f}s at {plane.server}")
        print(f"logs: {plane.log_dir}")
        print(f"kubeconfig: {plane.kubeconfig}")
        print(f"export KUBECONFIG={plane.kubeconfig}")
        print("Ctrl-C to stop.", flush=True)
        until = time.monotonic() + args.max_hours * 3600
        while all(c.running() for c in plane.components):
            if time.monotonic() > until:
                print(f"--max-hours {args.max_hours} reached", file=sys.stderr)
                return 0
            time.sleep(1)
        dead = [c for c in plane.components if not c.running()]
        for c in dead:
            print(f"{c.name} exited; last lines of its log:\n{c.tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        plane.stop()
        print("control plane stopped", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(_main())
