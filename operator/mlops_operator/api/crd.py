"""CustomResourceDefinitions generated from the pydantic models.

pydantic emits JSON Schema 2020-12; the API server wants a *structural*
OpenAPI v3.0 schema. The differences handled here: ``$ref``s are inlined,
``X | None`` loses its null branch (optional means "not required"),
numeric exclusive bounds become v3.0 booleans, titles go, free-form maps
get ``x-kubernetes-preserve-unknown-fields``, quantities become
int-or-string, and each model's :class:`~.base.Rule` s become
``x-kubernetes-validations``.
"""

from __future__ import annotations

from typing import Any

import yaml

from .base import ApiModel
from .kinds import KINDS, Kind

_DROP = {"title", "discriminator"}


def _rules_by_title(model: type[ApiModel], out: dict[str, type[ApiModel]]) -> None:
    """Map each nested model's schema title to its class, to find its rules."""
    out[model.__name__] = model
    for f in model.model_fields.values():
        for arg in _walk_types(f.annotation):
            if isinstance(arg, type) and issubclass(arg, ApiModel) and arg.__name__ not in out:
                _rules_by_title(arg, out)


def _walk_types(tp: Any) -> list[Any]:
    args = getattr(tp, "__args__", None)
    if not args:
        return [tp]
    found: list[Any] = []
    for a in args:
        found.extend(_walk_types(a))
    return found


def _convert(node: Any, defs: dict[str, Any], models: dict[str, type[ApiModel]]) -> Any:
    if isinstance(node, list):
        return [_convert(n, defs, models) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs, models)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if node.get("x-mlops-quantity"):
            return _quantity(rest)
        if len(branches) == 1:
            merged = {**_convert(branches[0], defs, models), **_convert(rest, defs, models)}
            if merged.get("default", 0) is None:
                merged.pop("default")
            return merged
        raise ValueError(f"cannot express a union of {branches} structurally")
    if node.get("x-mlops-quantity"):
        return _quantity({k: v for k, v in node.items() if k != "type"})

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: _convert(v, defs, models) for k, v in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = _convert(value, defs, models)
        elif key == "additionalProperties":
            out[key] = _convert(value, defs, models) if isinstance(value, dict) else value
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out:
        add = out.get("additionalProperties")
        if add is True or add == {} or add is None:
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "title" in node and node["title"] in models:
        rules = [r.schema() for r in models[node["title"]].rules]
        if rules:
            out["x-kubernetes-validations"] = out.get("x-kubernetes-validations", []) + rules
    if "properties" in out:
        out.pop("additionalProperties", None)  # structural schemas prune unknown fields instead
    return out


def _quantity(rest: dict[str, Any]) -> dict[str, Any]:
    from .base import QUANTITY

    out = {k: v for k, v in rest.items() if k not in _DROP | {"x-mlops-quantity", "default"}}
    # The pattern only sees strings; ``minimum`` only numbers: together, no negative quantity either way.
    out.update({"anyOf": [{"type": "integer"}, {"type": "string"}], "pattern": QUANTITY, "minimum": 0,
                "x-kubernetes-int-or-string": True})
    return out


def openapi_schema(model: type[ApiModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model (spec or status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    defs = raw.pop("$defs", {})
    models: dict[str, type[ApiModel]] = {}
    _rules_by_title(model, models)
    return _convert(raw, defs, models)


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec = openapi_schema(kind.spec)
    status = openapi_schema(kind.status)
    status["x-kubernetes-preserve-unknown-fields"] = True
    spec["description"] = (spec.get("description") or "").strip()
    status["description"] = f"Observed state of the {kind.kind}, written by the operator only."
    root = {
        "type": "object",
        "description": (kind.model.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of the object."},
            "kind": {"type": "string", "description": "Kind of the object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": _name_rules(kind),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "mlops-operator", "app.kubernetes.io/part-of": "mlops-operator"},
        },
        "spec": {
            "group": kind.crd_name.split(".", 1)[1],
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short],
                "categories": list(kind.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": kind.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in kind.columns],
                    **({"selectableFields": [{"jsonPath": f} for f in kind.selectable]} if kind.selectable else {}),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _name_rules(kind: Kind) -> list[dict[str, Any]]:
    # No fieldPath: the schema does not declare metadata's fields, so the server refuses one.
    rules = [{"rule": f"self.metadata.name.size() <= {kind.max_name_length}",
              "message": f"metadata.name must be at most {kind.max_name_length} characters"}]
    if kind.name_pattern:
        rules.append({"rule": f"self.metadata.name.matches('{kind.name_pattern}')",
                      "message": "metadata.name must be a DNS-1035 label (lower case letters, digits and '-', starting with a letter)"})
    return rules


HEADER = "# Generated by `mlops-operator crds` from the models in operator/mlops_operator/api. Do not edit.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=120, allow_unicode=True)


def rendered_files() -> dict[str, str]:
    """File name → content, for every kind."""
    return {f"{k.crd_name}.yaml": render(k) for k in KINDS}
