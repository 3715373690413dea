"""Shared building blocks of the resource models.

Every kind is a pydantic model, and the model is the single source of truth:
the CRD schemas are generated from it (``api.crd``) and ``mlops-operator
validate`` checks manifests with it. Cross-field rules are declared once as
:class:`Rule` objects that carry both the CEL expression the API server runs
and the Python predicate the offline validator runs, so the two cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Callable, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""An RFC 1123 label: what Kubernetes accepts in names, label values and paths."""

QUANTITY = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"
)
"""The resource.Quantity grammar of the Kubernetes OpenAPI schema, without the minus sign and
with whole exponents only: a container's CPU or memory is never negative, and Kubernetes cannot
parse ``1e1.5`` (the OpenAPI pattern lets it through, the API server would refuse the pod)."""

_SUFFIXES = {"n": "1e-9", "u": "1e-6", "m": "1e-3", "": "1", "k": "1e3", "M": "1e6", "G": "1e9", "T": "1e12",
             "P": "1e15", "E": "1e18", "Ki": str(2**10), "Mi": str(2**20), "Gi": str(2**30), "Ti": str(2**40),
             "Pi": str(2**50), "Ei": str(2**60)}


def parse_quantity(value: int | str) -> Decimal:
    """A quantity's value (``500m`` -> 0.5, ``1Gi`` -> 1073741824), to compare requests with limits offline."""
    if isinstance(value, int):
        return Decimal(value)
    m = re.fullmatch(r"\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([eE][+-]?[0-9]+)|[KMGTPE]i|[numkMGTPE])?", value)
    if not m:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = m.group(1), m.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(number + suffix)
    return Decimal(number) * Decimal(_SUFFIXES[suffix])

DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""A Go duration (``90s``, ``30m``, ``1h30m``): the form CEL's ``duration()`` parses."""

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; raises ValueError on anything else."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"not a duration: {text!r} (use forms like 90s, 30m, 1h30m)")
    return sum(float(n) * _DURATION_UNIT[u] for n, u in _DURATION_PART.findall(text))


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, checked by the API server (CEL) and offline (Python).

    ``field`` is the path, relative to the object the rule sits on, that the
    error points at (``.maxReplicas``); ``check`` receives the validated model.
    Transition rules (``oldSelf``) have no Python side: they need the old object.
    """

    cel: str
    message: str
    field: str = ""
    check: Callable[[Any], bool] | None = None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field:
            out["fieldPath"] = self.field
        return out


class ApiModel(BaseModel):
    """Base of every spec/status model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        validate_default=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> "ApiModel":
        for rule in type(self).rules:
            if rule.check is not None and not rule.check(self):
                raise PydanticCustomError("rule", rule.message, {"field": rule.field})
        return self

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def Doc(description: str, default: Any = ..., **kwargs: Any) -> Any:
    """A pydantic Field whose description becomes the ``kubectl explain`` text.

    A nested object with a default gets ``default: {}`` in the CRD, so the API
    server fills in its fields' defaults even when the user leaves it out.
    """
    factory = kwargs.get("default_factory")
    if isinstance(factory, type) and issubclass(factory, BaseModel):
        extra = dict(kwargs.pop("json_schema_extra", None) or {})
        extra.setdefault("default", {})
        kwargs["json_schema_extra"] = extra
    if "default_factory" in kwargs:
        return Field(description=description, **kwargs)
    return Field(default, description=description, **kwargs)


Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]
"""A column or feature name: bounded, so CEL rules over lists of them stay cheap."""


class Condition(ApiModel):
    """A metav1.Condition: what kstatus, Flux, Argo CD and ``kubectl wait`` read."""

    type: str = Doc("Type of the condition, such as Ready.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Doc("Status of the condition.")
    reason: str = Doc("One-word CamelCase reason for the last transition.", "", max_length=1024)
    message: str = Doc("Human-readable detail of the last transition.", "", max_length=32768)
    last_transition_time: str | None = Doc(
        "When the status last changed.", None, json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Doc("The .metadata.generation the condition was set from.", None, ge=0)


class ObjectMeta(BaseModel):
    """The parts of metadata the offline validator checks; the rest passes through."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Name of the object.", max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str | None = Field(None, max_length=63, pattern=DNS_LABEL)
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and not re.fullmatch(QUANTITY, value):
        raise PydanticCustomError("quantity", f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2Gi)")
    if isinstance(value, int) and value < 0:
        raise PydanticCustomError("quantity", "a quantity must not be negative")
    return value


Quantity = Annotated[int | str, AfterValidator(_check_quantity)]
"""A Kubernetes quantity (``500m``, ``2Gi``, ``1``); see :func:`quantity_field`."""


def quantity_field(description: str) -> Any:
    return Field(
        None,
        description=description,
        json_schema_extra={"x-mlops-quantity": True},
    )


class ResourceList(ApiModel):
    """CPU and memory, as in a container's resources."""

    cpu: Quantity | None = quantity_field("CPU, in cores or millicores (500m).")
    memory: Quantity | None = quantity_field("Memory, in bytes or with a suffix (512Mi).")


def _request_within_limit(r: "Resources", name: str) -> bool:
    request = getattr(r.requests, name, None) if r.requests else None
    limit = getattr(r.limits, name, None) if r.limits else None
    return request is None or limit is None or parse_quantity(request) <= parse_quantity(limit)


def _within_limit_cel(name: str) -> str:
    return (f"!has(self.requests) || !has(self.limits) || !has(self.requests.{name}) || !has(self.limits.{name}) || "
            f"quantity(string(self.requests.{name})).compareTo(quantity(string(self.limits.{name}))) <= 0")


class Resources(ApiModel):
    """Requests and limits of the container the operator runs."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(_within_limit_cel("cpu"), "the CPU request must not exceed the CPU limit", ".requests.cpu",
             lambda r: _request_within_limit(r, "cpu")),
        Rule(_within_limit_cel("memory"), "the memory request must not exceed the memory limit", ".requests.memory",
             lambda r: _request_within_limit(r, "memory")),
    )

    requests: ResourceList | None = Doc("Resources the scheduler reserves.", None)
    limits: ResourceList | None = Doc("Resources the container may not exceed.", None)
