"""The peers' virtualenvs, installed on first use under the bench cache (``~/.cache/mlops-operator/bench/venvs``).

Each peer runs on the scikit-learn its own server ships, not on ours:

* ``kserve``: the ``kserve`` package (its ``Model``/``ModelServer``) with
  scikit-learn ``>=1.5.1,<1.6``, the pin of KServe's sklearn server
  (``python/sklearnserver/pyproject.toml``: ``scikit-learn = "~1.5.1"``).  That
  server (``sklearnserver``) is not published as a package; what stands in for
  it is ``peers/kserve_sklearn.py`` (see its docstring).
* ``mlserver``: ``mlserver`` + ``mlserver-sklearn`` on the same scikit-learn line,
  so both peers load the same ``model.joblib``.
* ``ours-sklearn1.5``: our server's run-time dependencies on that same
  scikit-learn line (the code itself comes from this checkout on PYTHONPATH),
  so ours is measured on the peers' scikit-learn as well as on its default.

A venv is made once; ``.installed`` in it lists what pip installed.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEER_SKLEARN = "scikit-learn>=1.5.1,<1.6"
"""KServe's sklearnserver pins scikit-learn ~1.5.1 (poetry: >=1.5.1,<1.6)."""


def our_requirements() -> list[str]:
    """The run-time dependencies of this checkout (pyproject.toml), scikit-learn left to the caller."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in deps if not d.replace(" ", "").startswith("scikit-learn")]


def packages(env: str) -> list[str]:
    if env == "kserve":
        return ["kserve", PEER_SKLEARN, "joblib"]
    if env == "mlserver":
        return ["mlserver", "mlserver-sklearn", PEER_SKLEARN, "joblib", "uvloop<0.22"]
    if env == "ours-sklearn1.5":
        return [*our_requirements(), PEER_SKLEARN, "joblib"]
    raise ValueError(f"unknown environment {env!r}")


ENVS = ("kserve", "mlserver", "ours-sklearn1.5")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure(cache: Path, env: str, setup: bool = True) -> Path | None:
    """The venv of ``env`` (made and installed on first use), or None when it cannot be had."""
    venv = cache / "venvs" / env
    marker = venv / ".installed"
    if marker.exists():
        return venv
    if not setup:
        return None
    pkgs = packages(env)
    log(f"installing {env} into {venv}: {' '.join(pkgs)} (first use only) ...")
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True, timeout=600)
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pkgs], capture_output=True, text=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        log(f"  {env}: install failed: {exc}")
        return None
    if r.returncode != 0:
        log(f"  {env}: pip install failed:\n{r.stderr[-2000:]}")
        return None
    frozen = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True, timeout=120).stdout
    marker.write_text(frozen)
    return venv


def version_of(venv: Path, dist: str) -> str:
    """The installed version of ``dist`` in ``venv`` (from ``.installed``), or ''."""
    key = dist.lower().replace("_", "-")
    for line in (venv / ".installed").read_text().splitlines():
        name, sep, ver = line.partition("==")
        if sep and name.lower().replace("_", "-") == key:
            return ver
    return ""


if __name__ == "__main__":
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache" / "mlops-operator" / "bench"
    for name in ENVS:
        print(name, ensure(cache, name))
