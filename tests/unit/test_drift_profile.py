"""The reference.json profile: building, JSON round trip and counting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlops_operator.drift import FORMAT, NumericProfile, Reference, WindowCounts, build_reference
from mlops_operator.drift.profile import MAX_UNSEEN_NAMES, OTHER_UNSEEN

N = 5_000


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    normal = rng.normal(10, 2, N)
    normal[:50] = np.nan
    return {
        "normal": normal,
        "poisson": rng.poisson(2.0, N),
        "binary": rng.integers(0, 2, N),
        "constant": np.full(N, 3.5),
        "colour": rng.choice(["red", "green", "blue"], N, p=[0.5, 0.3, 0.2]),
        "code": rng.integers(0, 4, N),  # integer-coded categorical
    }


@pytest.fixture(scope="module")
def reference(columns: dict[str, np.ndarray]) -> Reference:
    preds = np.where(columns["normal"] > 10, "yes", "no")
    return Reference.from_dict(build_reference(columns, {"colour", "code"}, preds, "classification", bins=16))


def test_json_round_trip(reference: Reference) -> None:
    d = reference.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: no NaN/Infinity
    again = Reference.from_dict(json.loads(text))
    assert again.to_dict() == d
    assert d["format"] == FORMAT == 1
    assert d["task"] == "classification"
    assert d["n"] == N
    assert set(d["features"]) == {"normal", "poisson", "binary", "constant", "colour", "code"}
    assert d["features"]["colour"]["kind"] == "categorical"
    assert d["prediction"]["levels"].keys() == {"no", "yes"}


def test_training_data_reproduces_reference_counts(
    reference: Reference, columns: dict[str, np.ndarray]
) -> None:
    for name, prof in reference.features.items():
        if isinstance(prof, NumericProfile):
            np.testing.assert_array_equal(reference.bin_counts(name, columns[name]), prof.full_counts())
        else:
            vec, unseen = prof.vector(reference.category_counts(name, columns[name]))
            np.testing.assert_array_equal(vec, prof.full_counts())
            assert unseen == {}
    window = reference.count_window(columns)
    assert window.rows == N
    for name, prof in reference.features.items():
        if isinstance(prof, NumericProfile):
            np.testing.assert_array_equal(window.features[name], prof.full_counts())


def test_every_value_lands_in_a_bin(reference: Reference) -> None:
    prof = reference.features["normal"]
    assert isinstance(prof, NumericProfile)
    values = np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, -5.0, 100.0, 10.0, 3.0, 17.0])
    counts = reference.bin_counts("normal", values)
    assert counts.sum() == values.size
    assert counts[-1] == 1  # NaN slot
    # The outer bins hold exactly the values outside the training range.
    assert counts[0] == 3 + (3.0 < prof.lo[1]) and counts[-2] == 3 + (17.0 > prof.hi[-2])
    assert reference.bin_counts("normal", [None, 1.0]).tolist()[-1] == 1


def test_outer_bins_are_empty_in_reference(reference: Reference) -> None:
    for prof in reference.features.values():
        if isinstance(prof, NumericProfile):
            assert prof.counts[0] == 0 and prof.counts[-1] == 0


def test_quantile_bins_mass_and_ties(reference: Reference, columns: dict[str, np.ndarray]) -> None:
    normal = reference.features["normal"]
    assert isinstance(normal, NumericProfile)
    present = normal.counts.sum()
    assert normal.missing == 50
    assert normal.counts.max() / present <= 1 / 16 + 1 / present
    assert np.all(np.diff(normal.edges) > 0)
    # Discrete data: every edge is an observed value, no empty interior bin.
    poisson = reference.features["poisson"]
    assert isinstance(poisson, NumericProfile)
    assert np.all(poisson.counts[1:-1] > 0)
    assert np.all(poisson.edges[1:] == np.round(poisson.edges[1:]))
    binary = reference.features["binary"]
    assert isinstance(binary, NumericProfile)
    zeros = int(np.sum(columns["binary"] == 0))
    assert binary.counts.tolist() == [0, zeros, N - zeros, 0]
    assert binary.values[1:3].tolist() == [0.0, 1.0]


def test_bins_option_and_representatives(columns: dict[str, np.ndarray]) -> None:
    x = np.random.default_rng(1).exponential(size=10_000)
    for bins in (4, 32, 100):
        prof = Reference.from_dict(build_reference({"x": x}, set(), None, "regression", bins=bins)).features[
            "x"
        ]
        assert isinstance(prof, NumericProfile)
        assert prof.counts.max() / x.size <= 1 / bins + 1e-4
        assert np.all(np.diff(prof.values) >= 0)
        inner = prof.counts > 0
        assert np.all((prof.lo[inner] <= prof.values[inner]) & (prof.values[inner] <= prof.hi[inner]))
        # Deciles are edges, so the PSI bins are unions of fine bins.
        assert np.isin(prof.psi_edges, prof.edges).all()
        assert prof.psi_counts(prof.full_counts().astype(float)).sum() == x.size


def test_constant_feature(reference: Reference) -> None:
    prof = reference.features["constant"]
    assert isinstance(prof, NumericProfile)
    assert prof.std == 0 and prof.counts.tolist() == [0, N, 0]
    assert reference.bin_counts("constant", [3.0, 3.5, 4.0]).tolist() == [1, 1, 1, 0]


def test_categorical_counts_and_unseen(reference: Reference) -> None:
    counts = reference.category_counts("colour", np.array(["red", "red", "purple", "blue"]))
    assert counts == {"red": 2, "purple": 1, "blue": 1}
    # Integer-coded levels compare as str(value).
    assert reference.category_counts("code", [1, 1, 7]) == {"1": 2, "7": 1}
    prof = reference.features["code"]
    vec, unseen = prof.vector({"1": 2, "7": 1})  # type: ignore[union-attr]
    assert unseen == {"7": 1} and vec[-1] == 1 and vec.sum() == 3
    with pytest.raises(TypeError):
        reference.bin_counts("colour", [1.0])
    with pytest.raises(TypeError):
        reference.category_counts("normal", ["a"])


def test_prediction_counts() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=2_000)
    reg = Reference.from_dict(build_reference({"x": x}, set(), 2 * x + 1, "regression"))
    assert isinstance(reg.prediction, NumericProfile)
    assert reg.prediction_counts(np.array([1.0, np.nan])).sum() == 2
    clf = Reference.from_dict(build_reference({"x": x}, set(), (x > 0).astype(int), "classification"))
    assert clf.prediction_counts([0, 1, 1, 2]) == {"0": 1, "1": 2, "2": 1}
    none = Reference.from_dict(build_reference({"x": x}, set(), None, "classification"))
    with pytest.raises(ValueError):
        none.prediction_counts([1])


@pytest.mark.parametrize("rows", [1, 7, 64, 65, 500])
def test_batch_counting_matches_per_feature(reference: Reference, rows: int) -> None:
    rng = np.random.default_rng(rows)
    cols = {
        "normal": rng.normal(10, 3, rows),
        "poisson": rng.poisson(2.0, rows).astype(float),
        "binary": rng.integers(-1, 3, rows),
        "constant": rng.choice([3.0, 3.5, 4.0], rows),
        "colour": rng.choice(["red", "teal"], rows),
        "code": rng.integers(0, 6, rows),
    }
    cols["normal"][0] = np.nan
    cols["poisson"][-1] = np.inf
    window = reference.count_window(cols, rng.choice(["yes", "no"], rows))
    assert window.rows == rows and window.prediction_rows == rows
    for name in ("normal", "poisson", "binary", "constant"):
        np.testing.assert_array_equal(window.features[name], reference.bin_counts(name, cols[name]))
    assert sum(window.features["colour"].values()) == rows  # type: ignore[union-attr]


def test_window_add_merge_round_trip(reference: Reference, columns: dict[str, np.ndarray]) -> None:
    first = reference.new_window()
    first.add({k: v[:300] for k, v in columns.items()}, ["yes"] * 300)
    second = reference.count_window({k: v[300:1000] for k, v in columns.items()}, ["no"] * 700)
    second.add({"colour": ["mauve"]})
    first.merge(second)
    whole = reference.count_window({k: v[:1000] for k, v in columns.items()})
    np.testing.assert_array_equal(first.features["normal"], whole.features["normal"])
    assert first.rows == 1001 and first.prediction_rows == 1000
    assert first.features["colour"]["mauve"] == 1  # type: ignore[index]
    assert first.predictions == {"no": 700, "yes": 300}
    text = json.dumps(first.to_dict(), allow_nan=False)
    again = WindowCounts.from_dict(reference, json.loads(text))
    assert again.to_dict() == first.to_dict()


def test_unseen_names_are_capped(reference: Reference) -> None:
    window = reference.new_window()
    window.add({"colour": [f"junk{i}" for i in range(MAX_UNSEEN_NAMES + 50)] + ["red"]})
    counts = window.features["colour"]
    assert isinstance(counts, dict)
    assert len(counts) == 3 + MAX_UNSEEN_NAMES + 1
    assert counts[OTHER_UNSEEN] == 50 and counts["red"] == 1
    assert sum(counts.values()) == MAX_UNSEEN_NAMES + 51


def test_rejects_bad_input(columns: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        build_reference(columns, set(), None, "ranking")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_reference(columns, {"nope"}, None, "regression")
    d = build_reference({"x": np.arange(10.0)}, set(), None, "regression")
    with pytest.raises(ValueError):
        Reference.from_dict({**d, "format": 2})
    ref = Reference.from_dict(d)
    with pytest.raises(ValueError):
        WindowCounts.from_dict(ref, {"rows": 1, "features": {"x": [1, 2]}})
