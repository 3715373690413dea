"""The s3:// model store against a real S3 server (SeaweedFS, tests/s3server.py): layout, atomic versions, digests, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import obstore
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlops_operator.store import ArtifactError, S3ModelStore, StoreError, VersionNotFound, open_store, sha256_hex
from mlops_operator.store.s3client import ClientSettings, store_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def s3_env(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


def _model_bytes(c: float = 1.0) -> bytes:
    X, y = load_iris(return_X_y=True)
    return sio.dumps(LogisticRegression(C=c, max_iter=500).fit(X, y))


def _write(store, version: str = "v1", c: float = 1.0, **extra):
    return store.write_version("ns", "iris", version, _model_bytes(c), {"metrics": {"accuracy": 0.9}, **extra},
                               {"features": {}})


def test_s3_store_round_trip_keeps_the_layout_and_verifies_digests(s3_env) -> None:
    store = open_store(f"s3://{s3_env.new_bucket()}/models", ["sklearn"])
    assert isinstance(store, S3ModelStore)
    written = _write(store)
    assert written.created and str(written.path).endswith("/models/ns/iris/v1/")
    assert store.list_versions("ns", "iris") == ["v1"]
    model = store.load_model("ns", "iris", "v1", expected_sha256=written.metadata["sha256"]["model.skops"])
    assert model.predict(load_iris().data[:1]).tolist() == [0]
    assert store.read_reference("ns", "iris", "v1") == {"features": {}}
    keys = s3_env.keys(store.bucket_name)
    assert keys[-1] == "models/ns/iris/v1/metadata.json"
    assert {k.rsplit("/", 1)[1] for k in keys} == {"metadata.json", "model.skops", "reference.json"}
    with pytest.raises(ArtifactError, match="expected sha256:00"):
        store.load_model("ns", "iris", "v1", expected_sha256="sha256:" + "0" * 64)


def test_s3_version_is_never_overwritten(s3_env) -> None:
    store = open_store(f"s3://{s3_env.new_bucket()}", ["sklearn"])
    first = _write(store, c=1.0)
    second = _write(store, c=0.01)
    assert first.created and not second.created
    assert second.metadata["sha256"] == first.metadata["sha256"]
    data = store.read_file("ns", "iris", "v1", "model.skops")
    assert sha256_hex(data) == first.metadata["sha256"]["model.skops"] != sha256_hex(_model_bytes(0.01))


def test_s3_two_writers_of_one_version_leave_one_version_and_no_stray_objects(s3_env) -> None:
    """The manifest's conditional put decides: the second writer gets the first one's version back."""
    uri = f"s3://{s3_env.new_bucket()}/p"
    a, b = open_store(uri, ["sklearn"]), open_store(uri, ["sklearn"])
    # b decided "not there yet" before a finished: simulate by writing b's objects while a's manifest lands first.
    original_exists = b.exists
    b.exists = lambda *args: False  # type: ignore[method-assign]
    won = _write(a, c=1.0)
    lost = _write(b, c=0.01)
    b.exists = original_exists  # type: ignore[method-assign]
    assert won.created and not lost.created and lost.metadata["files"] == won.metadata["files"]
    keys = s3_env.keys(a.bucket_name)
    assert len(keys) == 3, keys  # the loser deleted its own objects


def test_s3_tampered_artifact_is_refused(s3_env) -> None:
    store = open_store(f"s3://{s3_env.new_bucket()}", ["sklearn"])
    meta = _write(store).metadata
    key = f"ns/iris/v1/{meta['files']['model.skops']}"
    obstore.put(s3_env.store(store.bucket_name), key, _model_bytes(0.01))  # an admin overwrote it
    with pytest.raises(ArtifactError, match="refusing to load"):
        store.load_model("ns", "iris", "v1")


HALF_WRITER = textwrap.dedent("""
    import sys, time
    from mlops_operator.store import open_store
    from mlops_operator.store.s3client import Bucket
    put = Bucket.put_new
    def slow_manifest(self, key, data):
        if key.endswith("/metadata.json"):
            print("objects-written", flush=True)
            time.sleep(60)  # killed here, between the objects and the manifest
        return put(self, key, data)
    Bucket.put_new = slow_manifest
    store = open_store(sys.argv[1])
    store.write_version("ns", "iris", "v1", open(sys.argv[2], "rb").read(), {}, {})
