"""A distributed run's source as partitions: files and Parquet row groups, on disk and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_operator.runtime.data import DataError
from mlops_operator.runtime.partitions import list_partitions, read_head, read_partition


def _frame(rows: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    return pd.DataFrame({"id": np.arange(start, start + rows), "x": rng.normal(size=rows), "label": rng.integers(0, 2, rows)})


def _parquet(frame: pd.DataFrame, row_group_size: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, row_group_size=row_group_size)
    return buf.getvalue()


def test_dask_a_parquet_file_is_one_partition_per_row_group(tmp_path) -> None:
    (tmp_path / "events.parquet").write_bytes(_parquet(_frame(1000), row_group_size=300))
    parts = list_partitions(f"file://{tmp_path}/events.parquet")
    assert [(p.row_group, p.rows) for p in parts] == [(0, 300), (1, 300), (2, 300), (3, 100)]
    assert read_partition(parts[2])["id"].tolist() == list(range(600, 900))
    assert read_partition(parts[3], columns=["x", "not-there"]).columns.tolist() == ["x"]
    assert read_head(parts[0], rows=5)["id"].tolist() == [0, 1, 2, 3, 4]


def test_dask_a_directory_is_its_tables_in_name_order_without_spark_markers(tmp_path) -> None:
    (tmp_path / "part-1.parquet").write_bytes(_parquet(_frame(50, 50), row_group_size=50))
    (tmp_path / "part-0.parquet").write_bytes(_parquet(_frame(50, 0), row_group_size=25))
    (tmp_path / "nested").mkdir()
    _frame(10, 100).to_csv(tmp_path / "nested" / "extra.csv", index=False)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "_temporary").mkdir()
    _frame(10, 999).to_csv(tmp_path / "_temporary" / "half-written.csv", index=False)
    (tmp_path / "README.txt").write_text("not a table")
    parts = list_partitions(f"file://{tmp_path}")
    assert [(p.location.rsplit("/", 1)[1], p.format, p.row_group) for p in parts] == [
        ("extra.csv", "csv", None), ("part-0.parquet", "parquet", 0), ("part-0.parquet", "parquet", 1),
        ("part-1.parquet", "parquet", 0)]
    ids = pd.concat([read_partition(p) for p in parts])["id"]
    assert sorted(ids) == list(range(110))


def test_dask_sources_without_tables_or_outside_the_claim_are_data_errors(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no .parquet or .csv files"):
        list_partitions(f"file://{tmp_path}")
    with pytest.raises(DataError, match="no such file or directory"):
        list_partitions(f"file://{tmp_path}/missing")
    with pytest.raises(DataError, match="inside the claim"):
        list_partitions("pvc://data/../../etc", pvc_root=tmp_path)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="broken.parquet"):
        list_partitions(f"file://{tmp_path}/broken.parquet")


def test_dask_s3_prefix_partitions_are_read_in_ranges_from_a_real_server(s3_server, monkeypatch) -> None:
    import obstore

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.new_bucket("parts")
    store = s3_server.store(bucket)
    big = _frame(4000)
    obstore.put(store, "train/a.parquet", _parquet(big, row_group_size=1000))
    obstore.put(store, "train/b.csv", _frame(20, 4000).to_csv(index=False).encode())
    obstore.put(store, "train/_SUCCESS", b"")
    obstore.put(store, "trainer-notes/c.csv", _frame(5, 9000).to_csv(index=False).encode())  # a sibling prefix: not ours

    parts = list_partitions(f"s3://{bucket}/train")
    assert [(p.location, p.row_group) for p in parts] == [
        *[(f"s3://{bucket}/train/a.parquet", g) for g in range(4)], (f"s3://{bucket}/train/b.csv", None)]
    third = read_partition(parts[2])
    pd.testing.assert_frame_equal(third, big.iloc[2000:3000].reset_index(drop=True))
    assert read_partition(parts[4])["id"].tolist() == list(range(4000, 4020))
    # One object named exactly is that object.
    assert len(list_partitions(f"s3://{bucket}/train/a.parquet")) == 4
    with pytest.raises(DataError, match="no .parquet or .csv files"):
        list_partitions(f"s3://{bucket}/nothing-here/")
