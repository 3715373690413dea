"""A real kube-apiserver + etcd + kube-controller-manager for the tests.

See ``tests/envtest/controlplane.py`` and docs/development.md.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_CONTROLLERS",
    "ControlPlane",
    "ControlPlaneError",
    "default_bin_dir",
    "ensure_binaries",
    "install_crds",
    "wait_for",
]


def __getattr__(name: str) -> Any:
    # Imported lazily so that `python -m tests.envtest.controlplane` does not
    # load the module twice.
    if name in __all__:
        from . import controlplane

        return getattr(controlplane, name)
    raise AttributeError(name)
