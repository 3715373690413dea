"""Prometheus metrics of the model server, drift sensor included.

The hot path only touches plain integers and numpy count vectors; the
Prometheus families are built when ``/metrics`` is scraped, by a custom
collector in the server's own ``CollectorRegistry``.  Every series that grows
is a counter, so they add up across replicas and over time.  Names and labels
are documented in ``docs/serving.md``; :mod:`.sensor` parses them back.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..drift.profile import MAX_UNSEEN_NAMES, OTHER_UNSEEN, CategoricalProfile, NumericProfile, Reference

PREFIX = "mlops_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
FLUSH_ROWS = 4096  # rows buffered before the sensor bins them (a scrape always flushes first)
MAX_LABEL_CHARS = 200
FEEDBACK_REASONS = ("unknown", "expired", "duplicate", "invalid")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, v)] += n
        self.sum += v * n

    def family_buckets(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for b, c in zip(self.bounds + (float("inf"),), self.counts):
            acc += c
            out.append(("+Inf" if b == float("inf") else _fmt(b), acc))
        return out


def _fmt(b: float) -> str:
    return str(int(b)) if b == int(b) and b >= 1 else repr(b)


class ServingMetrics:
    """Counters of one server process; ``render()`` gives the exposition text."""

    def __init__(
        self,
        *,
        model: str,
        namespace: str,
        version: str,
        sha256: str,
        task: str,
        classes: Sequence[Any] | None,
        reference: Reference | None,
        drift_sensor: bool,
        feature_names: Sequence[str] = (),
        version_mismatches: Sequence[Mapping[str, str]] = (),
        inference: str = "skops",
    ) -> None:
        self.info = {"namespace": namespace, "model": model, "version": version, "sha256": sha256, "task": task,
                     "inference": inference}
        self.prediction_memory: Any = None
        """The feedback prediction memory (``len()`` requests, ``.pending`` rows), when feedback is on."""
        self.task = task
        self.version_mismatches = [dict(m) for m in version_mismatches]
        self.ready = False
        self.shed: dict[str, int] = {}
        self.requests: dict[tuple[str, str], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.batch_rows = _Histogram(SIZE_BUCKETS)
        self.batch_requests = _Histogram(SIZE_BUCKETS)
        self.predict_seconds = _Histogram(LATENCY_BUCKETS)
        self.prediction_rows = 0
        self.reference = reference
        self.drift_sensor = bool(drift_sensor and reference is not None and reference.features)
        self._lock = threading.Lock()
        self.window = reference.new_window() if reference is not None else None
        self.drift_rows = 0
        # Prediction distribution: class counts (classification), reference bins (regression).
        self.class_counts: dict[str, int] = {str(c): 0 for c in (classes or ())}
        pred = reference.prediction if reference is not None else None
        self.pred_profile = pred if isinstance(pred, NumericProfile) and task == "regression" else None
        self.pred_bins = np.zeros(self.pred_profile.size, dtype=np.int64) if self.pred_profile is not None else None
        # Feedback labels' distribution: class counts (classification), reference label bins (regression).
        label = reference.label if reference is not None else None
        self.label_profile = label if isinstance(label, NumericProfile) and task == "regression" else None
        self.label_bins = np.zeros(self.label_profile.size, dtype=np.int64) if self.label_profile is not None else None
        known = [str(c) for c in (classes or ())]
        if isinstance(label, CategoricalProfile):
            known += [lv for lv in label.levels if lv not in known]
        self.label_classes = frozenset(known)
        # A label equal to a class is counted under that class's name (1 and 1.0 are one class).
        self.class_names: dict[Any, str] = {}
        for c in classes or ():
            try:
                self.class_names[c] = str(c)
            except TypeError:  # an unhashable class: counted by str() only
                pass
        self.label_counts: dict[str, int] = {k: 0 for k in known} if task == "classification" else {}
        # Feedback.
        self.fb_labels = 0
        self.fb_correct = 0
        self.fb_errors = 0
        self.fb_squared_error = 0.0
        self.fb_abs_error = 0.0
        self.fb_rejected = {r: 0 for r in FEEDBACK_REASONS}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]
        self._pending: list[tuple[np.ndarray | None, np.ndarray]] = []
        self._pending_rows = 0
        self.reference_names: list[tuple[str, int]] = []
        if self.drift_sensor:
            self.set_columns(feature_names)

    # -- hot path ----------------------------------------------------------

    def observe_request(self, protocol: str, code: int, seconds: float | None = None) -> None:
        key = (protocol, str(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        if seconds is not None:
            h = self.latency.get(protocol)
            if h is None:
                h = self.latency[protocol] = _Histogram(LATENCY_BUCKETS)
            h.observe(seconds)

    def observe_shed(self, protocol: str) -> None:
        """A request refused because the batching queue was full (it is also counted as a 503)."""
        self.shed[protocol] = self.shed.get(protocol, 0) + 1

    def observe_batch(self, rows: np.ndarray, predictions: np.ndarray, n_requests: int, n_rows: int, seconds: float) -> None:
        """After one predict call (worker thread): batch sizes now; distribution and drift counts buffered.

        The batch is only queued here; rows are binned in bulk every ``FLUSH_ROWS``
        rows and before every scrape, so the per-request cost of the sensor is a
        list append and the numpy work is amortised over thousands of rows.
        """
        self.batch_rows.observe(n_rows)
        self.batch_requests.observe(n_requests)
        self.predict_seconds.observe(seconds)
        self.prediction_rows += n_rows
        with self._lock:
            self._pending.append((rows if self.drift_sensor else None, predictions))
            self._pending_rows += n_rows
            if self._pending_rows >= FLUSH_ROWS:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        pending, self._pending, self._pending_rows = self._pending, [], 0
        if not pending:
            return
        preds = pending[0][1] if len(pending) == 1 else np.concatenate([p for _, p in pending])
        if self.task == "classification":
            values, counts = np.unique(preds, return_counts=True)
            cc = self.class_counts
            for v, c in zip(values.tolist(), counts.tolist()):
                k = str(v)
                cc[k] = cc.get(k, 0) + c
        elif self.pred_profile is not None and self.pred_bins is not None:
            self.pred_bins += self.pred_profile.count(np.asarray(preds, dtype=np.float64))
        if self.drift_sensor and self.window is not None:
            batches = [r for r, _ in pending if r is not None]
            if batches:
                x = batches[0] if len(batches) == 1 else np.concatenate(batches)
                self.window.add({name: x[:, j] for name, j in self.reference_names})
                self.drift_rows += x.shape[0]

    def set_columns(self, feature_names: Sequence[str]) -> None:
        """Map the reference's features onto the columns of the request rows."""
        idx = {n: j for j, n in enumerate(feature_names)}
        ref = self.reference
        if ref is None:
            self.reference_names = []
            return
        self.reference_names = [(n, idx[n]) for n in ref.features if n in idx]
        if len(self.reference_names) != len(ref.features):
            missing = sorted(set(ref.features) - set(idx))
            raise ValueError(f"reference profiles features the model does not take: {', '.join(missing)}")

    def observe_feedback(
        self, *, labels: int = 0, correct: int = 0, errors: int = 0, squared_error: float = 0.0,
        abs_error: float = 0.0, rejected: Mapping[str, int] | None = None, label_values: Sequence[Any] = (),
    ) -> None:
        """Feedback counters; ``label_values`` are the accepted labels themselves (for label drift)."""
        if label_values:
            self._count_labels(label_values)
        self.fb_labels += labels
        self.fb_correct += correct
        self.fb_errors += errors
        self.fb_squared_error += squared_error
        self.fb_abs_error += abs_error
        for r, c in (rejected or {}).items():
            self.fb_rejected[r] = self.fb_rejected.get(r, 0) + c

    def _count_labels(self, values: Sequence[Any]) -> None:
        if self.task == "classification":
            counts = self.label_counts
            for v in values:
                try:
                    k = self.class_names.get(v) or str(v)
                except TypeError:
                    k = str(v)
                if k in counts:
                    counts[k] += 1
                elif k in self.label_classes or len(counts) - len(self.label_classes) < MAX_UNSEEN_NAMES:
                    counts[k] = 1
                else:  # a label the model does not know, beyond the cap: pooled, so the series stay bounded
                    counts[OTHER_UNSEEN] = counts.get(OTHER_UNSEEN, 0) + 1
        elif self.label_profile is not None and self.label_bins is not None:
            self.label_bins += self.label_profile.count(np.asarray(values, dtype=np.float64))

    # -- exposition --------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        p = PREFIX
        g = GaugeMetricFamily(f"{p}model_info", "The model version this server loaded (value 1).", labels=list(self.info))
        g.add_metric(list(self.info.values()), 1)
        yield g
        yield GaugeMetricFamily(f"{p}model_ready", "1 once the model loaded and its warm-up prediction ran.", value=int(self.ready))
        yield GaugeMetricFamily(
            f"{p}model_inconsistent_version",
            "Estimators of the loaded model pickled by another scikit-learn than the one serving it (0: none).",
            value=len(self.version_mismatches),
        )
        iv = GaugeMetricFamily(
            f"{p}model_inconsistent_version_info",
            "One series (value 1) per estimator trained with another scikit-learn.",
            labels=["estimator", "trained_with", "serving_with"],
        )
        for m in self.version_mismatches:
            iv.add_metric([m["estimator"], m["trained_with"], m["serving_with"]], 1)
        yield iv
        yield GaugeMetricFamily(f"{p}drift_sensor_enabled", "1 when the drift sensor counts inputs.", value=int(self.drift_sensor))
        memory = self.prediction_memory
        if memory is not None:
            memory.expire()
            yield GaugeMetricFamily(f"{p}prediction_memory_rows", "Predicted rows remembered for feedback (bounded by count and age).",
                                    value=memory.pending)
            yield GaugeMetricFamily(f"{p}prediction_memory_requests", "Requests whose predictions are remembered for feedback.",
                                    value=len(memory))
            yield GaugeMetricFamily(f"{p}prediction_memory_bytes", "Estimated bytes the remembered predictions hold (bounded).",
                                    value=memory.bytes)

        c = CounterMetricFamily(f"{p}requests", "HTTP requests by protocol and status code.", labels=["protocol", "code"])
        e = CounterMetricFamily(f"{p}request_errors", "HTTP requests answered with a 4xx/5xx code.", labels=["protocol", "code"])
        for (proto, code), n in sorted(self.requests.items()):
            c.add_metric([proto, code], n)
            if code[0] in "45":
                e.add_metric([proto, code], n)
        yield c
        yield e
        sh = CounterMetricFamily(f"{p}requests_shed", "Requests refused with 503 because the batching queue was full.",
                                 labels=["protocol"])
        for proto, n in sorted(self.shed.items()):
            sh.add_metric([proto], n)
        yield sh
        h = HistogramMetricFamily(f"{p}request_duration_seconds", "Time from a request's first byte to its response.", labels=["protocol"])
        for proto, hist in sorted(self.latency.items()):
            h.add_metric([proto], hist.family_buckets(), sum_value=hist.sum)
        yield h
        for name, hist, text in (
            ("batch_rows", self.batch_rows, "Rows per predict call."),
            ("batch_requests", self.batch_requests, "Requests combined into one predict call."),
            ("predict_duration_seconds", self.predict_seconds, "Duration of one predict call (a batch)."),
        ):
            hf = HistogramMetricFamily(f"{p}{name}", text)
            hf.add_metric([], hist.family_buckets(), sum_value=hist.sum)
            yield hf
        yield CounterMetricFamily(f"{p}prediction_rows", "Rows predicted.", value=self.prediction_rows)

        with self._lock:
            self._flush_locked()
            classes = dict(self.class_counts)
            window_feats = None
            if self.window is not None:
                window_feats = {
                    n: (v.copy() if isinstance(v, np.ndarray) else dict(v)) for n, v in self.window.features.items()
                }
            projections = (
                {n: v.copy() for n, v in self.window.projections.items()} if self.window is not None else {}
            )
            drift_rows = self.drift_rows
            pred_bins = self.pred_bins.copy() if self.pred_bins is not None else None
        if self.task == "classification":
            pc = CounterMetricFamily(f"{p}predictions", "Predictions by class.", labels=["class"])
            for k, n in classes.items():
                pc.add_metric([k], n)
            yield pc
        elif pred_bins is not None:
            pb = CounterMetricFamily(
                f"{p}prediction_bin", "Predictions per bin of the reference's prediction profile (last bin: NaN).", labels=["bin"]
            )
            for i, n in enumerate(pred_bins.tolist()):
                pb.add_metric([str(i)], n)
            yield pb

        yield CounterMetricFamily(f"{p}drift_rows", "Rows the drift sensor counted.", value=drift_rows)
        bins = CounterMetricFamily(
            f"{p}drift_bin", "Numeric inputs per reference bin (bins of reference.json, then NaN).", labels=["feature", "bin"]
        )
        cats = CounterMetricFamily(
            f"{p}drift_category", "Categorical inputs per level (unseen levels by name, at most 100, then '(other unseen)').",
            labels=["feature", "category"],
        )
        unseen = CounterMetricFamily(f"{p}drift_unseen", "Categorical inputs of levels absent from the reference.", labels=["feature"])
        if window_feats is not None and self.reference is not None:
            for name, counts in window_feats.items():
                prof = self.reference.features[name]
                if isinstance(counts, np.ndarray):
                    for i, n in enumerate(counts.tolist()):
                        bins.add_metric([name, str(i)], n)
                else:
                    assert isinstance(prof, CategoricalProfile)
                    other = 0
                    for level, n in counts.items():
                        if level not in prof.index:
                            other += n
                        label = level if len(level) <= MAX_LABEL_CHARS else level[: MAX_LABEL_CHARS - 3] + "..."
                        cats.add_metric([name, label], n)
                    unseen.add_metric([name], other)
        yield bins
        yield cats
        yield unseen
        pj = CounterMetricFamily(
            f"{p}drift_projection_bin",
            "Projections of the numeric inputs per bin of the reference's multivariate section (last bin: NaN).",
            labels=["projection", "bin"],
        )
        if self.drift_sensor:
            for name, counts in projections.items():
                for i, n in enumerate(counts.tolist()):
                    pj.add_metric([name, str(i)], n)
        yield pj

        yield CounterMetricFamily(f"{p}feedback_labels", "Labels accepted by the feedback endpoint.", value=self.fb_labels)
        if self.task == "classification":
            yield CounterMetricFamily(f"{p}feedback_correct", "Labelled predictions that were right.", value=self.fb_correct)
            yield CounterMetricFamily(f"{p}feedback_errors", "Labelled predictions that were wrong.", value=self.fb_errors)
        else:
            yield CounterMetricFamily(
                f"{p}feedback_squared_error", "Sum of squared errors of labelled predictions.", value=self.fb_squared_error
            )
            yield CounterMetricFamily(
                f"{p}feedback_absolute_error", "Sum of absolute errors of labelled predictions.", value=self.fb_abs_error
            )
        if self.task == "classification":
            fc = CounterMetricFamily(f"{p}feedback_class", "Accepted feedback labels by class (label drift).", labels=["class"])
            for k, n in list(self.label_counts.items()):
                label = k if len(k) <= MAX_LABEL_CHARS else k[: MAX_LABEL_CHARS - 3] + "..."
                fc.add_metric([label], n)
            yield fc
        elif self.label_bins is not None:
            fb = CounterMetricFamily(
                f"{p}feedback_label_bin", "Accepted feedback labels per bin of the reference's label profile (last bin: NaN).",
                labels=["bin"],
            )
            for i, n in enumerate(self.label_bins.tolist()):
                fb.add_metric([str(i)], n)
            yield fb
        rj = CounterMetricFamily(f"{p}feedback_rejected", "Labels not used, by reason.", labels=["reason"])
        for r, n in self.fb_rejected.items():
            rj.add_metric([r], n)
        yield rj


__all__ = ["CONTENT_TYPE", "OTHER_UNSEEN", "ServingMetrics"]
