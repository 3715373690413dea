"""A data source as partitions that the Dask workers read themselves.

A distributed TrainingJob exists for data that no one pod can hold, the
runner's included. So the runner only lists the source's partitions (files,
and Parquet row groups inside them) and reads a few rows of the first for the
columns' types; each worker reads its own partitions from the source: a local
or mounted path (``file://``, ``pvc://``) or an ``s3://`` object, read with
ranged requests so a worker fetches the row groups it needs and no more.

- ``file:///data/events.parquet``: one file, one partition per row group;
- ``file:///data/events/`` or ``s3://bucket/events/``: every ``.parquet``,
  ``.pq``, ``.csv`` or ``.csv.gz`` file under it, in name order (names starting
  with ``_`` or ``.``, such as Spark's ``_SUCCESS``, are skipped);
- a CSV file is one partition: split a large CSV into several files, or use
  Parquet, whose row groups partition it.

Other sources (``sklearn://``, ``https://``) are read whole by the runner, as
the single-pod trainer reads them (they are bounded by the download limit),
and cut into in-memory partitions.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from .data import DEFAULT_PVC_ROOT, DataError, local_path

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
MAX_PARTITIONS = 20_000
"""Partitions of one source at most: a bound on the listing and on the task graph."""
HEAD_ROWS = 10_000
"""Rows of the first partition the runner reads to type the columns."""
READ_BUFFER_BYTES = 8 << 20
"""Read-ahead of an ``s3://`` object: one request per 8 MiB of a row group, not one per page."""


@dataclass(frozen=True)
class Partition:
    """One piece of the source a worker reads on its own: a file or object, and a row group of it."""

    location: str
    """A local path, or ``s3://bucket/key``."""
    format: str
    """``parquet`` or ``csv``."""
    row_group: int | None = None
    rows: int | None = None
    """Rows in it, when the file's metadata says (Parquet)."""
    size: int | None = None
    """The file's or object's size in bytes (an s3 reader needs it)."""


def is_partitioned(source: str) -> bool:
    """Whether the workers read this source themselves (else the runner reads it whole)."""
    return source.split("://", 1)[0] in ("file", "pvc", "s3")


def list_partitions(source: str, *, pvc_root: str | Path = DEFAULT_PVC_ROOT) -> list[Partition]:
    """The partitions of a ``file://``, ``pvc://`` or ``s3://`` source, in a fixed order."""
    files = list(_s3_files(source) if source.startswith("s3://") else _local_files(source, Path(pvc_root)))
    if not files:
        raise DataError(f"{source}: no .parquet or .csv files there")
    parts: list[Partition] = []
    for location, fmt, size in files:
        if fmt == "csv":
            parts.append(Partition(location, "csv", size=size))
        else:
            meta = _parquet_file(location, size).metadata
            parts += [Partition(location, "parquet", g, meta.row_group(g).num_rows, size) for g in range(meta.num_row_groups)
                      if meta.row_group(g).num_rows > 0]
        if len(parts) > MAX_PARTITIONS:
            raise DataError(f"{source}: more than {MAX_PARTITIONS} partitions; use larger files or row groups")
    if not parts:
        raise DataError(f"{source}: the data has no rows")
    return parts


