"""A memory cgroup of the test's own making: a real, kernel-enforced memory limit for a process tree.

What a pod's memory limit is on a node (the kubelet writes the same files), here for local processes: the
kernel counts every byte the processes use and, past the limit, its OOM killer kills one of them, which is what
the kubelet then reports as ``OOMKilled``. The group is made inside this process's own memory cgroup (v1 or v2),
never at a hierarchy's root, and removed afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CGROUP_FS = Path("/sys/fs/cgroup")


class MemoryCgroup:
    def __init__(self, path: Path, v2: bool) -> None:
        self.path = path
        self.v2 = v2

    def set_limit(self, limit: int) -> None:
        (self.path / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(str(limit))

    def run(self, command: Sequence[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
        """Run ``command`` with itself and every process it starts inside the group."""
        procs = str(self.path / "cgroup.procs")

        def join() -> None:  # in the child, before exec: its children inherit the group
            with open(procs, "w") as fh:
                fh.write(str(os.getpid()))

        return subprocess.run(list(command), preexec_fn=join, timeout=timeout, **kwargs)

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer killed in this group."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        raise RuntimeError(f"this kernel does not count OOM kills in {name}")

    def peak(self) -> int:
        """The group's highest memory use so far, in bytes (its processes together)."""
        return int((self.path / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")).read_text())


def _own_memory_cgroup() -> tuple[Path, bool] | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return CGROUP_FS / "memory" / path.lstrip("/"), False
    unified = next((line for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::")), None)
    if unified and "memory" in (CGROUP_FS / "cgroup.controllers").read_text().split():
        return CGROUP_FS / unified[3:].lstrip("/"), True
    return None


@contextmanager
def memory_cgroup(limit: int) -> Iterator[MemoryCgroup]:
    """A fresh memory cgroup limited to ``limit`` bytes; raises OSError where none can be made."""
    found = _own_memory_cgroup()
    if found is None:
        raise OSError("no memory cgroup controller here")
    parent, v2 = found
    group = MemoryCgroup(parent / f"mlops-test-{uuid.uuid4().hex[:8]}", v2)
    group.path.mkdir()
    try:
        group.set_limit(limit)
        yield group
    finally:
        deadline = time.monotonic() + 30  # its processes have exited; the kernel frees the group shortly after
        while True:
            try:
                group.path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
