"""The one-way dependency rule (docs/architecture.md), checked by walking imports."""

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
}


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


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(layer: str) -> None:
    offences = []
    for path in sorted((PKG / layer).rglob("*.py")):
        for name in _imports(path):
            for banned in FORBIDDEN[layer]:
                if name == banned or name.startswith(banned + "."):
                    offences.append(f"{path.relative_to(PKG)} imports {name}")
    assert not offences, "\n".join(offences)


def test_the_walk_sees_relative_imports() -> None:
    """Guard the guard: the walker resolves `from ..k8s import x` to mlops_operator.k8s."""
    sample = PKG / "api" / "kinds.py"
    assert "mlops_operator.api.base" in _imports(sample)
