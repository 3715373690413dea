"""runtime/sensor.py reads our series with its own line parser: it must read what prometheus_client's does.

The text comes from prometheus_client's own exposition of counters whose
label values hold what users put in feature and class names (quotes,
backslashes, newlines, braces, commas, non-ASCII), and the parse is compared
with prometheus_client's parser, sample by sample.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops_operator.runtime.sensor import _families, parse_metrics

VALUES = st.text(alphabet=st.sampled_from(list('ab"\\\n{},= é∑')), max_size=12)


def _ours(text: str) -> list[tuple[str, list, float]]:
    return sorted((s.name, sorted(s.labels.items()), s.value) for f in _families(text) for s in f.samples
                  if s.name.startswith("mlops_"))


def _theirs(text: str) -> list[tuple[str, list, float]]:
    return sorted((s.name, sorted(s.labels.items()), s.value) for f in text_string_to_metric_families(text)
                  for s in f.samples if s.name.startswith("mlops_"))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(VALUES, VALUES, st.integers(0, 10**9)), min_size=1, max_size=8))
def test_our_reading_of_the_exposition_is_prometheus_clients(rows) -> None:
    registry = CollectorRegistry()
    bins = Counter("mlops_drift_category", "c", ["feature", "category"], registry=registry)
    for feature, category, n in rows:
        bins.labels(feature, category).inc(n)
    text = generate_latest(registry).decode()
    assert _ours(text) == _theirs(text)
    snap = parse_metrics(text)
    for feature, category, _ in rows:
        assert category in snap.categories[feature]


def test_what_it_does_not_recognise_goes_to_the_general_parser() -> None:
    text = 'mlops_model_drift_rows_total 5.0\nmlops_model_ready{model="m"} 1.0 1700000000000\nmlops_model_odd{x="1"}   +Inf\n'
    assert _ours(text) == _theirs(text)
    exotic = 'mlops_model_drift_rows_total{a="1"} 5.0 # {trace_id="x"} 1.0\n'  # an exemplar: not a plain line
    assert [s.name for f in _families(exotic) for s in f.samples] == [s.name for f in text_string_to_metric_families(exotic)
                                                                       for s in f.samples]
