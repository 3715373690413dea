"""Request parsing and response building for the model server; no I/O.

Requests arrive as bytes and leave this module as a 2-D numpy array of rows
in the feature order of ``metadata.json`` (``float64`` when every feature is
numeric, ``object`` otherwise), or as a :class:`ProtocolError` naming the
offending field.  Nothing that fails these checks reaches the model.

Value rules (see ``docs/serving.md``):

* numeric features take JSON numbers; ``true``/``false`` only when the
  feature's dtype is ``bool``; ``null`` (and the non-standard ``NaN`` token)
  only when the schema says missing values are allowed (the server decides
  that at start-up by probing the pipeline); infinities never;
* categorical features take strings (or integers/booleans when the training
  categories were integers/booleans); unseen levels are allowed only when the
  schema says so (again probed at start-up).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

MAX_ID_LENGTH = 256
MAX_FEEDBACK_ITEMS = 100_000

V2_NUMERIC_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
V2_INT_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
V2_TYPES = V2_NUMERIC_TYPES | {"BOOL", "BYTES"}
V2_OUTPUTS = ("predict", "predict_proba")


class ProtocolError(Exception):
    """A request the server refuses; ``status`` is the HTTP code."""

    def __init__(self, status: int, error: str, field: str = "body") -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "field": self.field}


def _bad(error: str, where: str, status: int = 400) -> ProtocolError:
    return ProtocolError(status, error, where)


# --------------------------------------------------------------------------
# schema


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # "numeric" | "categorical"
    dtype: str = "float64"
    categories: tuple[Any, ...] | None = None
    # What values the pipeline expects for a categorical feature: "str", "int" or "bool".
    value_type: str = "str"
    # JSON types also accepted for a "str" categorical and turned into ``str(value)``,
    # as the trainer does for integer or boolean columns declared categorical.
    coerce: tuple[type, ...] = ()

    @property
    def numeric(self) -> bool:
        return self.kind == "numeric"

    @property
    def boolean(self) -> bool:
        return self.dtype.startswith("bool")

    @property
    def v2_datatype(self) -> str:
        if self.numeric:
            return "BOOL" if self.boolean else "FP64"
        return {"str": "BYTES", "int": "INT64", "bool": "BOOL"}[self.value_type]

    def v2_accepts(self, dt: str) -> bool:
        if self.numeric:  # BYTES: numeric strings, converted (a BYTES element is a string in the protocol)
            return dt in V2_NUMERIC_TYPES or dt == "BYTES" or (dt == "BOOL" and self.boolean)
        if self.value_type == "int" or int in self.coerce:
            if dt in V2_INT_TYPES:
                return True
        if self.value_type == "bool" or bool in self.coerce:
            if dt == "BOOL":
                return True
        return dt == self.v2_datatype


def _categorical_value_type(dtype: str, categories: Sequence[Any] | None) -> str:
    if categories:
        kinds = {type(c) for c in categories}
        if kinds <= {bool}:
            return "bool"
        if kinds <= {int}:
            return "int"
        return "str"
    return "str"  # the trainer turns every categorical value into str(value)


def _coercions(dtype: str) -> tuple[type, ...]:
    if dtype.startswith("bool"):
        return (bool,)
    if dtype.startswith(("int", "uint", "Int", "UInt")):
        return (int,)
    return ()


@dataclass(frozen=True)
class Schema:
    """The input and output contract of one model version."""

    features: tuple[Feature, ...]
    task: str
    classes: tuple[Any, ...] | None = None
    target: str = "target"
    allow_missing: bool = False
    allow_unseen: bool = True
    allow_missing_categorical: bool = False
    names: tuple[str, ...] = field(init=False)
    index: dict[str, int] = field(init=False)
    all_numeric: bool = field(init=False)
    any_boolean: bool = field(init=False)
    known: tuple[frozenset[Any] | None, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(f.name for f in self.features)
        set_ = object.__setattr__
        set_(self, "names", names)
        set_(self, "index", {n: i for i, n in enumerate(names)})
        set_(self, "all_numeric", all(f.numeric for f in self.features))
        set_(self, "any_boolean", any(f.numeric and f.boolean for f in self.features))
        set_(
            self,
            "known",
            tuple(
                None if f.numeric or f.categories is None else frozenset(f.categories) for f in self.features
            ),
        )

    @property
    def width(self) -> int:
        return len(self.features)

    @property
    def dtype(self) -> type:
        return np.float64 if self.all_numeric else object

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], *, allow_missing: bool = False, allow_unseen: bool = True) -> Schema:
        raw = meta.get("features")
        if not isinstance(raw, list) or not raw:
            raise ValueError("metadata has no feature list")
        feats = []
        for f in raw:
            if isinstance(f, str):
                feats.append(Feature(name=f, kind="numeric"))
                continue
            kind = f.get("kind", "numeric")
            if kind not in ("numeric", "categorical"):
                raise ValueError(f"feature {f.get('name')!r}: unknown kind {kind!r}")
            dtype = str(f.get("dtype") or ("float64" if kind == "numeric" else "object"))
            cats = f.get("categories")
            cats_t = tuple(cats) if isinstance(cats, list) else None
            feats.append(
                Feature(
                    name=str(f["name"]),
                    kind=kind,
                    dtype=dtype,
                    categories=cats_t,
                    value_type=_categorical_value_type(dtype, cats_t) if kind == "categorical" else "str",
                    coerce=_coercions(dtype) if kind == "categorical" else (),
                )
            )
        if len({f.name for f in feats}) != len(feats):
            raise ValueError("metadata lists a feature twice")
        task = meta.get("task", "classification")
        classes = meta.get("classes")
        return cls(
            features=tuple(feats),
            task=task,
            classes=tuple(classes) if task == "classification" and isinstance(classes, list) else None,
            target=str(meta.get("target") or "target"),
            allow_missing=allow_missing,
            allow_unseen=allow_unseen,
        )

    def with_policy(self, *, allow_missing: bool, allow_unseen: bool, allow_missing_categorical: bool = False) -> Schema:
        return Schema(
            self.features, self.task, self.classes, self.target, allow_missing, allow_unseen, allow_missing_categorical
        )


# --------------------------------------------------------------------------
# JSON


def loads(body: bytes) -> Any:
    """Parse a JSON body; anything that is not JSON is a 400 naming ``body``."""
    if not body:
        raise _bad("empty body: expected a JSON object", "body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"malformed JSON: {exc}", "body") from None


def decode_body(body: bytes, encoding: bytes, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip or identity), never inflating past ``limit`` bytes (413)."""
    enc = encoding.strip().lower()
    if enc in (b"", b"identity"):
        return body
    if enc not in (b"gzip", b"x-gzip"):
        raise _bad(f"Content-Encoding {_short(enc.decode('latin-1'))} is not supported; send gzip or identity",
                   "Content-Encoding", 415)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _bad(f"body is not valid gzip: {exc}", "body") from None
    if len(out) > limit:
        raise _bad(f"decompressed body larger than {limit} bytes", "body", 413)
    if not d.eof:
        raise _bad("gzip body is cut off", "body")
    if d.unused_data:
        raise _bad("bytes after the end of the gzip stream", "body")
    return out


