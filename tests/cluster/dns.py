"""The one-node cluster's DNS: Service names resolve in the pods, nothing else does.

The Dask operator hands the runner and the workers
``tcp://<cluster>-scheduler.<namespace>.svc.cluster.local:8786``, so pods need
what CoreDNS gives a real cluster, and no more. ``ClusterDNS`` is a small
responder (dnslib) on the bridge address, port 53, UDP and TCP; the kubelet
names it as the pods' name server (``clusterDNS``). It answers A records of
``<service>.<namespace>.svc.<domain>`` from the API server: the Service's
ClusterIP, or for a headless Service the ready addresses of its
EndpointSlices. Any other name is NXDOMAIN, other record types of a Service
get an empty answer, and nothing is ever forwarded: no query leaves the host.
Answers are cached for a few seconds (``TTL``), a miss for one.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

TTL = 5
"""Seconds an answer is valid, in pods and in the cache here: Services of a test come and go within minutes."""
MISS_TTL = 1.0
"""Seconds a "no such Service" is cached: a scheduler Service is often asked for just before it exists."""
MAX_CACHED = 1000
LOOKUP_TIMEOUT = 2.0

Lookup = Callable[[str], tuple[int, bytes]]
"""GET of an API server path as admin: (HTTP status, body)."""


def service_of(name: str, domain: str = "cluster.local") -> tuple[str, str] | None:
    """``(namespace, service)`` of ``<service>.<namespace>.svc.<domain>``; None for any other name."""
    labels = name.lower().rstrip(".").split(".")
    suffix = ["svc", *domain.lower().split(".")]
    if len(labels) != 2 + len(suffix) or labels[2:] != suffix or not all(labels[:2]):
        return None
    return labels[1], labels[0]


def addresses(service: dict, slices: list[dict]) -> list[str]:
    """A Service's IPv4 addresses: its ClusterIP, or a headless Service's ready endpoints."""
    cluster_ip = service.get("spec", {}).get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        return [cluster_ip]
    found = []
    for piece in slices:
        if piece.get("addressType") != "IPv4":
            continue
        for endpoint in piece.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready", True):
                found += [a for a in endpoint.get("addresses", []) if a not in found]
    return found


class ServiceResolver(BaseResolver):
    """dnslib's resolver: cluster Service names from the API server, NXDOMAIN for the rest."""

    def __init__(self, lookup: Lookup, domain: str = "cluster.local", clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = lambda line: None):
        self.lookup = lookup
        self.domain = domain
        self.clock = clock
        self.log = log
        self._cache: dict[tuple[str, str], tuple[float, list[str] | None]] = {}
        self._lock = threading.Lock()

    def resolve(self, request, handler):
        reply = request.reply()
        question = request.q
        target = service_of(str(question.qname), self.domain)
        try:
            found = self.addresses_of(*target) if target else None
        except Exception as exc:  # the API server down or odd: the pod's resolver may ask again
            self.log(f"lookup of {question.qname} failed: {type(exc).__name__}: {exc}")
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if found is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif question.qtype in (QTYPE.A, QTYPE.ANY):
            for ip in found:
                reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
        return reply

    def addresses_of(self, namespace: str, service: str) -> list[str] | None:
        """The Service's addresses (None: no such Service), from the cache while it is fresh."""
        key = (namespace, service)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self._ask(namespace, service)
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (now + (TTL if found is not None else MISS_TTL), found)
        return found

    def _ask(self, namespace: str, service: str) -> list[str] | None:
        ns, name = urllib.parse.quote(namespace, safe=""), urllib.parse.quote(service, safe="")
        status, body = self.lookup(f"/api/v1/namespaces/{ns}/services/{name}")
        if status == 404:
            return None
        if status != 200:
            raise RuntimeError(f"API server answered {status} for Service {namespace}/{service}")
        obj = json.loads(body)
        slices: list[dict] = []
        if obj.get("spec", {}).get("clusterIP") in (None, "None"):
            selector = urllib.parse.quote(f"kubernetes.io/service-name={service}", safe="")
            status, body = self.lookup(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector={selector}")
            if status != 200:
                raise RuntimeError(f"API server answered {status} for the EndpointSlices of {namespace}/{service}")
            slices = json.loads(body).get("items", [])
        return addresses(obj, slices)


class ClusterDNS:
    """The responder on ``address:port`` (UDP and TCP), started and stopped with the cluster.

    A failed lookup (the API server down) is SERVFAIL, logged to ``log_path``
    with every query and answer.
    """

    def __init__(self, lookup: Lookup, address: str, log_path: Path, *, port: int = 53, domain: str = "cluster.local"):
        self.resolver = ServiceResolver(lookup, domain, log=self._write)
        self.address = address
        self.port = port
        self.log_path = log_path
        self.servers: list[DNSServer] = []
        self._log = None

    def start(self) -> "ClusterDNS":
        self._log = open(self.log_path, "a", buffering=1)
        logger = DNSLogger("-recv,-send,-data", prefix=True, logf=self._write)
        try:
            for tcp in (False, True):
                server = DNSServer(self.resolver, address=self.address, port=self.port, tcp=tcp, logger=logger)
                self.servers.append(server)
                server.start_thread()
        except BaseException:
            self.stop()
            raise
        return self

    def _write(self, line: str) -> None:
        if self._log is not None and not self._log.closed:
            self._log.write(line + "\n")

    def stop(self) -> list[str]:
        """Stop answering and close the sockets; return what is still running (empty when stopped)."""
        for server in self.servers:
            if hasattr(server, "thread"):
                server.stop()  # ends serve_forever (bounded by its 0.5 s poll)
            server.server.server_close()
        left = []
        for server in self.servers:
            if hasattr(server, "thread"):
                server.thread.join(10)
                if server.thread.is_alive():
                    left.append(f"DNS responder thread on {self.address}:{self.port} still running")
        self.servers = []
        if self._log is not None:
            self._log.close()
            self._log = None
        return left

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
