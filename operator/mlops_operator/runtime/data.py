"""Training data: read a source into a frame, pick and type the columns.

Sources: ``sklearn://<name>`` (the data sets shipped inside scikit-learn),
``file:///path`` and ``pvc://<claim>/<path>`` (a mounted claim) to CSV or
Parquet, ``s3://bucket/key`` (one object, CSV or Parquet, with the store's
credentials and endpoint) and ``https://`` (streamed, with a size limit).  Columns are typed
once here: a feature is *categorical* (values kept as strings, missing as
NaN) or *numeric* (float64, missing as NaN).  A column that looks numeric but
holds text is an error naming the column and a bad value; nothing is coerced
silently.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_MAX_DOWNLOAD_BYTES = 100 * 1024 * 1024
DEFAULT_PVC_ROOT = "/mnt/pvc"
SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
"""Data sets that ship inside scikit-learn (no download)."""

TEST_ALLOW_LOOPBACK_HTTP_ENV = "MLOPS_TRAINER_TEST_ALLOW_LOOPBACK_HTTP"
"""Tests only: set to 1 to accept ``http://127.0.0.1:<port>/`` sources (a local http.server)."""

MIN_ROWS = 10

Log = Callable[..., None]


class DataError(ValueError):
    """The data cannot be used as the spec describes (permanent: retrying will not help)."""


@dataclass
class Dataset:
    """Rows ready for the pipeline: typed feature columns and the target."""

    frame: pd.DataFrame
    """Feature columns (in ``features`` order) and the target column last."""
    target: str
    features: list[str]
    categorical: list[str]
    dtypes: dict[str, str]
    """The source dtype of each feature (as read), for the metadata."""
    dropped_missing_target: int = 0
    feedback_rows: int = 0
    feedback_rejected: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> dict[str, str]:
        cat = set(self.categorical)
        return {f: "categorical" if f in cat else "numeric" for f in self.features}

    @property
    def y(self) -> np.ndarray:
        return self.frame[self.target].to_numpy()

    def matrix(self, rows: Any = None) -> np.ndarray:
        """The pipeline's input: features in order, float64 if all numeric, else object."""
        frame = self.frame if rows is None else self.frame.iloc[rows]
        return to_matrix(frame, self.features, self.categorical)


def to_matrix(frame: pd.DataFrame, features: Sequence[str], categorical: Sequence[str]) -> np.ndarray:
    """A 2-D array of ``features`` in order: float64 if none is categorical, else object
    (numbers as float, categories as str, missing as NaN): what the model server builds."""
    if not categorical:
        return frame[list(features)].to_numpy(dtype=np.float64)
    out = np.empty((len(frame), len(features)), dtype=object)
    cat = set(categorical)
    for j, name in enumerate(features):
        col = frame[name]
        if name in cat:
            out[:, j] = col.to_numpy(dtype=object)
        else:
            out[:, j] = col.to_numpy(dtype=np.float64).astype(object)
    return out


# -- reading sources ------------------------------------------------------------


def read_source(
    source: str,
    *,
    target: str,
    pvc_root: str | os.PathLike[str] = DEFAULT_PVC_ROOT,
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    timeout: float = 60.0,
) -> pd.DataFrame:
    """Read a data source into a frame; for ``sklearn://`` the target is renamed to ``target``."""
    scheme, sep, rest = source.partition("://")
    if not sep:
        raise DataError(f"data source {source!r} has no scheme (sklearn://, file://, pvc://, s3://, https://)")
    if scheme == "sklearn":
        return _read_sklearn(rest, target)
    if scheme in ("file", "pvc"):
        path = local_path(source, pvc_root)
        return read_folder(source, pvc_root=pvc_root) if path.is_dir() else read_table_file(path, source)
    if scheme == "s3":
        if source.endswith("/"):
            return read_folder(source, max_bytes=max_bytes)
        return read_table_bytes(_read_s3_object(source, max_bytes), rest, source)
    if scheme == "https" or (scheme == "http" and _loopback_allowed(source)):
        data = download(source, max_bytes=max_bytes, timeout=timeout)
        name = urllib.parse.unquote(urllib.parse.urlparse(source).path)
        return read_table_bytes(data, name, source)
    raise DataError(f"unsupported data source {source!r}: use sklearn://, file:///, pvc://<claim>/<path>, s3://<bucket>/<key> or https://")


