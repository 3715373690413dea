"""A data set larger than a trainer's memory limit, generated in row groups so no step of making it is large.

15.7 million rows of 16 numeric features (64 levels each, so the Parquet stays
small: 193 MB) and a 0/1 label that is a noisy linear function of them: 2.1 GB
as the trainer's float64 columns. Used by the memory tests of distributed
training, locally (tests/e2e/test_dask_memory.py) and on the one-node cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROWS = 15_700_000
FEATURES = 16
ROW_GROUP = 100_000
"""Rows of one Parquet row group: one partition of a distributed run, a few tens of MB on a worker."""
IN_MEMORY = ROWS * (FEATURES + 1) * 8


def row_groups(rows: int = ROWS) -> Iterator[object]:
    """The data set as pyarrow tables of ROW_GROUP rows (the last one shorter)."""
    import pyarrow as pa

    weights = np.linspace(-1, 1, FEATURES)
    for start in range(0, rows, ROW_GROUP):
        n = min(ROW_GROUP, rows - start)
        rng = np.random.default_rng(start)
        X = rng.integers(0, 64, size=(n, FEATURES)).astype(np.float64) / 8.0
        y = ((X - 4.0) @ weights + rng.normal(0, 1.0, n) > 0).astype(np.int64)
        yield pa.table({**{f"f{j}": X[:, j] for j in range(FEATURES)}, "label": y})


def write_parquet(directory: Path, files: int = 1, rows: int = ROWS) -> list[Path]:
    """The data set as ``files`` Parquet files (part-0.parquet, ...) of whole row groups, in ``directory``."""
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    groups = -(-rows // ROW_GROUP)
    per_file = -(-groups // files)
    paths: list[Path] = []
    writer = None
    try:
        for n, table in enumerate(row_groups(rows)):
            if n % per_file == 0:
                if writer is not None:
                    writer.close()
                paths.append(directory / f"part-{len(paths)}.parquet")
                writer = pq.ParquetWriter(paths[-1], table.schema, compression="zstd")
            writer.write_table(table, row_group_size=ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    return paths