def read_partition(part: Partition | pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """A partition's rows (on a worker); ``columns`` limits what a Parquet read fetches."""
    if isinstance(part, pd.DataFrame):
        return part
    try:
        if part.format == "parquet":
            pf = _parquet_file(part.location, part.size)
            wanted = [c for c in columns if c in pf.schema_arrow.names] if columns else None
            return pf.read_row_group(part.row_group or 0, columns=wanted).to_pandas()
        with _open(part.location, part.size) as fh:
            return pd.read_csv(fh, compression="gzip" if part.location.endswith(".gz") else None)
    except DataError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise DataError(f"{describe(part)}: cannot be read as a table: {exc}") from None


def read_head(part: Partition | pd.DataFrame, rows: int = HEAD_ROWS) -> pd.DataFrame:
    """The first ``rows`` rows of a partition, without reading the rest of it."""
    if isinstance(part, pd.DataFrame):
        return part.head(rows)
    try:
        if part.format == "parquet":
            pf = _parquet_file(part.location, part.size)
            batch = next(pf.iter_batches(batch_size=rows, row_groups=[part.row_group or 0]), None)
            return batch.to_pandas() if batch is not None else pf.schema_arrow.empty_table().to_pandas()
        with _open(part.location, part.size) as fh:
            return pd.read_csv(fh, nrows=rows, compression="gzip" if part.location.endswith(".gz") else None)
    except pd.errors.EmptyDataError:
        raise DataError(f"{describe(part)}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise DataError(f"{describe(part)}: cannot be read as a table: {exc}") from None


def describe(part: Partition | pd.DataFrame) -> str:
    if isinstance(part, pd.DataFrame):
        return "the data"
    return part.location + (f" (row group {part.row_group})" if part.row_group is not None else "")


# -- listing ------------------------------------------------------------------------------


def _format(name: str) -> str | None:
    lower = name.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def _skipped(relative: PurePosixPath) -> bool:
    return any(p.startswith(("_", ".")) for p in relative.parts)


def _local_files(source: str, pvc_root: Path) -> Iterator[tuple[str, str, int]]:
    path = local_path(source, pvc_root)
    if path.is_file():
        with path.open("rb") as fh:
            fmt = _format(path.name) or ("parquet" if fh.read(4) == b"PAR1" else "csv")
        yield str(path), fmt, path.stat().st_size
        return
    if not path.is_dir():
        raise DataError(f"{source}: no such file or directory")
    for n, child in enumerate(sorted(p for p in path.rglob("*") if p.is_file())):
        if n > 10 * MAX_PARTITIONS:
            raise DataError(f"{source}: too many files")
        fmt = _format(child.name)
        if fmt and not _skipped(PurePosixPath(child.relative_to(path).as_posix())):
            yield str(child), fmt, child.stat().st_size


def _s3_files(source: str) -> Iterator[tuple[str, str, int]]:
    from ..store.s3 import parse_s3_uri
    from ..store.s3client import Bucket

    try:
        bucket, key = parse_s3_uri(source)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    store = Bucket(bucket)
    if key and not source.endswith("/"):
        exact = store.stat(key)
        if exact is not None:
            yield source, _format(key) or "parquet", exact.size
            return
    prefix = f"{key}/" if key else ""
    for n, obj in enumerate(sorted(store.list(prefix), key=lambda o: o.key)):
        if n > 10 * MAX_PARTITIONS:
            raise DataError(f"{source}: too many objects")
        fmt = _format(obj.key)
        if fmt and not _skipped(PurePosixPath(obj.key[len(prefix):])):
            yield f"s3://{bucket}/{obj.key}", fmt, obj.size


# -- reading ------------------------------------------------------------------------------


def _open(location: str, size: int | None) -> Any:
    """A seekable binary file: a local file, or an ``s3://`` object read in ranges."""
    if not location.startswith("s3://"):
        return open(location, "rb")
    import obstore

    from ..store.s3 import parse_s3_uri
    from ..store.s3client import Bucket, _error

    bucket, key = parse_s3_uri(location)
    try:
        return _RangedObject(obstore.open_reader(Bucket(bucket).store, key, buffer_size=READ_BUFFER_BYTES, size=size))
    except Exception as exc:
        raise _error(exc, location) from None


class _RangedObject(io.RawIOBase):
    """obstore's reader of an object (ranged GETs) as the standard binary file pyarrow and pandas expect."""

    def __init__(self, reader: Any) -> None:
        super().__init__()
        self._reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = memoryview(self._reader.read(len(buffer)))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._reader.seek(offset, whence))

    def tell(self) -> int:
        return int(self._reader.tell())

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def _parquet_file(location: str, size: int | None) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(_open(location, size) if location.startswith("s3://") else location)
    except (OSError, ValueError) as exc:
        raise DataError(f"{location}: cannot be read as Parquet: {exc}") from None
