"""A cgroup for the kubelet's pods inside the test run's own cgroup, never at a hierarchy's root.

The kubelet's ``cgroupRoot`` must exist in every cgroup v1 hierarchy before
it starts. ``PodCgroupRoot`` creates ``<memory cgroup of this process>/<leaf>``
in each of them (copying cpuset.cpus/mems down, which a new cpuset cgroup
starts without), and removes everything below it and the directories it
created, deepest first.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def own_cgroup(controller: str = "memory") -> str:
    """This process's cgroup path in the hierarchy of ``controller`` (v1), e.g. ``/a/b``."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise RuntimeError(f"no cgroup v1 {controller} hierarchy in /proc/self/cgroup")


def v1_hierarchies() -> list[Path]:
    """Mount points of the cgroup hierarchies: v1 (cpu, memory, name=systemd, ...) and, on a
    hybrid host, the unified one, where runc also makes the pods' cgroups."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            found.append(Path(left.split()[4]))
    return sorted(set(found))


class PodCgroupRoot:
    def __init__(self, leaf: str):
        parent = own_cgroup("memory").rstrip("/")
        self.path = f"{parent}/{leaf}"  # the kubelet's cgroupRoot
        self.leaf = leaf
        self._created: list[Path] = []

    def create(self) -> "PodCgroupRoot":
        for hierarchy in v1_hierarchies():
            current = hierarchy
            for part in self.path.strip("/").split("/"):
                child = current / part
                if not child.exists():
                    child.mkdir()
                    self._created.append(child)
                    for name in ("cpuset.cpus", "cpuset.mems"):
                        value = (current / name).read_text().strip() if (current / name).exists() else ""
                        if value and (child / name).exists():
                            (child / name).write_text(value)
                current = child
        return self

    def remove(self) -> list[str]:
        """Remove the pods' cgroups and ours; return those that could not be removed."""
        failed = []
        for created in reversed(self._created):
            if not created.exists():
                continue
            # Everything the kubelet made below (kubepods, pod<uid>, containers), deepest first.
            below = sorted((p for p in created.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for directory in [*below, created]:
                try:
                    directory.rmdir()
                except OSError as err:
                    failed.append(f"{directory}: {err.strerror}")
        self._created = []
        return failed

    def exists_anywhere(self) -> list[str]:
        return [str(h / self.path.strip("/")) for h in v1_hierarchies() if (h / self.path.strip("/")).exists()]