def read_folder(source: str, *, pvc_root: str | os.PathLike[str] = DEFAULT_PVC_ROOT,
                max_bytes: int | None = None) -> pd.DataFrame:
    """Every table under a folder or an ``s3://`` prefix, in name order: what Dask workers would read as
    partitions (runtime/partitions.py), read by one pod. The files must have the same columns; ``max_bytes``
    bounds what is downloaded."""
    from . import partitions

    parts = partitions.list_partitions(source, pvc_root=pvc_root)
    if max_bytes is not None:
        total = sum({p.location: p.size or 0 for p in parts}.values())
        if total > max_bytes:
            raise DataError(f"{source}: {total} bytes under it, over the download limit of {max_bytes}; "
                            "train on Dask workers (spec.distributed), which read it in partitions")
    frames = [partitions.read_partition(p) for p in parts]
    columns = list(frames[0].columns)
    for part, frame in zip(parts, frames):
        if list(frame.columns) != columns:
            raise DataError(f"{source}: {partitions.describe(part)} has the columns {list(frame.columns)}, "
                            f"the first file {columns}; the files of one source must share their columns")
    return pd.concat(frames, ignore_index=True)


def local_path(source: str, pvc_root: str | os.PathLike[str] = DEFAULT_PVC_ROOT) -> Path:
    """The path of a ``file:///path`` or ``pvc://<claim>/<path>`` source (the latter never outside its claim)."""
    scheme, _, rest = source.partition("://")
    if scheme == "file":
        parsed = urllib.parse.urlparse(source)
        if parsed.netloc not in ("", "localhost"):
            raise DataError(f"file:// sources must be local paths (file:///path), got host {parsed.netloc!r}")
        return Path(urllib.parse.unquote(parsed.path))
    claim, _, rel = rest.partition("/")
    root = Path(pvc_root) / claim
    path = (root / urllib.parse.unquote(rel)).resolve()
    if not rel or not path.is_relative_to(root.resolve()):
        raise DataError(f"{source}: the path must stay inside the claim")
    return path


def _read_s3_object(source: str, max_bytes: int) -> bytes:
    """One object's bytes; a missing object or bucket is a DataError, refused credentials a StoreError (its reason is kept)."""
    from ..store.s3 import parse_s3_uri
    from ..store.s3client import Bucket, StoreError

    try:
        bucket, key = parse_s3_uri(source)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if not key:
        raise DataError(f"{source}: name an object (s3://bucket/path/file.csv), not a bucket")
    try:
        data = Bucket(bucket).get(key, max_bytes=max_bytes)
    except StoreError as exc:
        if exc.reason in ("StoreBucketMissing", "StoreObjectTooLarge"):
            raise DataError(str(exc)) from None
        raise
    if data is None:
        raise DataError(f"{source}: no such object (name a prefix of several files with a final /)")
    return data


def _read_sklearn(name: str, target: str) -> pd.DataFrame:
    if name not in SKLEARN_DATASETS:
        raise DataError(f"unknown scikit-learn data set {name!r}; available: {', '.join(SKLEARN_DATASETS)}")
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    target_names = getattr(bunch, "target_names", None)
    y = frame.pop("target")
    if target_names is not None:
        names = list(np.asarray(target_names).tolist())
        y = y.map(lambda i: names[int(i)])
    if target in frame.columns:
        raise DataError(f"target name {target!r} clashes with a feature of sklearn://{name}")
    frame[target] = y
    return frame


