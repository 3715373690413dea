"""Prediction memory, feedback matching and the sensor's snapshot arithmetic (pure, no HTTP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlops_operator.runtime.feedback import FeedbackProcessor, PredictionMemory
from mlops_operator.runtime.protocol import FeedbackItem, Schema
from mlops_operator.runtime.sensor import FeedbackCounters, SensorSnapshot


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_memory_evicts_oldest_by_rows_and_expires_by_age() -> None:
    clock = Clock()
    mem = PredictionMemory(keep_seconds=10, max_pending=5, clock=clock)
    mem.remember("a", np.zeros((3, 2)), np.array([0, 1, 2]))
    clock.t = 1
    mem.remember("b", np.zeros((2, 2)), np.array([1, 1]))
    assert mem.pending == 5
    clock.t = 2
    mem.remember("c", np.zeros((1, 2)), np.array([2]))
    assert mem.lookup("a:0")[0] == "unknown"  # evicted for room
    assert mem.lookup("b:1")[0] == "ok"
    assert mem.lookup("b:1")[0] == "duplicate"
    assert mem.lookup("b:2")[0] == "unknown" and mem.lookup("b")[0] == "unknown" and mem.lookup("c:x")[0] == "unknown"
    clock.t = 11.5
    assert mem.lookup("b:0")[0] == "expired"
    assert mem.lookup("c:0")[0] == "ok"
    mem.remember("d", np.zeros((1, 2)), np.array([0]))
    assert len(mem) == 2  # b aged out on insert; c (t=2) and d remain


def test_memory_holds_at_most_its_byte_bound() -> None:
    """What the memory holds, measured by tracemalloc, stays within max_bytes however many requests come.

    Unbounded in bytes, 100,000 one-row requests (the row bound) held about 60 MB: the server's growth under load.
    """
    import tracemalloc

    from mlops_operator.runtime.feedback import ENTRY_OVERHEAD_BYTES, IdFactory

    bound = 1 << 20
    mem = PredictionMemory(keep_seconds=3600, max_pending=100_000, max_bytes=bound)
    ids = IdFactory()
    batch_predictions = np.zeros(16, dtype=np.int64)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):  # ~12 MiB if nothing were forgotten
            mem.remember(ids(), np.full((1, 20), float(i)), batch_predictions[i % 16 : i % 16 + 1])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert mem.bytes <= bound and held <= 1.15 * bound, (mem.bytes, held)
    assert len(mem) == mem.pending and 1000 < len(mem) < 20_000  # a bound, not an empty memory
    assert held >= 0.7 * mem.bytes  # the estimate (ENTRY_OVERHEAD_BYTES) is close to what is really held
    assert mem.lookup(f"{ids.prefix}-20000:0")[0] == "ok" and mem.lookup(f"{ids.prefix}-1:0")[0] == "unknown"
    assert ENTRY_OVERHEAD_BYTES > 0


def test_memory_forgets_aged_entries_without_new_traffic() -> None:
    clock = Clock()
    mem = PredictionMemory(keep_seconds=10, max_pending=1000, clock=clock)
    mem.remember("a", np.zeros((2, 3)), np.array([0, 1]))
    assert mem.pending == 2 and mem.bytes > 0
    clock.t = 10.5
    mem.expire()  # what a scrape of /metrics does
    assert len(mem) == 0 and mem.pending == 0 and mem.bytes == 0


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def observe_feedback(self, **kw: object) -> None:
        self.calls.append(kw)


def test_processor_counts_and_reports() -> None:
    schema = Schema.from_metadata({"task": "classification", "classes": ["no", "yes"], "features": ["x"]})
    mem = PredictionMemory(100, 100)
    mem.remember("r", np.array([[1.0], [2.0]]), np.array(["yes", "no"], dtype=object))
    rec = Recorder()
    resp = FeedbackProcessor(schema, mem, rec, None).apply(
        [FeedbackItem("r:0", "yes"), FeedbackItem("r:1", "yes"), FeedbackItem("r:1", "no"), FeedbackItem("q:0", "no"),
         FeedbackItem("r:0", "maybe")]
    )
    assert resp == {"accepted": 2, "unknown": ["q:0"], "duplicate": ["r:1"], "invalid": ["r:0"]}
    assert rec.calls[0]["correct"] == 1 and rec.calls[0]["errors"] == 1 and rec.calls[0]["labels"] == 2


def test_snapshot_delta_merge_and_restart() -> None:
    a = SensorSnapshot(version="v1", rows=10, prediction_rows=10, bins={"x": np.array([4, 6, 0])},
                       categories={"c": {"red": 7, "blue": 3}}, predictions={"0": 6, "1": 4},
                       feedback=FeedbackCounters(labels=2, correct=1, errors=1), requests={("v1", "200"): 5})
    b = SensorSnapshot(version="v1", rows=15, prediction_rows=15, bins={"x": np.array([6, 8, 1])},
                       categories={"c": {"red": 9, "blue": 4, "pink": 2}}, predictions={"0": 9, "1": 6},
                       feedback=FeedbackCounters(labels=3, correct=2, errors=1), requests={("v1", "200"): 8})
    d = b.delta(a)
    assert d.rows == 5 and d.bins["x"].tolist() == [2, 2, 1]
    assert d.categories["c"] == {"red": 2, "blue": 1, "pink": 2}
    assert d.predictions == {"0": 3, "1": 2} and d.feedback.labels == 1 and d.requests[("v1", "200")] == 3
    assert a.delta(b) is a  # counters went down: the server restarted
    assert b.delta(SensorSnapshot(version="v0")) is b
    m = a.merge(b)
    assert m.rows == 25 and m.bins["x"].tolist() == [10, 14, 1] and m.feedback.error_rate == 2 / 5
    w = d.window_dict()
    assert w["features"]["x"] == [2, 2, 1] and w["rows"] == 5


def test_server_exposes_the_memory_and_keeps_it_within_its_bound(tmp_path: Path) -> None:
    """Over real HTTP: 150 predictions against a 20 kB bound; the gauges show the memory full, not over."""
    from prometheus_client.parser import text_string_to_metric_families

    from .test_server_support import Server, make_store

    models = make_store(tmp_path)
    _, X, _ = models["iris"]
    s = Server("--store", str(tmp_path), "--model", "iris", "--feedback-max-bytes", "20000")
    try:
        for i in range(150):
            status, _, _ = s.request("POST", "/v1/models/iris:predict", {"instances": [X[i % len(X)].tolist()]})
            assert status == 200
        samples = {m.name: m.value for f in text_string_to_metric_families(s.metrics()) for m in f.samples}
    finally:
        assert s.stop() == 0
    assert 0 < samples["mlops_prediction_memory_bytes"] <= 20000
    assert 0 < samples["mlops_prediction_memory_requests"] < 150
    assert samples["mlops_prediction_memory_rows"] == samples["mlops_prediction_memory_requests"]


def test_label_counts_stay_bounded_and_round_trip_through_metrics() -> None:
    """Labels of a model without a class list are arbitrary strings: beyond 100 unknown ones they pool."""
    from mlops_operator.drift.profile import MAX_UNSEEN_NAMES, OTHER_UNSEEN
    from mlops_operator.runtime.sensor import parse_metrics
    from mlops_operator.runtime.serving_metrics import ServingMetrics

    m = ServingMetrics(model="m", namespace="ns", version="v1", sha256="0" * 64, task="classification",
                       classes=["no", "yes"], reference=None, drift_sensor=False)
    m.observe_feedback(labels=3, label_values=["yes", "yes", "no"])
    m.observe_feedback(labels=MAX_UNSEEN_NAMES + 5, label_values=[f"junk{i}" for i in range(MAX_UNSEEN_NAMES + 5)])
    snap = parse_metrics(m.render().decode())
    assert isinstance(snap.labels, dict)
    assert snap.labels["yes"] == 2 and snap.labels["no"] == 1
    assert len(snap.labels) == 2 + MAX_UNSEEN_NAMES + 1 and snap.labels[OTHER_UNSEEN] == 5
    assert sum(snap.labels.values()) == snap.feedback.labels
    numbered = ServingMetrics(model="m", namespace="ns", version="v1", sha256="0" * 64, task="classification",
                              classes=[0.0, 1.0], reference=None, drift_sensor=False)
    numbered.observe_feedback(labels=2, label_values=[1, 1.0])  # JSON 1 is the class 1.0
    assert parse_metrics(numbered.render().decode()).labels == {"0.0": 0, "1.0": 2}


def test_snapshot_delta_and_merge_carry_labels_and_projections() -> None:
    a = SensorSnapshot(version="v1", rows=10, labels={"no": 2, "yes": 1}, projections={"x~y": np.array([3, 7, 0])})
    b = SensorSnapshot(version="v1", rows=14, labels={"no": 2, "yes": 4}, projections={"x~y": np.array([5, 8, 1])})
    d = b.delta(a)
    assert d.labels == {"no": 0, "yes": 3} and d.projections["x~y"].tolist() == [2, 1, 1]
    assert d.window_dict()["projections"] == {"x~y": [2, 1, 1]}
    assert a.merge(b).projections["x~y"].tolist() == [8, 15, 1] and a.merge(b).labels == {"no": 4, "yes": 5}
    restarted = SensorSnapshot(version="v1", rows=20, labels={"no": 2, "yes": 4}, projections={"x~y": np.array([1, 1, 1])})
    assert restarted.delta(b) is restarted, "a projection counter that went down means a restart"
    bins = SensorSnapshot(version="v1", labels=np.array([1, 2, 0]))
    assert bins.merge(SensorSnapshot(version="v1", labels=np.array([0, 1, 1]))).labels.tolist() == [1, 3, 1]
