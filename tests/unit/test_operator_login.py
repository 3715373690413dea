"""kopf connects with the credentials the operator's own client loaded (no API server needed:
the login handler only reads the loaded configuration)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlops_operator.controllers.settings import Settings
from mlops_operator.k8s import context
from mlops_operator.k8s.client import KubeCluster, load_api_client
from mlops_operator.k8s.handlers.lifecycle import login


def _kubeconfig(tmp_path: Path, user: dict) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x",
    }))
    return str(path)


def _login_with(kubeconfig: str):  # type: ignore[no-untyped-def]
    previous = context._current
    context.install(context.Context(cluster=KubeCluster(load_api_client(kubeconfig)), settings=Settings()))
    try:
        return login()
    finally:
        context._current = previous


def test_a_token_kubeconfig_logs_kopf_in_with_that_token(tmp_path: Path) -> None:
    """A service account's token (in a pod, or a kubeconfig): kopf must not fall back to anonymous."""
    info = _login_with(_kubeconfig(tmp_path, {"token": "sa-token-123"}))
    assert (info.scheme, info.token) == ("Bearer", "sa-token-123")
    assert info.server == "https://127.0.0.1:6443" and info.insecure is True


def test_no_credentials_means_no_token(tmp_path: Path) -> None:
    info = _login_with(_kubeconfig(tmp_path, {}))
    assert info.token is None and info.scheme is None
