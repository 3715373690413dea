"""Operator-wide state the handlers share: the cluster client, settings, runner.

Set once at start-up (``k8s.main``) or by tests; handlers read it through
:func:`current`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ..controllers.cluster import Cluster
from ..controllers.settings import Settings
from .runner import Runner

MetricsFetcher = Callable[[str], Awaitable[str]]


@dataclass
class Context:
    cluster: Cluster
    settings: Settings
    runner: Runner = field(default_factory=Runner)
    resync_seconds: float = 300.0
    namespaces: tuple[str, ...] = ()
    """Watched namespaces; empty means all (cluster-wide)."""


_current: Context | None = None


def install(ctx: Context) -> Context:
    global _current
    _current = ctx
    return ctx


def current() -> Context:
    if _current is None:
        raise RuntimeError("the operator context is not installed; start through `mlops-operator run`")
    return _current
