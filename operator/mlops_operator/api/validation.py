"""Offline validation of manifests against the same models the CRDs come from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .. import GROUP
from .kinds import BY_KIND


@dataclass(frozen=True)
class FieldError:
    """One problem in one object: the field path (``spec.data.source``) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


def is_ours(obj: Any) -> bool:
    """Whether a document is an object of the mlops.dev group (any version)."""
    return isinstance(obj, dict) and str(obj.get("apiVersion", "")).split("/")[0] == GROUP


def _union_tag(part: Any) -> bool:
    """A loc part naming a union member or a validator (``int``, ``str``, ``function-after[...]``), not a field.

    Exact names: a prefix test would also drop fields that begin alike (``strategy``, ``interval``).
    """
    return isinstance(part, str) and (part in ("int", "str", "float", "bool") or part.startswith(("function-", "constrained-")))


def _path(loc: tuple[Any, ...], extra: str = "") -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out + extra


def _reason(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{err['msg'].replace('Input should be', 'must be')} (got {err.get('input')!r})"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    for wordy, short in (("Input should be", "must be"), ("String should", "must"), ("List should", "must"), ("Input should", "must")):
        msg = msg.replace(wordy, short)
    if kind in ("string_pattern_mismatch", "string_too_long", "int_parsing", "float_parsing", "string_type", "bool_parsing"):
        msg += f" (got {err.get('input')!r})"
    return msg


def validate_object(obj: dict[str, Any]) -> list[FieldError]:
    """Every problem in one mlops.dev object; an empty list means it is valid."""
    kind_name = obj.get("kind")
    if obj.get("apiVersion") != f"{GROUP}/v1alpha1":
        return [FieldError("apiVersion", f"unsupported version {obj.get('apiVersion')!r}; this operator serves {GROUP}/v1alpha1")]
    kind = BY_KIND.get(str(kind_name))
    if kind is None:
        return [FieldError("kind", f"unknown kind {kind_name!r}; expected one of {', '.join(sorted(BY_KIND))}")]
    errors: list[FieldError] = []
    name = (obj.get("metadata") or {}).get("name")
    if isinstance(name, str) and len(name) > kind.max_name_length:
        errors.append(FieldError("metadata.name", f"must be at most {kind.max_name_length} characters"))
    if isinstance(name, str) and kind.name_pattern and not re.fullmatch(kind.name_pattern, name):
        errors.append(FieldError("metadata.name", f"must be a DNS-1035 label: it names the {kind.kind}'s Service (got {name!r})"))
    try:
        kind.model.model_validate(obj)
    except ValidationError as exc:
        for err in exc.errors():
            field = (err.get("ctx") or {}).get("field", "")
            loc = tuple(p for p in err["loc"] if not _union_tag(p))
            errors.append(FieldError(_path(loc, field), _reason(err)))
    return errors
