"""The project's image, built from the Dockerfile on this machine, keeps the promises the chart relies on.

podman runs it with ``--read-only`` (as the chart's readOnlyRootFilesystem)
and no network. The open-files and process limits are set below the
machine's own: raising them needs CAP_SYS_RESOURCE, which some sandboxes
(and unprivileged CI runners) do not grant, and podman's defaults raise them.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.cluster.pieces import Image

UID = "65532"


def podman_run(image: Image, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["podman", "run", "--rm", "--pull=never", "--read-only", "--network=none",
            "--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024"]
    if entrypoint is not None:
        argv.append(f"--entrypoint={entrypoint}")
    return subprocess.run([*argv, image.ref, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def operator_image(images) -> Image:
    return images["operator"]


def test_help_runs_read_only_as_the_unprivileged_uid(operator_image: Image) -> None:
    proc = podman_run(operator_image, "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "train", "serve"):
        assert f"    {command} " in proc.stdout, f"`{command}` missing from --help:\n{proc.stdout}"


def test_default_user_is_65532(operator_image: Image) -> None:
    """No --user given: the image's own USER is what the chart's runAsUser expects."""
    proc = podman_run(operator_image, "-c", "import os; print(os.getuid(), os.getgid())", entrypoint="python3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [UID, UID]


def test_root_filesystem_is_read_only_but_home_is_writable(operator_image: Image) -> None:
    script = (
        "import os, errno\n"
        "try:\n"
        "    open('/opt/mlops/probe', 'w')\n"
        "except OSError as e:\n"
        "    print('venv', errno.errorcode[e.errno])\n"
        "open(os.path.join(os.environ['HOME'], 'probe'), 'w').write('ok')\n"
        "print('home', os.environ['HOME'])\n"
    )
    proc = podman_run(operator_image, "-c", script, entrypoint="python3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["venv EROFS", "home /tmp"]


def test_image_carries_the_dask_extra_at_the_pinned_versions(operator_image: Image) -> None:
    """hack/cluster/image.sh builds with EXTRAS=dask: the DaskJobs' runner, scheduler and workers run this image."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack" / "image"))
    try:
        import lock
    finally:
        sys.path.pop(0)
    pinned = lock.read()
    script = ("import json, importlib.metadata as m, dask.dataframe, distributed, dask_ml.linear_model, xgboost\n"
              "print(json.dumps({d: m.version(d) for d in ('dask', 'distributed', 'dask-ml', 'xgboost-cpu')}))\n")
    proc = podman_run(operator_image, "-c", script, entrypoint="python3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {d: pinned[d] for d in ("dask", "distributed", "dask-ml", "xgboost-cpu")}
