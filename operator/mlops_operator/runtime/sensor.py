"""Read the model server's ``/metrics`` back into counts: :func:`parse_metrics`.

The DriftPolicy controller scrapes each serving pod and needs the drift
sensor's counters as vectors, not Prometheus text.  A :class:`SensorSnapshot`
holds one scrape; ``later.delta(earlier)`` gives the counts of the interval
between two scrapes (a counter that went down means the pod restarted, so the
later scrape counts from zero), ``merge`` adds replicas, and
``window_dict()`` has the layout of ``WindowCounts.to_dict()`` so
``WindowCounts.from_dict(reference, snapshot.window_dict())`` feeds the drift
statistics directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, NamedTuple

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

PREFIX = "mlops_"

_SAMPLE = re.compile(r'(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
                     r'(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
                     r'[ \t]+(?P<value>\S+)(?:[ \t]+\S+)?[ \t]*')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


class _Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float


class _Family(NamedTuple):
    samples: list[_Sample]


def _families(text: str) -> Iterator[Any]:
    """Our samples of an exposition text, as one family; prometheus_client's parser when a line is not plain.

    A DriftPolicy check parses the ``/metrics`` of every serving pod; the
    general parser (a character at a time) was most of a 100-pod check. Ours
    reads only lines with our prefix, one regular expression each, and hands
    anything it does not recognise to the general parser.
    """
    samples = []
    for line in text.splitlines():
        if not line.startswith(PREFIX):
            continue
        m = _SAMPLE.fullmatch(line)
        if m is None:
            yield from text_string_to_metric_families(text)
            return
        try:
            value = float(m["value"])
        except ValueError:
            yield from text_string_to_metric_families(text)
            return
        labels = {k: _UNESCAPE.sub(_unescaped, v) if "\\" in v else v for k, v in _LABEL.findall(m["labels"] or "")}
        samples.append(_Sample(m["name"], labels, value))
    yield _Family(samples)


def _unescaped(m: re.Match[str]) -> str:
    return "\n" if m[1] == "n" else m[1]


@dataclass
class FeedbackCounters:
    """Ground-truth feedback the server received."""

    labels: int = 0
    correct: int = 0
    errors: int = 0
    squared_error: float = 0.0
    absolute_error: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        n = self.correct + self.errors
        return self.errors / n if n else None

    @property
    def rmse(self) -> float | None:
        return (self.squared_error / self.labels) ** 0.5 if self.labels else None


@dataclass
class SensorSnapshot:
    """One scrape of one server: model identity and every counter the drift check needs.

    ``bins[feature]`` is the count vector of a numeric feature in the layout of
    the reference profile (its bins, then NaN); ``categories[feature]`` maps
    level (unseen ones by name, capped) to count and ``unseen[feature]`` is the
    unseen slot; ``predictions`` is ``{class: count}`` for classification or the
    count vector over the reference's prediction bins for regression;
    ``labels`` likewise for the accepted feedback labels (label drift), and
    ``projections[name]`` the count vector of one projection of the
    reference's multivariate section.
    """

    model: str | None = None
    namespace: str | None = None
    version: str | None = None
    sha256: str | None = None
    task: str | None = None
    ready: bool = False
    sensor_enabled: bool = False
    rows: int = 0
    prediction_rows: int = 0
    bins: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[str, dict[str, int]] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)
    predictions: dict[str, int] | np.ndarray | None = None
    labels: dict[str, int] | np.ndarray | None = None
    projections: dict[str, np.ndarray] = field(default_factory=dict)
    feedback: FeedbackCounters = field(default_factory=FeedbackCounters)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)

    # -- combining ---------------------------------------------------------

    def window_dict(self) -> dict[str, Any]:
        """The counts in ``WindowCounts.to_dict()`` layout (``WindowCounts.from_dict(reference, ...)``)."""
        feats: dict[str, Any] = {name: [int(v) for v in vec] for name, vec in self.bins.items()}
        feats.update({name: dict(c) for name, c in self.categories.items()})
        return {"rows": self.rows, "prediction_rows": self.prediction_rows, "features": feats,
                "predictions": _plain_counts(self.predictions),
                "projections": {name: [int(v) for v in vec] for name, vec in self.projections.items()}}

    def window(self, reference: Any) -> Any:
        """A ``WindowCounts`` over ``reference`` holding these counts."""
        from ..drift.profile import WindowCounts

        return WindowCounts.from_dict(reference, self.window_dict())

    def delta(self, earlier: SensorSnapshot | None) -> SensorSnapshot:
        """Counts since ``earlier``; the whole of this snapshot if the server restarted or changed version."""
        if earlier is None or earlier.version != self.version or self._went_down(earlier):
            return self
        return _combine(self, earlier, -1)

    def merge(self, other: SensorSnapshot) -> SensorSnapshot:
        """Counts of two replicas of the same model version added up."""
        return _combine(self, other, +1)

    def _went_down(self, earlier: SensorSnapshot) -> bool:
        if self.rows < earlier.rows or self.prediction_rows < earlier.prediction_rows:
            return True
        if self.feedback.labels < earlier.feedback.labels:
            return True
        for k, v in earlier.requests.items():
            if self.requests.get(k, 0) < v:
                return True
        for name, vec in [*earlier.bins.items(), *earlier.projections.items()]:
            cur = self.bins.get(name) if name in earlier.bins else self.projections.get(name)
            if cur is None or cur.shape != vec.shape or np.any(cur < vec):
                return True
        return False


def _plain_counts(c: dict[str, int] | np.ndarray | None) -> Any:
    if isinstance(c, np.ndarray):
        return [int(v) for v in c]
    return dict(c) if isinstance(c, dict) else None


def _combine_counts(a: Any, b: Any, sign: int) -> Any:
    """a + sign*b for a class dict or a bin vector; ``a`` unchanged when the layouts differ."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape:
        return a + sign * b
    if isinstance(a, dict) and isinstance(b, dict):
        return _add_dicts(a, b, sign)
    if a is None and b is not None and sign > 0:
        return b.copy()
    return a


