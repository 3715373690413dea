"""The chart's Dask switch: daskjobs RBAC and the operator's settings only when ``dask.enabled``."""

from __future__ import annotations

from pathlib import Path

from mlops_operator.k8s.config import settings_from_env
from tests.chart.test_chart import of_kind, one, render


def _daskjob_rules(objs: list) -> list:
    return [r for role in of_kind(objs, "ClusterRole") + of_kind(objs, "Role") for r in role.get("rules") or []
            if "kubernetes.dask.org" in r.get("apiGroups", [])]


def _operator_env(objs: list) -> dict[str, str]:
    deployment = one(objs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env") or [] if "value" in e}


def test_dask_off_by_default_no_daskjob_rbac(helm, tmp_path: Path) -> None:
    objs = render(helm, {}, tmp_path)
    assert _daskjob_rules(objs) == []
    assert settings_from_env(_operator_env(objs)).dask_jobs is False


def test_dask_enabled_grants_daskjobs_and_reaches_the_settings(helm, tmp_path: Path) -> None:
    objs = render(helm, {"dask": {"enabled": True, "image": "registry.example/mlops:1.0-dask"},
                         "watchNamespaces": ["team-a"]}, tmp_path)
    rules = _daskjob_rules(objs)
    assert rules and all(r["resources"] == ["daskjobs"] for r in rules)
    assert set(rules[0]["verbs"]) == {"get", "list", "watch", "create", "delete"}
    settings = settings_from_env(_operator_env(objs))
    assert settings.dask_jobs is True and settings.dask_image == "registry.example/mlops:1.0-dask"