""")


def test_s3_half_written_version_is_never_served(s3_env, tmp_path) -> None:
    """A trainer killed (SIGKILL) after its objects and before the manifest leaves nothing a reader trusts."""
    from mlops_operator.runtime.model_loading import StartupError, load_model

    uri = f"s3://{s3_env.new_bucket()}/models"
    model_file = tmp_path / "model.skops"
    model_file.write_bytes(_model_bytes())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.Popen([sys.executable, "-c", HALF_WRITER, uri, str(model_file)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "objects-written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    store = open_store(uri, ["sklearn"])
    keys = s3_env.keys(store.bucket_name)
    assert {k.rsplit("/", 1)[1] for k in keys} == {"model.skops", "reference.json"}  # orphans, no manifest
    assert store.list_versions("ns", "iris") == [] and not store.exists("ns", "iris", "v1")
    with pytest.raises(VersionNotFound):
        store.load_model("ns", "iris", "v1")
    with pytest.raises(StartupError, match="no version"):
        load_model(uri, "ns", "iris", "v1", None, ["sklearn"])
    # A retried trainer completes the version under its own upload id, and clears what the killed one left.
    written = _write(store)
    assert written.created and store.list_versions("ns", "iris") == ["v1"]
    assert s3_env.keys(store.bucket_name) == sorted(
        ["models/ns/iris/v1/metadata.json", *(f"models/ns/iris/v1/{k}" for k in written.metadata["files"].values())])


def test_s3_wrong_key_is_a_clear_access_denied_without_the_secret(s3_server, monkeypatch) -> None:
    wrong = "definitely-not-the-secret-4242"
    for key, value in s3_server.env(secret_key=wrong).items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.new_bucket()
    store = open_store(f"s3://{bucket}/models")
    with pytest.raises(StoreError) as caught:
        store.list_versions("ns", "iris")
    assert caught.value.reason == "StoreAccessDenied"
    assert f"s3://{bucket}/models/ns/iris/" in str(caught.value) and wrong not in str(caught.value)
    with pytest.raises(StoreError) as caught:
        _write(store)
    assert caught.value.reason == "StoreAccessDenied"


def test_s3_missing_bucket_and_unreachable_endpoint_are_named(s3_env, monkeypatch) -> None:
    with pytest.raises(StoreError) as caught:
        open_store("s3://no-such-bucket-here/models").list_versions("ns", "iris")
    assert caught.value.reason == "StoreBucketMissing"
    # A port nothing listens on: refused at once, reported as unreachable (bounded retries).
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError) as caught:
        open_store("s3://some-bucket/models").check()
    assert caught.value.reason == "StoreUnreachable"


def test_s3_client_settings_from_env() -> None:
    s = ClientSettings.from_env({"AWS_ENDPOINT_URL": "https://minio.example:9000", "AWS_CA_BUNDLE": "/etc/ca/ca.crt",
                                 "AWS_DEFAULT_REGION": "eu-west-1"})
    assert (s.endpoint_url, s.addressing_style, s.region, s.ca_bundle) == ("https://minio.example:9000", "path", "eu-west-1", "/etc/ca/ca.crt")
    assert ClientSettings.from_env({}).addressing_style == "auto"
    with pytest.raises(StoreError, match="MLOPS_S3_ADDRESSING_STYLE"):
        ClientSettings.from_env({"MLOPS_S3_ADDRESSING_STYLE": "sideways"})
    assert not s.virtual_hosted() and ClientSettings.from_env({}).virtual_hosted()
    with pytest.raises(StoreError, match="cannot read the CA bundle /etc/ca/ca.crt") as caught:
        store_for("bucket-a", s)
    assert caught.value.reason == "StoreTLSError"


@pytest.mark.parametrize("uri, problem", [
    ("s3://Bad_Bucket/x", "not a valid bucket"), ("s3://bucket-a/../x", "'..'"), ("ftp://x/y", "unsupported store scheme"),
    ("pvc:///x", "pvc://<claim>"), ("", "empty"),
])
def test_s3_store_uri_errors_name_the_problem(uri, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        open_store(uri)


def test_s3_bucket_that_disappears_mid_run_gives_clear_errors_and_loses_no_feedback(s3_env) -> None:
    from mlops_operator.runtime.feedback import FeedbackWriter

    bucket = s3_env.new_bucket("gone")
    store = open_store(f"s3://{bucket}/models", ["sklearn"])
    _write(store)
    writer = FeedbackWriter(f"s3://{bucket}/feedback", "ns", "iris", ["a", "b", "label"])
    sink = writer.sink
    sink.flush_seconds = 3600.0  # flushes only when asked, so the test decides when
    writer.write([[1.0, 2.0, "x"]])
    assert sink.flush() and len(s3_env.keys(bucket, "feedback/")) == 1

    s3_env.delete_bucket(bucket)
    writer.write([[3.0, 4.0, "y"], [5.0, float("nan"), "z"]])
    assert not sink.flush() and sink.pending_rows == 2  # refused, and kept
    assert f"s3://{bucket}/feedback/ns/iris/" in sink.last_error
    with pytest.raises(StoreError) as caught:
        store.list_versions("ns", "iris")
    assert caught.value.reason == "StoreBucketMissing" and f"s3://{bucket}/models/ns/iris/" in str(caught.value)
    with pytest.raises(StoreError):
        store.load_model("ns", "iris", "v1")

    assert s3_env.admin("PUT", f"/{bucket}") == 200  # the bucket is back (empty: what was in it is the admin's loss)
    writer.close()  # the last flush writes what was kept
    (key,) = s3_env.keys(bucket, "feedback/")
    text = bytes(obstore.get(s3_env.store(bucket), key).bytes()).decode()
    assert text.splitlines() == ["a,b,label", "3.0,4.0,y", "5.0,,z"]


def test_s3_trainer_reports_a_missing_bucket_and_a_wrong_key_as_its_reason(s3_server, monkeypatch, tmp_path) -> None:
    from mlops_operator.runtime import trainer

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    spec = str(ROOT / "examples" / "iris" / "trainingjob.yaml")
    term = tmp_path / "termination-log"
    code = trainer.main(["--spec", spec, "--store", "s3://no-such-bucket-anywhere/models", "--termination-log", str(term)])
    summary = json.loads(term.read_text())
    assert code == 2 and summary["reason"] == "StoreBucketMissing" and "no-such-bucket-anywhere" in summary["message"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-wrong-wrong")
    code = trainer.main(["--spec", spec, "--store", f"s3://{s3_server.new_bucket()}/models", "--termination-log", str(term)])
    summary = json.loads(term.read_text())
    assert code == 2 and summary["reason"] == "StoreAccessDenied" and "wrong-wrong-wrong" not in term.read_text()


def test_s3_operator_reads_reference_profiles_from_the_bucket(s3_env) -> None:
    """With an s3:// store the operator reads a version's reference itself (no serving pod needed)."""
    import asyncio

    from mlops_operator.controllers.settings import Settings
    from mlops_operator.k8s.store_access import reference_loader
    from mlops_operator.sensors import HttpSensors, Unreadable

    uri = f"s3://{s3_env.new_bucket()}/models"
    _write(open_store(uri, ["sklearn"]))
    sensors = HttpSensors(reference_loader=reference_loader(Settings(store_uri=uri)), retry_seconds=0.0)
    reference, metadata = asyncio.run(sensors.reference("ns", "iris", "v1"))
    assert reference == {"features": {}} and metadata["metrics"] == {"accuracy": 0.9}
    with pytest.raises(Unreadable, match="no version 'v9'"):
        asyncio.run(sensors.reference("ns", "iris", "v9"))
    assert reference_loader(Settings()) is None  # a claim: the serving pods answer, as before


