"""The one-way dependency rule (docs/architecture.md), checked by walking imports and calls.

Every module of the package is in some row: a layer (a folder) or a
top-level module. controllers/ also must not reach for a clock, a process, a
socket or an HTTP client of its own: its reconcile loops do I/O only through
the Cluster and Sensors they are given, and time is an argument.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "operator" / "mlops_operator"

FORBIDDEN = {
    "api": {"kopf", "kubernetes", "mlops_operator.k8s", "mlops_operator.local", "mlops_operator.runtime",
            "mlops_operator.controllers", "mlops_operator.drift", "mlops_operator.store", "sklearn"},
    "controllers": {"kopf", "kubernetes", "mlops_operator.k8s", "mlops_operator.local", "mlops_operator.runtime", "sklearn"},
    "drift": {"kopf", "kubernetes", "sklearn", "pandas", "mlops_operator.k8s", "mlops_operator.local",
              "mlops_operator.controllers", "mlops_operator.runtime"},
    "runtime": {"kopf", "kubernetes", "mlops_operator.k8s", "mlops_operator.local", "mlops_operator.controllers"},
    "store": {"kopf", "kubernetes", "mlops_operator.k8s", "mlops_operator.local", "mlops_operator.controllers"},
    "k8s": {"mlops_operator.local"},
    "local": {"kopf", "kubernetes", "mlops_operator.k8s"},
    "manifests.py": {"kopf", "kubernetes", "mlops_operator.k8s", "mlops_operator.local", "mlops_operator.runtime",
                     "mlops_operator.controllers", "mlops_operator.store"},
    "sensors.py": {"kopf", "kubernetes", "mlops_operator.k8s", "mlops_operator.local", "mlops_operator.store"},
    "runs.py": {"kopf", "kubernetes", "mlops_operator.k8s", "mlops_operator.local", "mlops_operator.controllers",
                "mlops_operator.runtime"},
    "cli.py": set(),
    "__init__.py": {"mlops_operator.k8s", "mlops_operator.local", "mlops_operator.runtime", "mlops_operator.controllers"},
}
"""Layer (folder) or top-level module -> what it must not import. Nothing imports the CLI (below)."""

NO_IO_IN_CONTROLLERS = {"time", "subprocess", "socket", "threading", "multiprocessing", "os", "urllib", "http",
                        "requests", "httpx", "aiohttp", "kopf", "kubernetes"}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}
DEFAULT_CLOCK = PKG / "controllers" / "reconcile" / "__init__.py"
"""The one place controllers/ reads the clock: ``utcnow``, the reconcile loops' default, which callers replace."""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    layer_pkg = ["mlops_operator", *path.relative_to(PKG).parts[:-1]]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = layer_pkg[: len(layer_pkg) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                out.add(module)
                if not node.module:
                    out.update(f"{module}.{a.name}" for a in node.names)
            elif node.module:
                out.add(node.module)
    return out


def _files(layer: str) -> list[Path]:
    return [PKG / layer] if layer.endswith(".py") else sorted((PKG / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(layer: str) -> None:
    offences = []
    for path in _files(layer):
        for name in _imports(path):
            for banned in FORBIDDEN[layer] | {"mlops_operator.cli"}:
                if name == banned or name.startswith(banned + "."):
                    offences.append(f"{path.relative_to(PKG)} imports {name}")
    assert not offences, "\n".join(offences)


def test_every_module_is_covered_by_a_rule() -> None:
    rows = {p for layer in FORBIDDEN for p in _files(layer)}
    assert sorted(str(p.relative_to(PKG)) for p in PKG.rglob("*.py") if p not in rows) == []


def test_controllers_have_no_clock_process_socket_or_http_of_their_own() -> None:
    offences = []
    for path in _files("controllers"):
        for name in _imports(path):
            if name.split(".")[0] in NO_IO_IN_CONTROLLERS:
                offences.append(f"{path.relative_to(PKG)} imports {name}")
        if path == DEFAULT_CLOCK:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in CLOCK_CALLS and isinstance(node.ctx, ast.Load):
                offences.append(f"{path.relative_to(PKG)}:{node.lineno} reads the clock ({node.attr})")
    assert not offences, "\n".join(offences)


def test_the_walk_sees_relative_imports() -> None:
    """Guard the guard: the walker resolves `from ..k8s import x` to mlops_operator.k8s."""
    sample = PKG / "api" / "kinds.py"
    assert "mlops_operator.api.base" in _imports(sample)


def test_the_clock_check_sees_a_clock() -> None:
    """Guard the guard: the default clock itself is what the check would flag anywhere else."""
    tree = ast.parse(DEFAULT_CLOCK.read_text())
    assert any(isinstance(n, ast.Attribute) and n.attr == "now" for n in ast.walk(tree))
