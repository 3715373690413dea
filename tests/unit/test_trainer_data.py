"""Reading and typing training data: sources, size limits, column kinds, digest."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_operator.runtime import data
from mlops_operator.runtime.data import DataError, data_digest, prepare, read_source, to_matrix

CSV = "a,b,label\n" + "".join(f"{i},{'xy'[i % 2]},{i % 3}\n" for i in range(30))


def test_sklearn_source_maps_class_names_and_renames_target() -> None:
    frame = read_source("sklearn://iris", target="species")
    assert "species" in frame.columns and "target" not in frame.columns
    assert set(frame["species"]) == {"setosa", "versicolor", "virginica"}
    digits = read_source("sklearn://digits", target="digit")
    assert digits.shape == (1797, 65) and set(digits["digit"]) == set(range(10))
    reg = read_source("sklearn://diabetes", target="progression")
    assert reg["progression"].dtype == np.float64


def test_unknown_sklearn_dataset() -> None:
    with pytest.raises(DataError, match="unknown scikit-learn data set 'titanic'; available: iris"):
        read_source("sklearn://titanic", target="y")


def test_pvc_source_maps_to_the_mount_root(tmp_path: Path) -> None:
    (tmp_path / "claim-a" / "sets").mkdir(parents=True)
    (tmp_path / "claim-a" / "sets" / "d.csv").write_text(CSV)
    frame = read_source("pvc://claim-a/sets/d.csv", target="label", pvc_root=tmp_path)
    assert list(frame.columns) == ["a", "b", "label"] and len(frame) == 30
    with pytest.raises(DataError, match="inside the claim"):
        read_source("pvc://claim-a/../secret.csv", target="label", pvc_root=tmp_path)
    with pytest.raises(DataError, match="no such file"):
        read_source("pvc://claim-a/missing.csv", target="label", pvc_root=tmp_path)


def test_a_folder_is_its_tables_in_name_order_with_the_same_columns(tmp_path: Path) -> None:
    """A folder of part files (Spark's, say): the single-pod trainer reads what Dask workers would, in one frame."""
    folder = tmp_path / "claim-a" / "events"
    folder.mkdir(parents=True)
    rows = CSV.splitlines()
    (folder / "part-1.csv").write_text("\n".join([rows[0], *rows[11:]]) + "\n")
    (folder / "part-0.csv").write_text("\n".join(rows[:11]) + "\n")
    (folder / "_SUCCESS").write_text("")
    (folder / "notes.txt").write_text("not a table")
    frame = read_source("pvc://claim-a/events", target="label", pvc_root=tmp_path)
    pd.testing.assert_frame_equal(frame, pd.read_csv(io.StringIO(CSV)))
    (folder / "part-2.csv").write_text("a,label\n1,x\n")
    with pytest.raises(DataError, match="part-2.csv has the columns \\['a', 'label'\\]"):
        read_source(f"file://{folder}", target="label")


def test_gzip_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()))
    assert len(read_source(path.as_uri(), target="label")) == 30


def test_parquet_with_pyarrow(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.read_csv(__import__("io").StringIO(CSV)).to_parquet(path)
    assert len(read_source(path.as_uri(), target="label")) == 30


def test_garbage_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\n1,2,3,4\n\xff\xfe\x00")
    with pytest.raises(DataError, match="cannot be read as a table"):
        read_source(path.as_uri(), target="b")


def test_plain_http_is_refused_without_the_test_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.TEST_ALLOW_LOOPBACK_HTTP_ENV, raising=False)
    with pytest.raises(DataError, match="unsupported data source"):
        read_source("http://127.0.0.1:9/d.csv", target="label")


# The https:// path cannot reach the internet from the tests, so it is exercised
# against a local http.server on 127.0.0.1: the test-only environment switch
# MLOPS_TRAINER_TEST_ALLOW_LOOPBACK_HTTP=1 lets http://127.0.0.1 through the same
# streaming download code (size limit included).  Nothing else accepts plain http.


@pytest.fixture()
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    monkeypatch.setenv(data.TEST_ALLOW_LOOPBACK_HTTP_ENV, "1")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_download_over_loopback(http_root: tuple[str, Path]) -> None:
    base, root = http_root
    (root / "d.csv").write_text(CSV)
    frame = read_source(f"{base}/d.csv", target="label")
    assert len(frame) == 30
    with pytest.raises(DataError, match="HTTP 404"):
        read_source(f"{base}/missing.csv", target="label")