def test_s3_error_messages_never_carry_a_secret(monkeypatch) -> None:
    from mlops_operator.store.s3client import scrub

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value-123")
    assert scrub("signed with s3cr3t-value-123 here", {"AWS_SESSION_TOKEN": "tok-9999"}) == "signed with *** here"
    assert scrub("token tok-9999", {"AWS_SESSION_TOKEN": "tok-9999"}) == "token ***"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with pytest.raises(StoreError) as caught:  # a secret key without its key id: refused by name, the value not shown
        open_store("s3://bucket-a/x").bucket.store  # noqa: B018
    assert caught.value.reason == "InvalidStoreSettings" and "Missing AccessKeyId" in str(caught.value)
    assert "s3cr3t-value-123" not in str(caught.value)


def test_s3_training_data_csv_and_parquet(s3_env) -> None:
    import io

    import pandas as pd

    from mlops_operator.runtime.data import DataError, read_source

    bucket = s3_env.new_bucket("data")
    iris = load_iris(as_frame=True).frame.rename(columns={"target": "label"})
    parquet = io.BytesIO()
    iris.to_parquet(parquet)
    admin = s3_env.store(bucket)
    obstore.put(admin, "sets/iris.parquet", parquet.getvalue())
    obstore.put(admin, "sets/iris.csv.gz", __import__("gzip").compress(iris.to_csv(index=False).encode()))
    for key in ("sets/iris.parquet", "sets/iris.csv.gz"):
        frame = read_source(f"s3://{bucket}/{key}", target="label")
        pd.testing.assert_frame_equal(frame.reset_index(drop=True), iris, check_dtype=False)
    with pytest.raises(DataError, match="no such object"):
        read_source(f"s3://{bucket}/sets/missing.csv", target="label")
    # A prefix (final /) is every table under it, in name order, as Dask workers would read it.
    both = read_source(f"s3://{bucket}/sets/", target="label")
    pd.testing.assert_frame_equal(both, pd.concat([iris, iris], ignore_index=True), check_dtype=False)
    with pytest.raises(DataError, match="over the download limit of 1000"):
        read_source(f"s3://{bucket}/sets/", target="label", max_bytes=1000)
    with pytest.raises(DataError, match="more than the limit of 100 bytes"):
        read_source(f"s3://{bucket}/sets/iris.parquet", target="label", max_bytes=100)
    with pytest.raises(DataError, match="the bucket does not exist"):
        read_source("s3://no-such-data-bucket/x.csv", target="label")
    with pytest.raises(DataError, match="name an object"):
        read_source(f"s3://{bucket}", target="label")


def test_s3_manifest_whose_answer_is_lost_is_still_the_version(s3_env) -> None:
    """The manifest reached the server but its answer did not (a dropped connection): no real server drops an
    answer on cue, so the client raises after a real, successful put. The writer must keep its objects."""
    store = open_store(f"s3://{s3_env.new_bucket()}", ["sklearn"])
    put = store.bucket.put_new

    def put_then_lose_the_answer(key: str, data: bytes) -> bool:
        put(key, data)
        if key.endswith("/metadata.json"):
            raise StoreError("StoreUnreachable", "connection reset while reading the answer")
        return True

    store.bucket.put_new = put_then_lose_the_answer  # type: ignore[method-assign]
    written = _write(store)
    assert written.created
    assert store.load_model("ns", "iris", "v1").predict(load_iris().data[:1]).tolist() == [0]