def may_hold_bool(body: bytes) -> bool:
    """Whether a JSON body could contain ``true``/``false`` tokens (cheap over-approximation)."""
    return b"true" in body or b"false" in body


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------
# values


def _numeric(v: Any, feat: Feature, schema: Schema, where: Callable[[], str], strings: bool = False) -> float:
    t = type(v)
    if t is str and strings:
        v = _number_from_string(v, feat, where)
        t = float
    if t is float:
        if v - v == 0.0:  # finite
            return v
        if v != v and schema.allow_missing:
            return math.nan
        raise _bad(f"feature {feat.name!r}: {_describe(v)} is not allowed", where())
    if t is int:
        try:
            return float(v)
        except OverflowError:
            raise _bad(f"feature {feat.name!r}: number too large", where()) from None
    if t is bool:
        if feat.boolean:
            return float(v)
        raise _bad(f"feature {feat.name!r} is numeric: expected a number, got a boolean", where())
    if v is None:
        if schema.allow_missing:
            return math.nan
        raise _bad(f"feature {feat.name!r}: missing value (null) is not allowed", where())
    raise _bad(f"feature {feat.name!r} is numeric: expected a number, got {_json_type(v)}", where())


def _number_from_string(s: str, feat: Feature, where: Callable[[], str]) -> float:
    """A BYTES element for a numeric feature: a decimal number as text (``"4.9"``, ``"1e-3"``)."""
    try:
        if "_" in s or len(s) > 100:
            raise ValueError
        return float(s)
    except ValueError:
        raise _bad(f"feature {feat.name!r} is numeric: BYTES element {_short(s)} is not a number", where()) from None