def _add_dicts(a: dict[Any, Any], b: dict[Any, Any], sign: int) -> dict[Any, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + sign * v
    if sign < 0:
        out = {k: v for k, v in out.items() if v > 0 or k in a}
    return out


def _combine(a: SensorSnapshot, b: SensorSnapshot, sign: int) -> SensorSnapshot:
    bins = dict(a.bins)
    for name, vec in b.bins.items():
        cur = bins.get(name)
        bins[name] = (sign * vec) if cur is None else (cur + sign * vec if cur.shape == vec.shape else cur)
    cats = {name: dict(c) for name, c in a.categories.items()}
    for name, c in b.categories.items():
        cats[name] = _add_dicts(cats.get(name, {}), c, sign)
    projections = dict(a.projections)
    for name, vec in b.projections.items():
        cur = projections.get(name)
        projections[name] = (sign * vec) if cur is None else (cur + sign * vec if cur.shape == vec.shape else cur)
    fa, fb = a.feedback, b.feedback
    feedback = FeedbackCounters(
        labels=fa.labels + sign * fb.labels,
        correct=fa.correct + sign * fb.correct,
        errors=fa.errors + sign * fb.errors,
        squared_error=fa.squared_error + sign * fb.squared_error,
        absolute_error=fa.absolute_error + sign * fb.absolute_error,
        rejected=_add_dicts(fa.rejected, fb.rejected, sign),
    )
    return replace(
        a,
        rows=a.rows + sign * b.rows,
        prediction_rows=a.prediction_rows + sign * b.prediction_rows,
        bins=bins,
        categories=cats,
        unseen=_add_dicts(a.unseen, b.unseen, sign),
        predictions=_combine_counts(a.predictions, b.predictions, sign),
        labels=_combine_counts(a.labels, b.labels, sign),
        projections=projections,
        feedback=feedback,
        requests=_add_dicts(a.requests, b.requests, sign),
    )


def _vector(entries: dict[int, float]) -> np.ndarray:
    if not entries:
        return np.zeros(0, dtype=np.int64)
    vec = np.zeros(max(entries) + 1, dtype=np.int64)
    for i, v in entries.items():
        vec[i] = int(v)
    return vec


def parse_metrics(text: str) -> SensorSnapshot:
    """Parse the exposition text of one server's ``/metrics`` (unknown series are ignored)."""
    snap = SensorSnapshot()
    bins: dict[str, dict[int, float]] = {}
    pred_bins: dict[int, float] = {}
    pred_classes: dict[str, int] | None = None
    label_bins: dict[int, float] = {}
    label_classes: dict[str, int] | None = None
    projections: dict[str, dict[int, float]] = {}
    fb = snap.feedback
    for family in _families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if not name.startswith(PREFIX):
                continue
            short = name[len(PREFIX):]
            if short == "model_info":
                snap.model = labels.get("model")
                snap.namespace = labels.get("namespace")
                snap.version = labels.get("version")
                snap.sha256 = labels.get("sha256")
                snap.task = labels.get("task")
            elif short == "model_ready":
                snap.ready = value >= 1
            elif short == "drift_sensor_enabled":
                snap.sensor_enabled = value >= 1
            elif short == "drift_rows_total":
                snap.rows = int(value)
            elif short == "prediction_rows_total":
                snap.prediction_rows = int(value)
            elif short == "drift_bin_total":
                try:
                    idx = int(labels["bin"])
                except (KeyError, ValueError):
                    continue
                bins.setdefault(labels.get("feature", ""), {})[idx] = value
            elif short == "drift_category_total":
                snap.categories.setdefault(labels.get("feature", ""), {})[labels.get("category", "")] = int(value)
            elif short == "drift_unseen_total":
                snap.unseen[labels.get("feature", "")] = int(value)
            elif short == "predictions_total":
                pred_classes = pred_classes or {}
                pred_classes[labels.get("class", "")] = int(value)
            elif short == "prediction_bin_total":
                try:
                    pred_bins[int(labels["bin"])] = value
                except (KeyError, ValueError):
                    continue
            elif short == "drift_projection_bin_total":
                try:
                    projections.setdefault(labels.get("projection", ""), {})[int(labels["bin"])] = value
                except (KeyError, ValueError):
                    continue
            elif short == "feedback_class_total":
                label_classes = label_classes or {}
                label_classes[labels.get("class", "")] = int(value)
            elif short == "feedback_label_bin_total":
                try:
                    label_bins[int(labels["bin"])] = value
                except (KeyError, ValueError):
                    continue
            elif short == "feedback_labels_total":
                fb.labels = int(value)
            elif short == "feedback_correct_total":
                fb.correct = int(value)
            elif short == "feedback_errors_total":
                fb.errors = int(value)
            elif short == "feedback_squared_error_total":
                fb.squared_error = float(value)
            elif short == "feedback_absolute_error_total":
                fb.absolute_error = float(value)
            elif short == "feedback_rejected_total":
                fb.rejected[labels.get("reason", "")] = int(value)
            elif short == "requests_total":
                snap.requests[(labels.get("protocol", ""), labels.get("code", ""))] = int(value)
    snap.bins = {name: _vector(entries) for name, entries in bins.items()}
    if pred_classes is not None:
        snap.predictions = pred_classes
    elif pred_bins:
        snap.predictions = _vector(pred_bins)
    snap.projections = {name: _vector(entries) for name, entries in projections.items()}
    if label_classes is not None:
        snap.labels = label_classes
    elif label_bins:
        snap.labels = _vector(label_bins)
    return snap
