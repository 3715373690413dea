"""Pod and container security settings that pass the Pod Security Standards 'restricted' profile.

Every pod the operator builds (training Jobs, serving Deployments) goes
through :func:`restricted_pod_spec`, so the policy lives in one place.
"""

from __future__ import annotations

from typing import Any

RUN_AS_USER = 65532
"""A fixed non-root uid (the distroless 'nonroot' user) so runAsNonRoot holds without image metadata."""


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_spec(containers: list[dict[str, Any]], volumes: list[dict[str, Any]], service_account: str | None,
                        **extra: Any) -> dict[str, Any]:
    """A pod spec whose pod and containers pass 'restricted', with no API token (the workloads need none)."""
    for container in containers:
        container["securityContext"] = container_security_context()
    spec: dict[str, Any] = {
        **extra,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": containers,
        "volumes": volumes,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    return spec