def test_download_size_limit_aborts(http_root: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = http_root
    (root / "big.csv").write_text(CSV * 50)
    with pytest.raises(DataError, match="limit of 1000 bytes"):
        read_source(f"{base}/big.csv", target="label", max_bytes=1000)

    # Without a Content-Length the stream is cut off as it passes the limit.
    class NoLength:
        headers: dict[str, str] = {}

        def __init__(self) -> None:
            self.sent = 0

        def read(self, n: int) -> bytes:
            self.sent += n
            return b"x" * n

        def __enter__(self) -> "NoLength":
            return self

        def __exit__(self, *a: object) -> None:
            pass

    body = NoLength()
    monkeypatch.setattr(data.urllib.request.OpenerDirector, "open", lambda self, req, timeout=None: body)
    with pytest.raises(DataError, match="download aborted"):
        data.download("https://example.invalid/d.csv", max_bytes=5000, chunk=1024)
    assert body.sent <= 5000 + 1024


def test_missing_targets_are_dropped_and_counted() -> None:
    frame = pd.DataFrame({"x": np.arange(20.0), "y": [float(i % 2) if i % 4 else np.nan for i in range(20)]})
    ds = prepare(frame, target="y", features=None, categorical=None, task="classification")
    assert ds.dropped_missing_target == 5 and len(ds.frame) == 15
    assert ds.frame["y"].dtype == np.int64  # 0.0/1.0 were floats only because of the gaps


def test_kinds_from_dtypes() -> None:
    n = 20
    frame = pd.DataFrame({
        "num": np.linspace(0, 1, n),
        "ints": np.arange(n),
        "text": ["a", "b"] * (n // 2),
        "flag": [True, False] * (n // 2),
        "cat": pd.Categorical(["u", "v"] * (n // 2)),
        "numtext": [str(i) for i in range(n)],
        "y": [0, 1] * (n // 2),
    })
    ds = prepare(frame, target="y", features=None, categorical=None, task="classification")
    assert ds.kinds == {"num": "numeric", "ints": "numeric", "text": "categorical", "flag": "categorical",
                        "cat": "categorical", "numtext": "numeric"}
    assert ds.frame["flag"].tolist()[:2] == ["True", "False"]
    X = ds.matrix()
    assert X.dtype == object and X.shape == (n, 6)
    assert isinstance(X[0, 0], float) and X[0, 2] == "a"


def test_declared_categorical_must_be_a_feature() -> None:
    frame = pd.DataFrame({"x": np.arange(20.0), "y": [0, 1] * 10})
    with pytest.raises(DataError, match="not features"):
        prepare(frame, target="y", features=["x"], categorical=["z"], task="classification")


def test_boolean_column_declared_numeric_is_refused() -> None:
    frame = pd.DataFrame({"x": [True, False] * 10, "z": np.arange(20.0), "y": [0, 1] * 10})
    with pytest.raises(DataError, match="booleans"):
        prepare(frame, target="y", features=None, categorical=["z"], task="classification")


def test_mostly_text_column_is_categorical() -> None:
    frame = pd.DataFrame({"code": ["a", "b", "c", "7"] * 5, "y": [0, 1] * 10})
    ds = prepare(frame, target="y", features=None, categorical=None, task="classification")
    assert ds.categorical == ["code"]


def test_digest_is_order_and_value_sensitive() -> None:
    frame = pd.DataFrame({"x": np.arange(20.0), "c": ["a", "b"] * 10, "y": [0, 1] * 10})
    d1 = data_digest(prepare(frame, target="y", features=None, categorical=None, task="classification"))
    d2 = data_digest(prepare(frame.copy(), target="y", features=None, categorical=None, task="classification"))
    assert d1 == d2
    changed = frame.copy()
    changed.loc[0, "x"] = 0.5
    assert data_digest(prepare(changed, target="y", features=None, categorical=None, task="classification")) != d1
    swapped = frame[["c", "x", "y"]]
    assert data_digest(prepare(swapped, target="y", features=None, categorical=None, task="classification")) != d1


def test_to_matrix_float_when_all_numeric() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan]})
    X = to_matrix(frame, ["b", "a"], [])
    assert X.dtype == np.float64 and X[0].tolist() == [0.5, 1.0] and np.isnan(X[1, 0])


def test_feedback_is_typed_like_the_data() -> None:
    frame = pd.DataFrame({"x": np.arange(20.0), "c": ["a", "b"] * 10, "y": [0, 1] * 10})
    # As read from the server's CSV: every cell text, missing cells NaN.
    fb = pd.DataFrame({"x": ["1.5", "2", "bad", np.nan], "c": ["a", np.nan, "b", "z"], "y": ["1", "0", "1", "7"]}, dtype=object)
    ds = prepare(frame, target="y", features=None, categorical=None, task="classification", feedback=fb)
    assert ds.feedback_rows == 2 and ds.feedback_rejected == 2  # 'bad' is not a number, 7 is not a class
    tail = ds.frame.tail(2)
    assert tail["x"].tolist() == [1.5, 2.0] and tail["y"].tolist() == [1, 0]
    assert tail["c"].iloc[0] == "a" and np.isnan(tail["c"].iloc[1])
    assert ds.frame["y"].dtype == np.int64


def test_feedback_without_a_feature_column_is_left_out() -> None:
    frame = pd.DataFrame({"x": np.arange(20.0), "c": ["a", "b"] * 10, "y": [0, 1] * 10})
    fb = pd.DataFrame({"x": ["1"], "y": ["1"]}, dtype=object)
    ds = prepare(frame, target="y", features=None, categorical=None, task="classification", feedback=fb)
    assert ds.feedback_rows == 0 and "no column(s) 'c'" in ds.warnings[0]


def test_read_feedback_skips_files_lacking_columns(tmp_path: Path) -> None:
    folder = tmp_path / "ns" / "m"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("x,c,y\n1,a,0\n2,,1\n")
    (folder / "b.csv").write_text("x,y\n3,1\n")  # written for an older feature set
    (folder / "c.csv").write_text("")
    fb, warnings = data.read_feedback(tmp_path, "ns", "m", ["x", "c"], "y")
    assert len(fb) == 2 and warnings == ["feedback file b.csv skipped: no column(s) 'c'"]
    assert data.read_feedback(tmp_path, "ns", "other", ["x"], "y") == (None, ["no feedback for ns/other"])