def _categorical(v: Any, i: int, feat: Feature, schema: Schema, where: Callable[[], str]) -> Any:
    t = type(v)
    vt = feat.value_type
    if not ((vt == "str" and t is str) or (vt == "int" and t is int) or (vt == "bool" and t is bool)):
        if t in feat.coerce:
            v = str(v)
        elif v is None and schema.allow_missing_categorical:
            return math.nan
        else:
            want = {"str": "a string", "int": "an integer", "bool": "a boolean"}[vt]
            raise _bad(f"feature {feat.name!r} is categorical: expected {want}, got {_json_type(v)}", where())
    known = schema.known[i]
    if known is not None and not schema.allow_unseen and v not in known:
        raise _bad(f"feature {feat.name!r}: unknown category {_short(v)}", where())
    return v


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _describe(v: float) -> str:
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _short(v: Any, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[: n - 3] + "..."


def _finite_check(x: np.ndarray, schema: Schema, where: Callable[[int, int], str]) -> None:
    """Reject infinities (always) and NaN (unless missing values are allowed) in a float matrix."""
    ok = np.isfinite(x)
    if ok.all():
        return
    bad = ~ok
    if schema.allow_missing:
        bad &= ~np.isnan(x)
        if not bad.any():
            return
    r, c = (int(i) for i in np.argwhere(bad)[0])
    v = float(x[r, c])
    raise _bad(f"feature {schema.names[c]!r}: {_describe(v)} is not allowed", where(r, c))


# --------------------------------------------------------------------------
# rows


def rows_to_array(
    rows: Any,
    schema: Schema,
    field_name: str,
    bools_possible: bool = True,
    where: Callable[[int, int], str] | None = None,
    strings: bool = False,
) -> np.ndarray:
    """Validate a list of rows (each a list in schema order or an object by name).

    ``strings``: numeric features also take numeric strings (V2 BYTES tensors).
    """
    if not isinstance(rows, list):
        raise _bad(f"{field_name} must be an array of rows, got {_json_type(rows)}", field_name)
    if not rows:
        raise _bad("empty batch: at least one row is required", field_name)
    d = schema.width
    if where is None:
        where = lambda r, c: f"{field_name}[{r}][{c}]"  # noqa: E731
    if schema.all_numeric:
        fast = _numeric_fast(rows, schema, bools_possible, where)
        if fast is not None:
            return fast
    out = np.empty((len(rows), d), dtype=schema.dtype)
    feats = schema.features
    for r, row in enumerate(rows):
        if type(row) is list:
            if len(row) != d:
                raise _bad(f"row has {len(row)} values, the model takes {d} ({', '.join(schema.names)})", f"{field_name}[{r}]")
            for c, v in enumerate(row):
                f = feats[c]
                loc = lambda r=r, c=c: where(r, c)  # noqa: E731
                out[r, c] = _numeric(v, f, schema, loc, strings) if f.numeric else _categorical(v, c, f, schema, loc)
        elif type(row) is dict:
            if len(row) != d or any(k not in schema.index for k in row):
                for k in row:
                    if k not in schema.index:
                        raise _bad(f"unknown feature {_short(k)}", f"{field_name}[{r}].{k}")
                missing = [n for n in schema.names if n not in row]
                raise _bad(f"missing feature(s): {', '.join(missing)}", f"{field_name}[{r}]")
            for c, f in enumerate(feats):
                v = row[f.name]
                loc = lambda r=r, f=f: f"{field_name}[{r}].{f.name}"  # noqa: E731
                out[r, c] = _numeric(v, f, schema, loc) if f.numeric else _categorical(v, c, f, schema, loc)
        else:
            raise _bad(f"a row must be an array or an object keyed by feature name, got {_json_type(row)}", f"{field_name}[{r}]")
    return out


def _numeric_fast(
    rows: list[Any], schema: Schema, bools_possible: bool, where: Callable[[int, int], str]
) -> np.ndarray | None:
    """All-numeric positional rows in one numpy conversion; None means take the checked path."""
    if bools_possible or type(rows[0]) is not list:
        return None
    try:
        a = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if a.ndim != 2 or a.shape[1] != schema.width or a.dtype.kind not in "fi":
        return None
    x = a.astype(np.float64, copy=False)
    if a.dtype.kind == "f":
        _finite_check(x, schema, where)
    return x


# --------------------------------------------------------------------------
# KServe V1


def parse_v1(body: bytes, schema: Schema) -> np.ndarray:
    """``{"instances": [...]}`` (or ``"inputs"``) → rows."""
    obj = loads(body)
    if type(obj) is not dict:
        raise _bad(f"expected a JSON object with \"instances\", got {_json_type(obj)}", "body")
    if "instances" in obj and "inputs" in obj:
        raise _bad("give either \"instances\" or \"inputs\", not both", "inputs")
    if "instances" in obj:
        key = "instances"
    elif "inputs" in obj:
        key = "inputs"
    else:
        raise _bad("missing \"instances\"", "instances")
    return rows_to_array(obj[key], schema, key, may_hold_bool(body))


def v1_response(predictions: np.ndarray, ids: list[str]) -> dict[str, Any]:
    return {"predictions": json_values(predictions), "ids": ids}


def json_values(a: np.ndarray) -> list[Any]:
    """A numpy array as JSON-ready nested lists; non-finite floats become null."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        return np.where(np.isfinite(a), a, None).tolist()
    return a.tolist()


# --------------------------------------------------------------------------
# Open Inference Protocol V2

JSON_LENGTH_HEADER = "Inference-Header-Content-Length"
_INT_RANGES = {
    "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1), "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1), "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1), "UINT64": (0, 2**64 - 1),
}
_FLOAT_MAX = {"FP16": 65504.0, "FP32": float(np.finfo(np.float32).max)}


@dataclass
class V2Request:
    rows: np.ndarray
    id: str | None
    outputs: tuple[str, ...]
    # Outputs to answer in binary form (the binary data extension); empty means all JSON.
    binary_outputs: frozenset[str] = frozenset()


def model_outputs(schema: Schema, has_proba: bool = True) -> tuple[str, ...]:
    """What a model produces: ``predict``, and ``predict_proba`` for a classifier that has it."""
    return V2_OUTPUTS if schema.task == "classification" and has_proba else ("predict",)


def _flatten(data: Any, shape: Sequence[int], where: str) -> list[Any]:
    """Row-major values of ``data``: flat, or nested exactly as ``shape`` says (no ragged or transposed rows)."""
    if type(data) is not list:
        raise _bad(f"data must be an array, got {_json_type(data)}", where)
    if not any(type(v) is list for v in data):
        return data
    out: list[Any] = []
    last = len(shape) - 1

    def walk(node: Any, depth: int, path: str) -> None:
        if type(node) is not list or len(node) != shape[depth]:
            got = f"{len(node)} values" if type(node) is list else _json_type(node)
            raise _bad(f"data{path} holds {got}; shape {list(shape)} needs {shape[depth]} in dimension {depth}", where)
        if depth == last:
            if any(type(v) is list for v in node):
                raise _bad(f"data{path} nests deeper than shape {list(shape)}", where)
            out.extend(node)
            return
        for k, v in enumerate(node):
            walk(v, depth + 1, f"{path}[{k}]")

    walk(data, 0, "")
    return out


def _shape(t: dict[str, Any], where: str) -> list[int]:
    shape = t.get("shape")
    if type(shape) is not list or not shape or any(type(s) is not int or s < 0 for s in shape):
        raise _bad("shape must be a non-empty array of non-negative integers", where + ".shape")
    return shape


def _tensor_values(t: dict[str, Any], i: int, expect: int, raw: Any) -> list[Any] | np.ndarray:
    """The tensor's elements: from ``data``, or decoded raw bytes (binary extension, gRPC)."""
    where = f"inputs[{i}].data"
    if raw is not None:
        if "data" in t:
            raise _bad("a tensor sent as binary data must not also have data", where)
        return raw
    if "data" not in t:
        raise _bad("missing data", where)
    flat = _flatten(t["data"], t["shape"], where)
    if len(flat) != expect:
        raise _bad(f"data holds {len(flat)} values, shape {t['shape']} needs {expect}", where)
    return flat


def _check_datatype(dt: Any, feats: Sequence[Feature], where: str) -> str:
    if dt not in V2_TYPES:
        raise _bad(f"unknown datatype {_short(dt)}; use one of {', '.join(sorted(V2_TYPES))}", where)
    for f in feats:
        if not f.v2_accepts(dt):
            raise _bad(f"datatype {dt} does not fit feature {f.name!r} (expected {f.v2_datatype})", where)
    return dt


def _typed_values(flat: list[Any] | np.ndarray, dt: str, where: Callable[[int], str]) -> None:
    """Each element must be of its datatype and within its range (INT8 300, FP32 1e300 are refused)."""
    if type(flat) is not list:
        return  # decoded from raw bytes: of the datatype by construction
    rng = _INT_RANGES.get(dt)
    if rng is not None:
        lo, hi = rng
        for k, v in enumerate(flat):
            if type(v) is not int:
                raise _bad(f"{dt} tensor holds {_json_type(v)}", where(k))
            if not lo <= v <= hi:
                raise _bad(f"{dt} element {_short(v)} is out of range [{lo}, {hi}]", where(k))
        return
    top = _FLOAT_MAX.get(dt)
    if top is None:
        return
    try:
        a = np.asarray(flat, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        a = None  # strings or nulls among the numbers: check them one by one
    if a is not None and a.ndim == 1:
        over = np.abs(a) > top
        if not over.any():
            return
        k = int(np.argmax(over))
        raise _bad(f"{dt} element {_short(flat[k])} is out of range (at most {top:g} in magnitude)", where(k))
    for k, v in enumerate(flat):
        if type(v) in (int, float):
            try:
                too_big = abs(float(v)) > top
            except OverflowError:
                too_big = True
            if too_big and v == v:
                raise _bad(f"{dt} element {_short(v)} is out of range (at most {top:g} in magnitude)", where(k))


def parse_v2(
    body: bytes, schema: Schema, *, json_length: int | None = None, outputs: Sequence[str] | None = None
) -> V2Request:
    """A V2 infer body; ``json_length`` (the ``Inference-Header-Content-Length`` header) means binary tensors follow."""
    if json_length is None:
        obj, binary = loads(body), None
    else:
        if not 0 < json_length <= len(body):
            raise _bad(f"{JSON_LENGTH_HEADER} must be between 1 and the body length ({len(body)})", JSON_LENGTH_HEADER)
        obj, binary = loads(body[:json_length]), memoryview(body)[json_length:]
    if type(obj) is not dict:
        raise _bad(f"expected a JSON object with \"inputs\", got {_json_type(obj)}", "body")
    inputs = obj.get("inputs")
    if type(inputs) is not list or not inputs:
        raise _bad("inputs must be a non-empty array of tensors", "inputs")
    raws = _binary_inputs(inputs, binary)
    return parse_v2_object(obj, schema, raws, outputs, bools=may_hold_bool(body))


def _binary_inputs(inputs: list[Any], binary: memoryview | None) -> list[Any]:
    """Cut the bytes after the JSON header into the inputs that declare ``parameters.binary_data_size``."""
    raws: list[Any] = [None] * len(inputs)
    pos = 0
    for i, t in enumerate(inputs):
        params = t.get("parameters") if type(t) is dict else None
        if params is None or type(params) is not dict or "binary_data_size" not in params:
            continue
        where = f"inputs[{i}].parameters.binary_data_size"
        size = params["binary_data_size"]
        if binary is None:
            raise _bad(f"binary data needs the {JSON_LENGTH_HEADER} header", where)
        if type(size) is not int or size < 0:
            raise _bad("binary_data_size must be a non-negative integer", where)
        if pos + size > len(binary):
            raise _bad(f"binary_data_size {size} runs past the end of the body ({len(binary) - pos} bytes left)", where)
        raws[i] = binary[pos:pos + size]
        pos += size
    if binary is not None and pos != len(binary):
        raise _bad(f"{len(binary) - pos} bytes after the JSON header belong to no input's binary_data_size", "body")
    return raws


def parse_v2_object(
    obj: dict[str, Any], schema: Schema, raws: Sequence[Any], outputs: Sequence[str] | None = None, *, bools: bool = True
) -> V2Request:
    """A parsed V2 request: ``raws[i]`` holds input ``i``'s raw bytes (binary extension, gRPC) or None."""
    rid = obj.get("id")
    if rid is not None and (type(rid) is not str or not rid or len(rid) > MAX_ID_LENGTH):
        raise _bad(f"id must be a non-empty string of at most {MAX_ID_LENGTH} characters", "id")
    available = tuple(outputs) if outputs is not None else model_outputs(schema)
    want, binary_out = _v2_outputs(obj, available)
    inputs = obj.get("inputs")
    if type(inputs) is not list or not inputs:
        raise _bad("inputs must be a non-empty array of tensors", "inputs")
    for i, t in enumerate(inputs):
        if type(t) is not dict:
            raise _bad(f"a tensor must be an object, got {_json_type(t)}", f"inputs[{i}]")
        if type(t.get("name")) is not str:
            raise _bad("tensor name must be a string", f"inputs[{i}].name")
    values = [_raw_values(t, i, raws[i]) if raws[i] is not None else None for i, t in enumerate(inputs)]
    first = inputs[0]
    if len(inputs) == 1 and len(_shape(first, "inputs[0]")) == 2 and not (
        schema.width == 1 and first["name"] == schema.names[0] and first["shape"][1:] == [1]
    ):
        rows = _v2_matrix(first, schema, bools, values[0])
    else:
        rows = _v2_columns(inputs, schema, values)
    return V2Request(rows=rows, id=rid, outputs=want, binary_outputs=binary_out)


def _raw_values(t: dict[str, Any], i: int, raw: Any) -> np.ndarray | list[Any]:
    from .tensors import NUMPY_TYPES, TensorBytesError, decode

    shape = _shape(t, f"inputs[{i}]")
    dt = t.get("datatype")
    if dt not in NUMPY_TYPES and dt != "BYTES":
        raise _bad(f"unknown datatype {_short(dt)}; use one of {', '.join(sorted(V2_TYPES))}", f"inputs[{i}].datatype")
    count = math.prod(shape)
    try:
        return decode(raw, dt, count)
    except TensorBytesError as exc:
        raise _bad(f"binary data of a {dt} tensor of shape {shape}: {exc}", f"inputs[{i}].parameters.binary_data_size") from None


def _flag(params: Any, key: str, where: str) -> bool | None:
    if params is None:
        return None
    if type(params) is not dict:
        raise _bad("parameters must be an object", where)
    v = params.get(key)
    if v is not None and type(v) is not bool:
        raise _bad(f"{key} must be true or false", f"{where}.{key}")
    return v


def _v2_outputs(obj: dict[str, Any], available: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    outs = obj.get("outputs")
    all_binary = _flag(obj.get("parameters"), "binary_data_output", "parameters") or False
    if outs is None:
        return available, frozenset(available) if all_binary else frozenset()
    if type(outs) is not list or not outs:
        raise _bad("outputs must be a non-empty array of {\"name\": ...}", "outputs")
    want: list[str] = []
    binary: set[str] = set()
    for k, o in enumerate(outs):
        name = o.get("name") if type(o) is dict else None
        if name not in available:
            if name == "predict_proba" and name in V2_OUTPUTS:
                raise _bad("predict_proba is only available for classifiers that have it", f"outputs[{k}].name")
            raise _bad(f"unknown output {_short(name)}; the model has {', '.join(available)}", f"outputs[{k}].name")
        assert type(o) is dict
        own = _flag(o.get("parameters"), "binary_data", f"outputs[{k}].parameters")
        if name not in want:
            want.append(name)
        if (all_binary if own is None else own):
            binary.add(name)
    return tuple(want), frozenset(binary)


def _v2_matrix(t: dict[str, Any], schema: Schema, bools: bool, raw: Any) -> np.ndarray:
    n, d = t["shape"]
    if d != schema.width:
        raise _bad(f"a 2-D tensor needs {schema.width} columns ({', '.join(schema.names)}), shape has {d}", "inputs[0].shape")
    if n == 0:
        raise _bad("empty batch: at least one row is required", "inputs[0].shape")
    dt = t.get("datatype")
    if schema.all_numeric or dt != "BYTES":
        # A mixed schema may also send one BYTES matrix, each column checked by its feature's rules.
        _check_datatype(dt, schema.features, "inputs[0].datatype")
    flat = _tensor_values(t, 0, n * d, raw)
    where = lambda r, c: f"inputs[0].data[{r * d + c}]"  # noqa: E731
    if type(flat) is not list:
        if schema.all_numeric:
            x = flat.reshape(n, d).astype(np.float64)
            _finite_check(x, schema, where)
            return x
        flat = flat.tolist()
    _typed_values(flat, dt, lambda k: f"inputs[0].data[{k}]")
    rows = [flat[r * d : (r + 1) * d] for r in range(n)]
    return rows_to_array(rows, schema, "inputs[0].data", bools or dt == "BOOL", where=where, strings=dt == "BYTES")


def _v2_columns(inputs: list[dict[str, Any]], schema: Schema, values: Sequence[Any]) -> np.ndarray:
    seen: dict[str, int] = {}
    n_rows: int | None = None
    for i, t in enumerate(inputs):
        name = t["name"]
        if name not in schema.index:
            if len(inputs) == 1:
                raise _bad(
                    f"send one 2-D tensor [rows, {schema.width}] or one 1-D tensor per feature "
                    f"({', '.join(schema.names)}); {_short(name)} is neither",
                    f"inputs[{i}].name",
                )
            raise _bad(f"unknown feature {_short(name)}", f"inputs[{i}].name")
        if name in seen:
            raise _bad(f"feature {name!r} sent twice", f"inputs[{i}].name")
        seen[name] = i
        shape = _shape(t, f"inputs[{i}]")
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise _bad(f"a feature tensor has shape [rows] or [rows, 1], got {shape}", f"inputs[{i}].shape")
        if n_rows is None:
            n_rows = shape[0]
        elif shape[0] != n_rows:
            raise _bad(f"feature tensors differ in rows: {shape[0]} != {n_rows}", f"inputs[{i}].shape")
    missing = [n for n in schema.names if n not in seen]
    if missing:
        raise _bad(f"missing feature tensor(s): {', '.join(missing)}", "inputs")
    assert n_rows is not None
    if n_rows == 0:
        raise _bad("empty batch: at least one row is required", "inputs[0].shape")
    out = np.empty((n_rows, schema.width), dtype=schema.dtype)
    for c, f in enumerate(schema.features):
        i = seen[f.name]
        t = inputs[i]
        dt = _check_datatype(t.get("datatype"), (f,), f"inputs[{i}].datatype")
        flat = _tensor_values(t, i, n_rows, values[i])
        if type(flat) is not list:
            flat = flat.tolist()
        _typed_values(flat, dt, lambda k, i=i: f"inputs[{i}].data[{k}]")
        strings = dt == "BYTES"
        for r, v in enumerate(flat):
            loc = lambda i=i, r=r: f"inputs[{i}].data[{r}]"  # noqa: E731
            out[r, c] = _numeric(v, f, schema, loc, strings) if f.numeric else _categorical(v, c, f, schema, loc)
    return out


def v2_datatype(a: np.ndarray) -> str:
    k = a.dtype.kind
    if k == "b":
        return "BOOL"
    if k in "iu":
        return "INT64"
    if k == "f":
        return "FP64"
    if k == "O" and a.size and all(type(v) is bool for v in a.flat):
        return "BOOL"
    if k == "O" and a.size and all(type(v) is int for v in a.flat):
        return "INT64"
    return "BYTES"


@dataclass(frozen=True)
class OutputTensor:
    """One output of a V2 answer, before it is written as JSON, binary or gRPC."""

    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray  # flat, row-major


def output_tensors(predictions: np.ndarray, proba: np.ndarray | None, outputs: Sequence[str]) -> list[OutputTensor]:
    outs = []
    for name in outputs:
        if name == "predict":
            values = predictions if predictions.dtype.kind != "O" else _plain(predictions)
            outs.append(OutputTensor("predict", v2_datatype(predictions), [int(predictions.shape[0])], values.reshape(-1)))
        elif name == "predict_proba" and proba is not None:
            outs.append(OutputTensor("predict_proba", "FP64", [int(s) for s in proba.shape], proba.reshape(-1)))
    return outs


def v2_response(
    model: str,
    version: str,
    rid: str,
    predictions: np.ndarray,
    proba: np.ndarray | None,
    outputs: Sequence[str],
) -> dict[str, Any]:
    """The JSON answer with every output's ``data`` inline."""
    return v2_answer(model, version, rid, output_tensors(predictions, proba, outputs))[0]


def v2_answer(
    model: str, version: str, rid: str, tensors: Sequence[OutputTensor], binary: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tail: outputs named in ``binary`` go as raw bytes after the JSON."""
    from .tensors import encode

    outs = []
    tail = []
    for t in tensors:
        o: dict[str, Any] = {"name": t.name, "shape": t.shape, "datatype": t.datatype}
        if t.name in binary:
            raw = encode(t.values, t.datatype)
            o["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            o["data"] = json_values(t.values)
        outs.append(o)
    return {"model_name": model, "model_version": version, "id": rid, "outputs": outs}, b"".join(tail)


def _plain(a: np.ndarray) -> np.ndarray:
    return np.array([v.item() if isinstance(v, np.generic) else v for v in a.flat], dtype=object)


# --------------------------------------------------------------------------
# feedback


@dataclass
class FeedbackItem:
    """One label, matched by prediction ``id`` or carrying its input row as ``instance``.

    With several replicas behind a Service, a label can reach a replica that
    never saw the id; a label that brings its row can be scored anywhere.
    """

    id: str | None
    label: Any
    instance: Any = None
    index: int = 0


def parse_feedback(body: bytes) -> list[FeedbackItem]:
    """``{"feedback": [{"id": "...", "label": ...} | {"instance": [...], "label": ...}, ...]}``.

    Labels are checked against the model later; instances with
    :func:`feedback_rows`.
    """
    obj = loads(body)
    if type(obj) is not dict:
        raise _bad(f"expected a JSON object with \"feedback\", got {_json_type(obj)}", "body")
    items = obj.get("feedback")
    if type(items) is not list or not items:
        raise _bad("feedback must be a non-empty array of {\"id\" or \"instance\", \"label\"}", "feedback")
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise _bad(f"at most {MAX_FEEDBACK_ITEMS} labels per request", "feedback")
    out = []
    for k, it in enumerate(items):
        if type(it) is not dict:
            raise _bad(f"expected an object, got {_json_type(it)}", f"feedback[{k}]")
        pid, has_row = it.get("id"), "instance" in it
        if has_row and pid is not None:
            raise _bad("give the prediction id or the instance, not both", f"feedback[{k}]")
        if not has_row and (type(pid) is not str or not pid or len(pid) > MAX_ID_LENGTH + 16):
            raise _bad("id must be a prediction id (a non-empty string), or give the row as instance", f"feedback[{k}].id")
        if "label" not in it:
            raise _bad("missing label", f"feedback[{k}].label")
        label = it["label"]
        if type(label) not in (str, int, float, bool):
            raise _bad(f"label must be a string, number or boolean, got {_json_type(label)}", f"feedback[{k}].label")
        out.append(FeedbackItem(pid, label, it.get("instance"), k))
    return out


def feedback_rows(items: Sequence[FeedbackItem], schema: Schema) -> np.ndarray:
    """The instances of feedback items as model rows, each checked like a predict row."""
    rows = [
        rows_to_array([it.instance], schema, f"feedback[{it.index}].instance",
                      where=lambda r, c, k=it.index: f"feedback[{k}].instance[{c}]")
        for it in items
    ]
    return np.concatenate(rows) if len(rows) > 1 else rows[0]
