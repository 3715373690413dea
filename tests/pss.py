"""Pod Security Standards 'restricted' checks, as a reusable test helper.

Mirrors the checks of the Kubernetes PodSecurity admission 'restricted'
profile (latest) for the fields our builders can set, plus our own rule of a
read-only root filesystem. Returns human-readable violations; empty means pass.
"""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def pod_spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec inside a Pod, Job, Deployment, or a bare pod spec."""
    if obj.get("kind") == "Pod":
        return obj["spec"]
    if "template" in obj.get("spec", {}):
        return obj["spec"]["template"]["spec"]
    return obj


def restricted_violations(obj: dict[str, Any]) -> list[str]:
    spec = pod_spec_of(obj)
    pod_sc = spec.get("securityContext") or {}
    out: list[str] = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            out.append(f"{flag} must not be set")
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            out.append(f"volume {vol['name']}: type {sorted(kinds - ALLOWED_VOLUME_TYPES)} not allowed")
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    if not containers:
        out.append("no containers")
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name", "?")
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: may only add NET_BIND_SERVICE")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")) or sc.get("runAsNonRoot") is False:
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort not allowed")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{name}: readOnlyRootFilesystem must be true (project rule)")
    return out
