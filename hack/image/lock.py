"""Write hack/image/constraints.txt: the exact versions the image installs.

    .venv/bin/python hack/image/lock.py          # rewrite it from this environment
    .venv/bin/python hack/image/lock.py --check  # exit 1 if it misses a dependency or breaks a range

The pins are the versions installed in the running environment of every
package the project needs at run time (its dependencies and those of its
``dask`` extra, transitively), so the image gets what the tests ran with, the
same on every build, with or without ``--build-arg EXTRAS=dask``.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
CONSTRAINTS = HERE / "constraints.txt"
HEADER = "# The versions the image installs (hack/image/lock.py writes this file from the test environment).\n"
IMAGE_EXTRAS = ("dask",)
"""The project's extras an image may be built with (the Dockerfile's EXTRAS): their packages are pinned too."""


def _applies(req: Requirement, extras: tuple[str, ...]) -> bool:
    """Whether ``req`` is needed by a package installed with ``extras`` on this platform."""
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in ("", *extras))


def runtime_requirements(dist: str = "mlops-operator", extras: tuple[str, ...] = IMAGE_EXTRAS) -> dict[str, Requirement]:
    """Every package ``dist`` (with ``extras``) needs at run time, by canonical name, with the first requirement naming it."""
    found: dict[str, Requirement] = {}
    todo = [(dist, extras)]
    seen = set()
    while todo:
        name, wanted = todo.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if not _applies(req, wanted):
                continue
            key = canonicalize_name(req.name)
            if key == canonicalize_name(dist):
                # An extra naming the project itself (``mlops-operator[dask]``): its extras, not a pin.
                todo.append((dist, tuple(sorted(req.extras))))
                continue
            found.setdefault(key, req)
            todo.append((req.name, tuple(sorted(req.extras))))
    return found


def pins() -> dict[str, str]:
    return {name: metadata.version(name) for name in sorted(runtime_requirements())}


def read(path: Path = CONSTRAINTS) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s#]+)", line.strip())
        if m:
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def problems(pinned: dict[str, str]) -> list[str]:
    """What a constraints file gets wrong against the project's own requirements."""
    out = []
    for name, req in runtime_requirements().items():
        if name not in pinned:
            out.append(f"{name} is needed at run time but not pinned")
        elif not req.specifier.contains(pinned[name], prereleases=True):
            out.append(f"{name}=={pinned[name]} is outside {req.name}{req.specifier}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    if args.check:
        found = problems(read())
        for line in found:
            print(f"hack/image/constraints.txt: {line}", file=sys.stderr)
        return 1 if found else 0
    CONSTRAINTS.write_text(HEADER + "".join(f"{n}=={v}\n" for n, v in pins().items()))
    print(f"wrote {CONSTRAINTS.name}: {len(pins())} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
