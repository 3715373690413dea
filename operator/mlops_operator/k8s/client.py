"""A :class:`~mlops_operator.controllers.cluster.Cluster` over the Kubernetes REST API.

Generic REST calls (one path scheme for every resource) through the official
client's authenticated connection pool, run in worker threads so kopf's event
loop never blocks. Children are written with server-side apply under one field
manager, status with a merge patch of the status subresource only.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from ..controllers.cluster import Conflict, Obj, Refused, Resource, matches_fields, resource_of
from . import metrics
from .cache import CachedReads

FIELD_MANAGER = "mlops-operator"
API_THREADS = 16
"""Threads for blocking API calls: the reconcile workers of all kinds, with room; not the loop's shared pool."""
OWN_WRITES_KEPT = 100_000
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
"""Accept header of a LIST that returns the objects' metadata only."""
log = logging.getLogger(__name__)



class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


REFUSALS = (400, 403, 422)
"""Answers that mean "not this object": invalid, forbidden by admission, over quota. Not 401 (our login) or 5xx."""


def _refused(exc: ApiError, obj: Obj) -> Exception:
    if exc.status in REFUSALS:
        return Refused(obj.get("kind", "object"), obj["metadata"]["name"], exc.status, exc.message)
    return exc


def load_api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    configuration = k8s.Configuration()
    # One connection per worker thread of KubeCluster (the client's default is 5 x cores: 10 here).
    configuration.connection_pool_maxsize = API_THREADS
    try:
        if kubeconfig:
            raise k8s_config.ConfigException("explicit kubeconfig")
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return k8s.ApiClient(configuration)