def _loopback_allowed(source: str) -> bool:
    if os.environ.get(TEST_ALLOW_LOOPBACK_HTTP_ENV) != "1":
        return False
    return urllib.parse.urlparse(source).hostname == "127.0.0.1"


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urllib.parse.urlparse(newurl).scheme != "https" and not _loopback_allowed(newurl):
            raise DataError(f"refusing to follow a redirect to {newurl!r}: only https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def download(url: str, *, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES, timeout: float = 60.0, chunk: int = 1 << 16) -> bytes:
    """Stream ``url`` into memory; abort as soon as more than ``max_bytes`` arrive."""
    opener = urllib.request.build_opener(_HttpsOnlyRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": "mlops-operator-trainer"})
    try:
        with opener.open(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise DataError(f"{url}: {int(length)} bytes is more than the limit of {max_bytes} bytes")
            buf = io.BytesIO()
            while True:
                part = resp.read(chunk)
                if not part:
                    break
                buf.write(part)
                if buf.tell() > max_bytes:
                    raise DataError(f"{url}: more than the limit of {max_bytes} bytes; download aborted")
            return buf.getvalue()
    except DataError:
        raise
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: download failed: {reason}") from None


def _is_parquet(name: str, head: bytes) -> bool:
    return name.lower().endswith((".parquet", ".pq")) or head[:4] == b"PAR1"


def _need_pyarrow(source: str) -> None:
    if importlib.util.find_spec("pyarrow") is None:  # a dependency of the package: only a broken install lacks it
        raise DataError(f"{source} is Parquet, which needs pyarrow, and pyarrow is not installed")


def read_table_file(path: Path, source: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{source}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise DataError(f"{source}: the file is empty")
    if _is_parquet(path.name, head):
        _need_pyarrow(source)
        return _parse(lambda: pd.read_parquet(path, engine="pyarrow"), source)
    return _parse(lambda: pd.read_csv(path, compression="infer"), source)


def read_table_bytes(data: bytes, name: str, source: str) -> pd.DataFrame:
    if not data:
        raise DataError(f"{source}: the file is empty")
    if _is_parquet(name, data[:4]):
        _need_pyarrow(source)
        return _parse(lambda: pd.read_parquet(io.BytesIO(data), engine="pyarrow"), source)
    compression = "gzip" if name.lower().endswith(".gz") or data[:2] == b"\x1f\x8b" else None
    return _parse(lambda: pd.read_csv(io.BytesIO(data), compression=compression), source)


def _parse(read: Callable[[], pd.DataFrame], source: str) -> pd.DataFrame:
    try:
        return read()
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise DataError(f"{source}: cannot be read as a table: {exc}") from None


# -- typing the columns -----------------------------------------------------------


def _example(values: pd.Series) -> str:
    return repr(values.iloc[0]) if len(values) else "?"


def _numeric_or_none(col: pd.Series) -> tuple[pd.Series | None, pd.Series]:
    """Parse an object column as numbers: (numbers or None when none parse, unparseable values)."""
    present = col.notna()
    parsed = pd.to_numeric(col.where(present), errors="coerce")
    bad = col[present & parsed.isna()]
    return (parsed.astype(np.float64) if (present & parsed.notna()).any() else None), bad


def _is_categorical_dtype(col: pd.Series) -> bool:
    return (
        isinstance(col.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(col.dtype)
        or pd.api.types.is_object_dtype(col.dtype)
        or pd.api.types.is_string_dtype(col.dtype)
    )


def as_categories(col: pd.Series) -> pd.Series:
    """Categories as strings (what the drift profile and the server compare), missing as NaN."""
    return col.astype(object).map(lambda v: np.nan if _isnan(v) else str(v)).astype(object)


def _as_numbers(name: str, col: pd.Series, *, declared: bool) -> pd.Series:
    if pd.api.types.is_bool_dtype(col.dtype):
        raise DataError(f"column {name!r} holds booleans; list it under data.categorical")
    if pd.api.types.is_numeric_dtype(col.dtype):
        return col.astype(np.float64)
    parsed, bad = _numeric_or_none(col)
    if len(bad):
        hint = "list it under data.categorical" if declared else "list it under data.categorical or clean the data"
        raise DataError(
            f"column {name!r} is numeric but holds non-numeric values such as {_example(bad)} "
            f"({len(bad)} of {int(col.notna().sum())}); {hint}"
        )
    return parsed if parsed is not None else col.astype(np.float64)


def _classify_auto(name: str, col: pd.Series) -> str:
    """Kind of a column whose kind the spec leaves open: by dtype, but a text column whose
    values are mostly numbers is an error rather than a category."""
    if not _is_categorical_dtype(col):
        return "numeric"
    if pd.api.types.is_bool_dtype(col.dtype) or isinstance(col.dtype, pd.CategoricalDtype):
        return "categorical"
    present = int(col.notna().sum())
    parsed, bad = _numeric_or_none(col)
    if parsed is None or present == 0:
        return "categorical"
    if len(bad) == 0:
        return "numeric"
    if len(bad) * 2 < present:
        raise DataError(
            f"column {name!r} looks numeric but holds non-numeric values such as {_example(bad)} "
            f"({len(bad)} of {present}); clean the data, or list it under data.categorical to treat it as categories"
        )
    return "categorical"


def prepare(
    frame: pd.DataFrame,
    *,
    target: str,
    features: Sequence[str] | None,
    categorical: Sequence[str] | None,
    task: str | None,
    feedback: pd.DataFrame | None = None,
    min_rows: int = MIN_ROWS,
) -> Dataset:
    """Select and type the columns, append feedback rows, drop rows without a target (at least ``min_rows`` must stay)."""
    if frame.shape[1] == 0 or len(frame) == 0:
        raise DataError("the data has no rows")
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"duplicate column names: {', '.join(map(repr, dup))}")
    if target not in frame.columns:
        raise DataError(f"target column {target!r} is not in the data; columns are: {_list(columns)}")
    declared = features is not None
    if features is None:
        features = [c for c in columns if c != target]
    else:
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise DataError(f"feature column(s) {_list(missing)} not in the data; columns are: {_list(columns)}")
        features = list(features)
    if not features:
        raise DataError("no feature columns: the data has only the target")
    if categorical is not None:
        stray = [c for c in categorical if c not in features]
        if stray:
            raise DataError(f"data.categorical names column(s) {_list(stray)} that are not features")

    dtypes = {f: str(frame[f].dtype) for f in features}
    if categorical is None:
        kinds = {f: _classify_auto(f, frame[f]) for f in features}
    else:
        cat = set(categorical)
        kinds = {f: "categorical" if f in cat else "numeric" for f in features}

    out = _type_columns(frame, features, kinds, target, declared)

    warnings: list[str] = []
    fb_rows = fb_rejected = 0
    if feedback is not None and len(feedback):
        lacking = [c for c in [*features, target] if c not in feedback.columns]
        if lacking:
            warnings.append(f"feedback left out: it has no column(s) {_list(lacking)}")
            feedback = None
    if feedback is not None and len(feedback):
        fb, fb_rejected, warns = _type_feedback(feedback, out, features, kinds, target, task)
        warnings += warns
        fb_rows = len(fb)
        out = pd.concat([out, fb], ignore_index=True)
    out = out.reset_index(drop=True)

    out, dropped = _with_target(out, target, task)
    if len(out) < min_rows:
        raise DataError(f"only {len(out)} row(s) with a target; at least {min_rows} are needed")
    cat_list = [f for f in features if kinds[f] == "categorical"]
    return Dataset(
        frame=out,
        target=target,
        features=list(features),
        categorical=cat_list,
        dtypes=dtypes,
        dropped_missing_target=dropped,
        feedback_rows=fb_rows,
        feedback_rejected=fb_rejected,
        warnings=warnings,
    )


def _type_columns(frame: pd.DataFrame, features: Sequence[str], kinds: dict[str, str], target: str,
                  declared: bool) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for f in features:
        out[f] = as_categories(frame[f]) if kinds[f] == "categorical" else _as_numbers(f, frame[f], declared=declared)
    out[target] = frame[target]
    return out


@dataclass(frozen=True)
class Schema:
    """How :func:`prepare` typed a data set's columns, to type more rows of it the same way (a partition)."""

    target: str
    features: list[str]
    kinds: dict[str, str]
    declared: bool
    """Whether the spec listed the features (the error for text in a numeric column says what to do)."""
    task: str | None

    @classmethod
    def of(cls, ds: Dataset, *, declared: bool, task: str | None) -> Schema:
        return cls(ds.target, list(ds.features), ds.kinds, declared, task)


def type_rows(frame: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, int]:
    """More rows typed as :func:`prepare` typed the first ones: (rows with a target, rows dropped for lacking one)."""
    columns = {str(c) for c in frame.columns}
    missing = [c for c in [*schema.features, schema.target] if c not in columns]
    if missing:
        raise DataError(f"column(s) {_list(missing)} not in every part of the data")
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    return _with_target(_type_columns(frame, schema.features, schema.kinds, schema.target, schema.declared),
                        schema.target, schema.task)


def type_feedback(fb: pd.DataFrame, main: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, int, list[str]]:
    """Feedback rows typed like ``main``'s (see :func:`_type_feedback`), without the rows lacking a label."""
    lacking = [c for c in [*schema.features, schema.target] if c not in fb.columns]
    if lacking:
        return fb.iloc[:0], 0, [f"feedback left out: it has no column(s) {_list(lacking)}"]
    out, rejected, warnings = _type_feedback(fb, main, schema.features, schema.kinds, schema.target, schema.task)
    return _with_target(out, schema.target, schema.task)[0], rejected, warnings


def _with_target(out: pd.DataFrame, target: str, task: str | None) -> tuple[pd.DataFrame, int]:
    """The rows that have a target, the target typed for the task; and how many rows had none."""
    missing = out[target].isna()
    kept = out[~missing].reset_index(drop=True)
    kept[target] = _type_target(kept[target], task)
    return kept, int(missing.sum())


def _type_target(y: pd.Series, task: str | None) -> pd.Series:
    if task == "regression":
        if pd.api.types.is_numeric_dtype(y.dtype) and not pd.api.types.is_bool_dtype(y.dtype):
            return y.astype(np.float64)
        parsed, bad = _numeric_or_none(y)
        if len(bad) or parsed is None:
            raise DataError(f"regression needs a numeric target; it holds values such as {_example(bad if len(bad) else y)}")
        return parsed
    # Classification: labels keep their type, but 0.0/1.0 (floats only because of
    # missing values) become integers.
    if pd.api.types.is_float_dtype(y.dtype):
        arr = y.to_numpy(dtype=np.float64)
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return y.astype(np.int64)
    if pd.api.types.is_object_dtype(y.dtype) or isinstance(y.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(y.dtype):
        values = y.astype(object)
        if not all(isinstance(v, str) for v in values):
            return values.map(str)
        return values
    return y


def _type_feedback(
    fb: pd.DataFrame, main: pd.DataFrame, features: Sequence[str], kinds: dict[str, str], target: str, task: str | None
) -> tuple[pd.DataFrame, int, list[str]]:
    """Feedback rows typed like the training rows.  Left out: rows with text in a numeric
    column, and for classification rows whose label is not a class of the data (the
    server only accepts known classes, so such a row is damaged, e.g. a torn last line)."""
    out = pd.DataFrame(index=fb.index)
    ok = pd.Series(True, index=fb.index)
    for f in features:
        col = fb[f]
        if kinds[f] == "categorical":
            out[f] = as_categories(col)
        else:
            parsed = pd.to_numeric(col, errors="coerce").astype(np.float64)
            ok &= ~(col.notna() & parsed.isna())
            out[f] = parsed
    y = fb[target]
    main_y = main[target]
    if pd.api.types.is_numeric_dtype(main_y.dtype) and not pd.api.types.is_bool_dtype(main_y.dtype):
        parsed = pd.to_numeric(y, errors="coerce")
        ok &= ~(y.notna() & parsed.isna())
        y = parsed
    else:
        y = as_categories(y)
    out[target] = y
    if task == "classification":
        known = {_label_key(v) for v in main_y.dropna().unique()}
        ok &= y.isna() | y.map(lambda v: _label_key(v) in known)
    rejected = int((~ok).sum())
    warnings = [f"{rejected} feedback row(s) had unparseable values or unknown labels and were left out"] if rejected else []
    return out[ok], rejected, warnings


def _label_key(v: Any) -> str:
    """A label as text, with 1.0 and 1 the same (integer labels read as floats because of gaps)."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


MAX_FEEDBACK_OBJECTS = 100_000
"""Feedback objects read for one run at most (one per server flush): bounded, and months of flushes."""


def read_feedback(location: str | os.PathLike[str], namespace: str, model: str, features: Sequence[str] | None, target: str,
                  *, max_bytes: int = 10 * DEFAULT_MAX_DOWNLOAD_BYTES) -> tuple[pd.DataFrame | None, list[str]]:
    """Concatenate ``<location>/<namespace>/<model>/*.csv`` (a directory, or every object under that prefix
    of an ``s3://`` location, in key order); files lacking a needed column are skipped."""
    warnings: list[str] = []
    if str(location).startswith("s3://"):
        files = _s3_feedback(str(location), namespace, model, max_bytes, warnings)
    else:
        base = Path(location) / namespace / model
        if not base.is_dir():
            return None, [f"no feedback for {namespace}/{model}"]
        files = ((path.name, path) for path in sorted(base.glob("*.csv")))
    parts = []
    for name, source in files:
        try:
            part = pd.read_csv(source, dtype=object, keep_default_na=True)
        except pd.errors.EmptyDataError:
            continue
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
            warnings.append(f"feedback file {name} skipped: {exc}")
            continue
        needed = [target, *(features or [])]
        missing = [c for c in needed if c not in part.columns]
        if missing:
            warnings.append(f"feedback file {name} skipped: no column(s) {_list(missing)}")
            continue
        parts.append(part)
    if not parts:
        return None, warnings
    return pd.concat(parts, ignore_index=True), warnings


def _s3_feedback(location: str, namespace: str, model: str, max_bytes: int, warnings: list[str]):  # type: ignore[no-untyped-def]
    """``(name, file-like)`` of each feedback object, at most ``max_bytes`` in all (the newest beyond it are left out)."""
    from ..store.s3 import parse_s3_uri
    from ..store.s3client import Bucket

    bucket_name, prefix = parse_s3_uri(location)
    bucket = Bucket(bucket_name)
    base = "/".join(p for p in (prefix, namespace, model) if p) + "/"
    objects = sorted((o for o in bucket.list(base) if o.key.endswith(".csv")), key=lambda o: o.key)
    if len(objects) > MAX_FEEDBACK_OBJECTS:
        warnings.append(f"{len(objects)} feedback objects; only the first {MAX_FEEDBACK_OBJECTS} are read")
        objects = objects[:MAX_FEEDBACK_OBJECTS]
    total = 0
    for obj in objects:
        total += obj.size
        if total > max_bytes:
            warnings.append(f"feedback beyond {max_bytes} bytes left out (from {obj.key} on)")
            return
        data = bucket.get(obj.key)
        if data is not None:  # deleted since the listing
            yield obj.key[len(base):], io.BytesIO(data)


def data_digest(ds: Dataset) -> str:
    """``sha256:<hex>`` over the rows (features then target, in order), independent of
    pandas internals: per column its name, kind and values in a fixed encoding."""
    h = hashlib.sha256()
    cat = set(ds.categorical)
    h.update(f"rows={len(ds.frame)}\n".encode())
    for name in [*ds.features, ds.target]:
        col = ds.frame[name]
        kind = "categorical" if name in cat else "numeric"
        if name == ds.target:
            kind = "target"
        h.update(f"\x1e{name}\x1f{kind}\x1f".encode())
        if kind == "numeric" or (kind == "target" and pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)):
            arr = np.ascontiguousarray(col.to_numpy(dtype=np.float64))
            arr = np.where(np.isnan(arr), np.nan, arr)  # one NaN bit pattern
            arr = np.where(arr == 0.0, 0.0, arr)  # -0.0 == 0.0
            h.update(arr.astype("<f8").tobytes())
        else:
            for v in col.to_numpy(dtype=object):
                h.update(b"\x00" if _isnan(v) else str(v).encode("utf-8", "surrogatepass") + b"\x1f")
    return "sha256:" + h.hexdigest()


def _isnan(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _list(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
