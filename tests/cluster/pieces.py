"""The cluster's pieces, made by the scripts in hack/cluster/ (cached outside the repository).

Each script is idempotent and returns at once when its cached output is up to
date, so the fixtures call them on every run.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack" / "cluster"
# A cold build on two shared cores: Go binaries ~10-20 min, the image a few minutes.
BUILD_TIMEOUT = 3600.0


class PieceError(RuntimeError):
    """A build script failed; the message names it and its exit code."""


@dataclass(frozen=True)
class Image:
    """An image in podman's store and the same image as an OCI archive."""

    ref: str
    archive: Path


def _run(script: str) -> list[str]:
    """Run ``hack/cluster/<script>``; its progress goes to the terminal, its stdout is returned."""
    proc = subprocess.run(["bash", str(HACK / script)], stdout=subprocess.PIPE, stderr=None,
                          text=True, timeout=BUILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise PieceError(f"hack/cluster/{script} failed with exit code {proc.returncode}")
    return proc.stdout.strip().splitlines()


def install_packages() -> None:
    """containerd, runc, CNI plugins, iptables, podman, mmdebstrap (apt-get, only if missing)."""
    _run("packages.sh")


def node_binaries() -> Path:
    """The directory with kubelet, kube-scheduler and kube-proxy."""
    return Path(_run("build.sh")[-1])


def images() -> dict[str, Image]:
    """``{"operator": Image, "pause": Image}``: the project's image and the sandbox image."""
    found: dict[str, Image] = {}
    for line in _run("image.sh"):
        role, ref, archive = line.split()
        found[role] = Image(ref, Path(archive))
    missing = {"operator", "pause"} - found.keys()
    if missing:
        raise PieceError(f"hack/cluster/image.sh reported no {', '.join(sorted(missing))} image")
    return found