def path_of(res: Resource, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    base = "/api/v1" if res.api_version == "v1" else f"/apis/{res.api_version}"
    if res.namespaced and namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{res.plural}"
    if name:
        base += f"/{name}"
    if sub:
        base += f"/{sub}"
    return base


class KubeCluster:
    """The real cluster. Safe to share between coroutines."""

    def __init__(self, api: k8s.ApiClient, field_manager: str = FIELD_MANAGER, timeout: float = 30.0):
        self.api = api
        self.field_manager = field_manager
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="mlops-api")
        self._own_writes: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self.cache = CachedReads()
        """Reads answered from kopf's indices once the operator's handlers run (k8s/cache.py)."""
        self._no_field_selectors: set[str] = set()

    def _request(self, method: str, path: str, body: Any = None, content_type: str = "application/json", query: dict | None = None,
                 accept: str = "application/json") -> Obj | None:
        url = path + (f"?{urlencode(query)}" if query else "")
        metrics.API_REQUESTS.labels(method).inc()
        serialized = self.api.param_serialize(
            method=method,
            resource_path=url,
            header_params={"Content-Type": content_type, "Accept": accept},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*serialized, _request_timeout=self.timeout)
            response.read()
        except k8s.exceptions.ApiException as exc:
            raise ApiError(exc.status or 0, _message(exc.body)) from None
        if response.status >= 400:
            raise ApiError(response.status, _message(response.data))
        return json.loads(response.data) if response.data else None

    async def _call(self, *args: Any, **kwargs: Any) -> Obj | None:
        call = functools.partial(self._request, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def wrote(self, res: Resource, namespace: str, name: str, resource_version: str | None) -> bool:
        """Whether this version of the object is our own status write (its watch event is no news to it)."""
        return resource_version is not None and self._own_writes.get((res.kind, namespace, name)) == resource_version

    async def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        answered, obj = self.cache.get(res, namespace, name)
        return obj if answered else await self.read(res, namespace, name)

    async def read(self, res: Resource, namespace: str, name: str) -> Obj | None:
        """The object as the API server has it now (not the cache's view)."""
        try:
            obj = await self._call("GET", path_of(res, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _with_kind(obj, res)

    async def list(self, res: Resource, namespace: str | None, labels: dict[str, str] | None = None,
                   fields: dict[str, str] | None = None) -> list[Obj]:
        cached = self.cache.list(res, namespace, labels, fields)
        if cached is not None:
            return cached
        query = {}
        if labels:
            query["labelSelector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        if fields and res.kind not in self._no_field_selectors:
            query["fieldSelector"] = ",".join(f"{k}={v}" for k, v in sorted(fields.items()))
        try:
            found = await self._call("GET", path_of(res, namespace), query=query or None)
        except ApiError as exc:
            if exc.status != 400 or "fieldSelector" not in query:
                raise
            # A CRD installed before it declared selectableFields (or an API server older than 1.32):
            # list the whole namespace and filter here, from now on.
            log.warning("the API server cannot select %s by %s (%s); filtering in the operator", res.plural, query["fieldSelector"], exc.message)
            self._no_field_selectors.add(res.kind)
            return await self.list(res, namespace, labels, fields)
        items = [_with_kind(item, res) for item in (found or {}).get("items", [])]
        return [o for o in items if matches_fields(o, fields)]

    async def names(self, res: Resource, namespace: str | None, page: int = 500) -> list[tuple[str, str]]:
        """``(namespace, name)`` of every object, read as metadata only and ``page`` at a time.

        What the periodic resync needs: at 10,000 objects a full LIST would
        carry every spec and status (tens of MB) at once; metadata pages keep
        the operator's memory flat.
        """
        out: list[tuple[str, str]] = []
        query: dict[str, Any] = {"limit": page}
        while True:
            found = await self._call("GET", path_of(res, namespace), query=query, accept=METADATA_LIST) or {}
            out += [(i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in found.get("items", [])]
            token = (found.get("metadata") or {}).get("continue")
            if not token:
                return out
            query = {"limit": page, "continue": token}

    async def apply(self, obj: Obj) -> Obj:
        res = resource_of(obj)
        meta = obj["metadata"]
        try:
            out = await self._call(
                "PATCH",
                path_of(res, meta.get("namespace"), meta["name"]),
                body=obj,
                content_type="application/apply-patch+yaml",
                query={"fieldManager": self.field_manager, "force": "true"},
            )
        except ApiError as exc:
            raise _refused(exc, obj) from None
        return _with_kind(out, res)

    async def create(self, obj: Obj) -> Obj:
        res = resource_of(obj)
        meta = obj["metadata"]
        try:
            out = await self._call("POST", path_of(res, meta.get("namespace")), body=obj, query={"fieldManager": self.field_manager})
        except ApiError as exc:
            if exc.status != 409:
                raise _refused(exc, obj) from None
            existing = await self.read(res, meta.get("namespace"), meta["name"])
            if existing is None:
                raise Conflict(f"{res.kind} {meta['name']} exists but cannot be read") from None
            return existing
        return _with_kind(out, res)

    async def delete(self, res: Resource, namespace: str, name: str) -> None:
        try:
            await self._call("DELETE", path_of(res, namespace, name), body={"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def patch_status(self, res: Resource, namespace: str, name: str, status: Obj,
                           resource_version: str | None = None) -> None:
        # A JSON Patch "add" of /status replaces the whole status in one request: unlike a merge
        # patch, fields the new status no longer has (an old run's artifact) really disappear.
        # Setting metadata.resourceVersion in the same patch makes the write conditional: the
        # API server answers 409 when the object moved on since we read it.
        ops: list[Obj] = [{"op": "add", "path": "/status", "value": status}]
        if resource_version:
            ops.insert(0, {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version})
        try:
            out = await self._call(
                "PATCH",
                path_of(res, namespace, name, "status"),
                body=ops,
                content_type="application/json-patch+json",
                query={"fieldManager": self.field_manager},
            )
        except ApiError as exc:
            if exc.status == 404:
                return  # deleted meanwhile: nothing left to describe
            if exc.status == 409:
                raise Conflict(f"{res.kind} {namespace}/{name} changed since it was read") from None
            raise
        written = ((out or {}).get("metadata") or {}).get("resourceVersion")
        if written:
            key = (res.kind, namespace, name)
            self._own_writes[key] = written
            self._own_writes.move_to_end(key)
            while len(self._own_writes) > OWN_WRITES_KEPT:
                self._own_writes.popitem(last=False)

    async def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace", "default")},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace", "default"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._call("POST", f"/api/v1/namespaces/{meta.get('namespace', 'default')}/events", body=event)
        except ApiError as exc:  # an event is a courtesy: never fail a reconcile over it
            log.warning("event %s on %s/%s not recorded: %s", reason, obj["kind"], meta["name"], exc)


def _with_kind(obj: Obj | None, res: Resource) -> Obj:
    obj = obj or {}
    obj.setdefault("apiVersion", res.api_version)
    obj.setdefault("kind", res.kind)
    return obj


def _message(data: Any) -> str:
    try:
        return json.loads(data).get("message", str(data))
    except (TypeError, ValueError, AttributeError):
        return str(data)[:500]
