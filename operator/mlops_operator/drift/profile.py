"""The reference profile (``reference.json``) and the counting that feeds it.

The trainer calls :func:`build_reference` on the training columns and stores
``to_dict()`` as JSON next to the model.  The model server loads it with
:meth:`Reference.from_dict` and turns each request into counts
(:meth:`Reference.count_window`, or the per-feature ``bin_counts`` /
``category_counts`` / ``prediction_counts``); counts from many requests and
replicas add up in a :class:`WindowCounts`, and a drift check only ever reads
those counts, never rows.

Numeric features are binned on reference quantiles: the union of the ``bins``
quantiles ``k/bins`` and the nine deciles, taken with ``inverted_cdf`` so
every edge is an observed value, deduplicated so tied/discrete data does not
make empty bins, plus an edge just below the training minimum and one at the
maximum.  Bins are right-closed ``(e[i-1], e[i]]`` with open outer bins, so
every number, ±inf included, lands in a bin, and the two outer bins (empty in
the reference) hold exactly the values outside the training range; NaN has
its own slot at the end of the count vector.  Because the deciles are edges, the ten PSI bins
are unions of fine bins (``psi_edges``) and need no second pass.

Categorical features keep a count per level (compared as ``str(value)``) and
an ``unseen`` slot; levels absent from training are kept by name in the
window so they can be reported.

Two optional sections (profiles written before them load and work; the
checks that need them say "not available"):

* ``label``: the training labels' distribution (class counts, or bins for a
  regression target), compared with the labels sent to the feedback endpoint.
* ``multivariate``: fixed linear projections of the standardized numeric
  features (:class:`MultivariateProfile`), each binned like a numeric
  feature, so a change in how two features move together shows in counts
  without shipping rows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

FORMAT = 1
DECILES = np.arange(1, 10) / 10
MAX_UNSEEN_NAMES = 100
OTHER_UNSEEN = "(other unseen)"

Task = Literal["classification", "regression"]
Counts = np.ndarray | dict[str, int]


def _float_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _floats(values: Iterable[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """Reference bins of one numeric column.

    ``counts`` has one entry per bin (``len(edges) + 1``); ``values`` is the
    mean of the reference values in each bin (used as the bin's position for
    Wasserstein), ``lo``/``hi`` their min/max; ``quantization`` is the mean
    distance of a reference value to its bin's ``values`` entry.
    """

    edges: np.ndarray
    counts: np.ndarray
    missing: int
    mean: float
    std: float
    values: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    psi_edges: np.ndarray
    quantization: float
    psi_groups: np.ndarray = field(init=False, repr=False)

    kind = "numeric"

    def __post_init__(self) -> None:
        groups = np.searchsorted(self.psi_edges, self.edges, side="left")
        object.__setattr__(self, "psi_groups", np.append(groups, self.psi_edges.size))

    @property
    def n(self) -> int:
        return int(self.counts.sum()) + self.missing

    @property
    def size(self) -> int:
        """Length of a count vector: the bins plus the NaN slot."""
        return self.edges.size + 2

    def full_counts(self) -> np.ndarray:
        """Reference counts in window layout: bins then NaN."""
        return np.append(self.counts, self.missing)

    def count(self, values: Any) -> np.ndarray:
        """Count values into bins; the last slot counts NaN (and None)."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        idx = np.searchsorted(self.edges, x, side="left")
        idx[np.isnan(x)] = self.edges.size + 1
        return np.bincount(idx, minlength=self.size)

    def psi_counts(self, full: np.ndarray) -> np.ndarray:
        """Fold a window-layout count vector into decile bins plus NaN."""
        grouped = np.bincount(self.psi_groups, weights=full[:-1], minlength=self.psi_edges.size + 1)
        return np.append(grouped, full[-1])

    @classmethod
    def build(cls, column: Any, bins: int) -> NumericProfile:
        x = np.asarray(column, dtype=np.float64).reshape(-1)
        finite = np.sort(x[np.isfinite(x)])
        if finite.size:
            probs = np.arange(1, bins) / bins
            fine = np.quantile(finite, probs, method="inverted_cdf")
            psi_edges = np.unique(np.quantile(finite, DECILES, method="inverted_cdf"))
            # Outer edges just below the minimum and at the maximum give values
            # outside the training range bins of their own (empty in the reference).
            outer = [np.nextafter(finite[0], -np.inf), finite[-1]]
            edges = np.unique(np.concatenate([fine, psi_edges, outer]))
        else:
            edges = psi_edges = np.zeros(0)
        # Per-bin statistics of the finite values via sorted boundaries.
        bounds = np.concatenate([[0], np.searchsorted(finite, edges, side="right"), [finite.size]])
        in_bin = np.diff(bounds)
        csum = np.concatenate([[0.0], np.cumsum(finite)])
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (csum[bounds[1:]] - csum[bounds[:-1]]) / in_bin
        empty = in_bin == 0
        if finite.size:
            first = finite[np.minimum(bounds[:-1], finite.size - 1)]
            last = finite[np.maximum(bounds[1:] - 1, 0)]
        else:
            first = last = np.full(in_bin.size, math.nan)
        lo = np.where(empty, math.nan, first)
        hi = np.where(empty, math.nan, last)
        # Empty bins (the two outer ones) sit at their inner edge: the training min/max.
        inner = np.concatenate([finite[:1] if finite.size else [0.0], edges])
        values = np.where(empty, inner, means)
        values = np.maximum.accumulate(values) if values.size else values
        if finite.size:
            mean, std = float(finite.mean()), float(finite.std())
            quantization = float(np.mean(np.abs(finite - np.repeat(values, in_bin))))
        else:
            mean = std = math.nan
            quantization = 0.0
        profile = cls(
            edges=edges,
            counts=np.zeros(edges.size + 1, dtype=np.int64),
            missing=0,
            mean=mean,
            std=std,
            values=values,
            lo=lo,
            hi=hi,
            psi_edges=psi_edges,
            quantization=quantization,
        )
        full = profile.count(x)
        object.__setattr__(profile, "counts", full[:-1])
        object.__setattr__(profile, "missing", int(full[-1]))
        return profile

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "edges": self.edges.tolist(),
            "counts": [int(c) for c in self.counts],
            "missing": self.missing,
            "mean": _float_or_none(self.mean),
            "std": _float_or_none(self.std),
            "values": self.values.tolist(),
            "min": [_float_or_none(v) for v in self.lo],
            "max": [_float_or_none(v) for v in self.hi],
            "psi_edges": self.psi_edges.tolist(),
            "quantization": self.quantization,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericProfile:
        mean, std = d.get("mean"), d.get("std")
        return cls(
            edges=_floats(d["edges"]),
            counts=np.asarray(d["counts"], dtype=np.int64),
            missing=int(d.get("missing", 0)),
            mean=math.nan if mean is None else float(mean),
            std=math.nan if std is None else float(std),
            values=_floats(d["values"]),
            lo=_floats(d["min"]),
            hi=_floats(d["max"]),
            psi_edges=_floats(d["psi_edges"]),
            quantization=float(d.get("quantization", 0.0)),
        )


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """Reference counts per level; ``unseen`` is the slot for anything else."""

    levels: tuple[str, ...]
    counts: np.ndarray
    unseen: int = 0
    index: dict[str, int] = field(init=False, repr=False)

    kind = "categorical"

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {lv: i for i, lv in enumerate(self.levels)})

    @property
    def n(self) -> int:
        return int(self.counts.sum()) + self.unseen

    def full_counts(self) -> np.ndarray:
        """Reference counts in vector layout: levels then the unseen slot."""
        return np.append(self.counts, self.unseen)

    def count(self, values: Any) -> dict[str, int]:
        """Count values by ``str(value)``; unseen levels are kept by name."""
        return _count_str(values)

    def vector(self, counts: Mapping[str, int]) -> tuple[np.ndarray, dict[str, int]]:
        """Window counts as a vector over levels + unseen, and the unseen names."""
        vec = np.zeros(len(self.levels) + 1, dtype=np.int64)
        unseen: dict[str, int] = {}
        for name, c in counts.items():
            i = self.index.get(name)
            if i is None:
                unseen[name] = unseen.get(name, 0) + int(c)
                vec[-1] += int(c)
            else:
                vec[i] += int(c)
        return vec, unseen

    @classmethod
    def build(cls, column: Any) -> CategoricalProfile:
        counts = _count_str(column)
        levels = tuple(sorted(counts))
        return cls(levels=levels, counts=np.array([counts[lv] for lv in levels], dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "categorical",
            "levels": {lv: int(c) for lv, c in zip(self.levels, self.counts)},
            "unseen": int(self.unseen),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoricalProfile:
        levels = tuple(str(k) for k in d["levels"])
        counts = np.array([int(v) for v in d["levels"].values()], dtype=np.int64)
        return cls(levels=levels, counts=counts, unseen=int(d.get("unseen", 0)))


def _count_str(values: Any) -> dict[str, int]:
    raw = values.tolist() if isinstance(values, np.ndarray) else list(values)
    out: dict[str, int] = {}
    for key, c in Counter(raw).items():
        name = str(key)
        out[name] = out.get(name, 0) + c
    return out


Profile = NumericProfile | CategoricalProfile


def _profile_from_dict(d: Mapping[str, Any]) -> Profile:
    kind = d.get("kind")
    if kind == "numeric":
        return NumericProfile.from_dict(d)
    if kind == "categorical":
        return CategoricalProfile.from_dict(d)
    raise ValueError(f"unknown profile kind {kind!r}")


# Up to this many rows a batch is binned by one broadcast comparison against
# all profiles' edges at once; larger batches use a searchsorted per profile.
_SMALL_BATCH = 64


class _Binner:
    """Bins several numeric profiles' values into one flat count vector (each profile's bins, then NaN)."""

    def __init__(self, profiles: list[NumericProfile]) -> None:
        self.profiles = profiles
        sizes = np.array([p.size for p in profiles], dtype=np.int64)
        self.sizes = sizes
        self.offsets = (np.cumsum(sizes) - sizes).astype(np.int64)  # empty when there are no profiles
        self.flat_size = int(sizes.sum())
        width = max((p.edges.size for p in profiles), default=0)
        self.edges = np.full((len(profiles), width), np.inf)
        for i, p in enumerate(profiles):
            self.edges[i, : p.edges.size] = p.edges
        self.nan_slot = sizes - 1

    def count_matrix(self, x: np.ndarray) -> np.ndarray:
        """Counts of ``x`` (one row per profile, one column per value) as one flat vector."""
        if x.shape[1] <= _SMALL_BATCH:
            # Edges strictly below x == searchsorted(side="left"); the +inf padding never counts.
            bins = (x[:, :, None] > self.edges[:, None, :]).sum(axis=2)
            bins = np.where(np.isnan(x), self.nan_slot[:, None], bins) + self.offsets[:, None]
            return np.bincount(bins.ravel(), minlength=self.flat_size)
        flat = np.zeros(self.flat_size, dtype=np.int64)
        for j, prof in enumerate(self.profiles):
            off = int(self.offsets[j])
            flat[off : off + prof.size] += prof.count(x[j])
        return flat


MAX_PROJECTIONS = 16
"""Most projections a profile holds: a sensor's cost and a status' size grow with them."""
PROJECTION_BINS = 16
_PROJECTION_SEED = 20261
_MIN_COMPLETE_ROWS = 30


@dataclass(frozen=True, eq=False)
class Projection:
    """One fixed view of the numeric features: ``sum_k w_k (x_k - center_k) / scale_k``, binned in ``profile``."""

    name: str
    features: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    profile: NumericProfile

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "features": list(self.features),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "profile": self.profile.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Projection:
        features = tuple(str(f) for f in d["features"])
        center, scale, weights = _floats(d["center"]), _floats(d["scale"]), _floats(d["weights"])
        if not (len(features) == center.size == scale.size == weights.size) or not features:
            raise ValueError(f"projection {d.get('name')!r}: features, center, scale and weights differ in length")
        if not np.all(np.isfinite(center)) or not np.all(scale > 0) or not np.all(np.isfinite(weights)):
            raise ValueError(f"projection {d.get('name')!r}: center, scale and weights must be finite, scale positive")
        return cls(str(d["name"]), features, center, scale, weights, NumericProfile.from_dict(d["profile"]))


@dataclass(frozen=True, eq=False)
class MultivariateProfile:
    """Projections fixed at training time; a row's projected values are counted like numeric features.

    ``method`` ``"pairs"``: each projection is a pair of standardized numeric
    features, ``z_a - sign(rho) z_b`` with ``rho`` their training
    correlation, the direction whose variance moves most, relative to its
    own, when their correlation changes (by ``|d rho| / (1 - |rho|)``) while
    each marginal stays put.  See :func:`build_multivariate`.
    """

    method: str
    projections: tuple[Projection, ...]
    features: tuple[str, ...] = field(init=False)
    index: np.ndarray = field(init=False, repr=False)
    coef: np.ndarray = field(init=False, repr=False)
    offset: np.ndarray = field(init=False, repr=False)
    binner: _Binner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        features = tuple(dict.fromkeys(f for p in self.projections for f in p.features))
        position = {f: i for i, f in enumerate(features)}
        width = max((len(p.features) for p in self.projections), default=0)
        # Padding terms read column 0 with coefficient 0: they add an exact 0.
        index = np.zeros((len(self.projections), width), dtype=np.int64)
        coef = np.zeros((len(self.projections), width))
        offset = np.zeros(len(self.projections))
        for k, p in enumerate(self.projections):
            for t, (f, c, s, w) in enumerate(zip(p.features, p.center, p.scale, p.weights)):
                index[k, t] = position[f]
                coef[k, t] = w / s
                offset[k] -= w * c / s
        setattr_ = object.__setattr__
        setattr_(self, "features", features)
        setattr_(self, "index", index)
        setattr_(self, "coef", coef)
        setattr_(self, "offset", offset)
        setattr_(self, "binner", _Binner([p.profile for p in self.projections]))

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.projections]

    def project(self, x: np.ndarray) -> np.ndarray:
        """Projected values of rows ``x`` (columns in ``features`` order): one row per projection.

        Element-wise sums in a fixed order, so the trainer and the server get
        the very same numbers (bin edges are observed training values).  A
        projection of a row with a missing or infinite value in one of its
        features is NaN (counted in its NaN slot).
        """
        finite = np.isfinite(x)
        clean = np.where(finite, x, 0.0).T  # features x rows
        values = np.zeros((self.index.shape[0], x.shape[0]))
        bad = np.zeros(values.shape, dtype=bool)
        for t in range(self.index.shape[1]):
            cols = self.index[:, t]
            values += clean[cols] * self.coef[:, t : t + 1]
            bad |= ~finite.T[cols] & (self.coef[:, t : t + 1] != 0)
        values += self.offset[:, None]
        return np.where(bad, np.nan, values)

    def count(self, columns: Mapping[str, Any]) -> np.ndarray | None:
        """Flat counts of the projections of a batch, or None when a feature they need is absent."""
        if not all(f in columns for f in self.features):
            return None
        try:
            x = np.column_stack([np.asarray(columns[f], dtype=np.float64).reshape(-1) for f in self.features])
        except (ValueError, TypeError):  # ragged columns or values that are not numbers: not counted
            return None
        return self.binner.count_matrix(self.project(x))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "projections": [p.to_dict() for p in self.projections]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MultivariateProfile:
        projections = tuple(Projection.from_dict(p) for p in d["projections"])
        if len({p.name for p in projections}) != len(projections):
            raise ValueError("projection names must be unique")
        return cls(method=str(d.get("method", "pairs")), projections=projections)


def build_multivariate(
    columns: Mapping[str, Any],
    max_projections: int = MAX_PROJECTIONS,
    bins: int = PROJECTION_BINS,
    seed: int = _PROJECTION_SEED,
) -> MultivariateProfile | None:
    """Pair projections of the numeric training columns; None with fewer than two usable features.

    A feature is usable when it has a finite, positive standard deviation.
    With more pairs than ``max_projections``, half the budget goes to the
    pairs most correlated in training (a learned relationship that breaks)
    and the rest to pairs drawn at random with a fixed seed (a relationship
    that appears), so the choice is the same for every run on the same data.
    """
    names, cols = [], []
    for name, col in columns.items():
        x = np.asarray(col, dtype=np.float64).reshape(-1)
        finite = x[np.isfinite(x)]
        if finite.size >= _MIN_COMPLETE_ROWS and finite.std() > 0:
            names.append(name)
            cols.append(x)
    if len(names) < 2 or max_projections < 1:
        return None
    x = np.column_stack(cols)
    complete = np.all(np.isfinite(x), axis=1)
    if complete.sum() < _MIN_COMPLETE_ROWS:
        return None
    center = np.nanmean(np.where(np.isfinite(x), x, np.nan), axis=0)
    scale = np.nanstd(np.where(np.isfinite(x), x, np.nan), axis=0)
    z = (x[complete] - center) / scale
    zstd = z.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (z - z.mean(axis=0)).T @ (z - z.mean(axis=0)) / z.shape[0] / np.outer(zstd, zstd)
    corr = np.nan_to_num(corr)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    if len(pairs) > max_projections:
        ranked = sorted(pairs, key=lambda ij: -abs(corr[ij]))
        strongest = ranked[: (max_projections + 1) // 2]
        rest = ranked[len(strongest):]
        rng = np.random.default_rng(seed)
        drawn = [rest[k] for k in sorted(rng.choice(len(rest), max_projections - len(strongest), replace=False))]
        pairs = sorted(strongest + drawn)
    drafts = []
    seen: set[str] = set()
    placeholder = NumericProfile.build(np.zeros(1), 2)
    for i, j in pairs:
        name = f"{names[i]}~{names[j]}"
        if name in seen:
            continue
        seen.add(name)
        weights = np.array([1.0, -1.0 if corr[i, j] >= 0 else 1.0])
        drafts.append(Projection(name, (names[i], names[j]), center[[i, j]], scale[[i, j]], weights, placeholder))
    # Bin the training rows' projections with the code the server runs, so its counts of them match.
    draft = MultivariateProfile(method="pairs", projections=tuple(drafts))
    values = draft.project(np.column_stack([x[:, names.index(f)] for f in draft.features]))
    projections = [replace(p, profile=NumericProfile.build(values[k], bins)) for k, p in enumerate(drafts)]
    return MultivariateProfile(method="pairs", projections=tuple(projections))


class WindowCounts:
    """Counts of one window in the layout of its reference.

    Add requests with :meth:`add`, combine replicas with :meth:`merge`, ship
    with :meth:`to_dict`.  ``numeric[name]`` is a count vector (bins then
    NaN; a view into one flat array, so adding a batch is a single in-place
    sum), ``categorical[name]`` a ``{level: count}`` dict that also keeps up
    to ``MAX_UNSEEN_NAMES`` unseen names (the rest pool under
    ``OTHER_UNSEEN``) so a junk high-cardinality input cannot grow it without
    bound.  ``features`` has both, in the reference's column order;
    ``projections[name]`` is the count vector of one projection of the
    reference's ``multivariate`` section (none without it).
    """

    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.rows = 0
        self.prediction_rows = 0
        self._flat = np.zeros(reference._flat_size, dtype=np.int64)
        self.numeric: dict[str, np.ndarray] = {
            name: self._flat[reference._offset[name] : reference._offset[name] + prof.size]
            for name, prof in reference.numeric.items()
        }
        self.categorical: dict[str, dict[str, int]] = {
            name: {lv: 0 for lv in prof.levels} for name, prof in reference.categorical.items()
        }
        mv = reference.multivariate
        self._pflat = np.zeros(mv.binner.flat_size if mv is not None else 0, dtype=np.int64)
        self.projections: dict[str, np.ndarray] = {}
        if mv is not None:
            for off, p in zip(mv.binner.offsets.tolist(), mv.projections):
                self.projections[p.name] = self._pflat[off : off + p.profile.size]
        pred = reference.prediction
        self.prediction_vector: np.ndarray | None = (
            np.zeros(pred.size, dtype=np.int64) if isinstance(pred, NumericProfile) else None
        )
        self.prediction_levels: dict[str, int] | None = (
            {lv: 0 for lv in pred.levels} if isinstance(pred, CategoricalProfile) else None
        )

    @property
    def features(self) -> dict[str, Counts]:
        return {
            name: self.numeric[name] if name in self.numeric else self.categorical[name]
            for name in self.reference.features
        }

    @property
    def predictions(self) -> Counts | None:
        return self.prediction_vector if self.prediction_vector is not None else self.prediction_levels

    def add(self, columns: Mapping[str, Any] | None = None, predictions: Any = None) -> None:
        """Count a batch of rows (columns by feature name) and/or its predictions."""
        ref = self.reference
        if columns:
            flat, rows = ref._count_numeric(columns)
            if flat is not None:
                self._flat += flat
            for name, prof in ref.categorical.items():
                if name in columns:
                    counts = _count_str(columns[name])
                    _add_levels(self.categorical[name], counts, prof)
                    rows = max(rows, sum(counts.values()))
            if ref.multivariate is not None:
                projected = ref.multivariate.count(columns)
                if projected is not None:
                    self._pflat += projected
            self.rows += rows
        if predictions is not None and ref.prediction is not None:
            self._add_predictions(ref.prediction.count(predictions))

    def _add_predictions(self, counts: Counts, rows: int | None = None) -> None:
        pred = self.reference.prediction
        if self.prediction_vector is not None and isinstance(pred, NumericProfile):
            self.prediction_vector += _vector(counts, pred)
        elif self.prediction_levels is not None and isinstance(pred, CategoricalProfile):
            if not isinstance(counts, Mapping):
                raise ValueError("class counts must be a {class: count} mapping")
            _add_levels(self.prediction_levels, counts, pred)
        self.prediction_rows += _total(counts) if rows is None else rows

    def merge(self, other: WindowCounts) -> None:
        """Add another window's counts (same reference layout) into this one."""
        if other._flat.shape != self._flat.shape:
            raise ValueError("windows of different references cannot be merged")
        self._flat += other._flat
        self._pflat += other._pflat
        for name, prof in self.reference.categorical.items():
            _add_levels(self.categorical[name], other.categorical[name], prof)
        if other.predictions is not None:
            self._add_predictions(other.predictions, other.prediction_rows)
        self.rows += other.rows

    def to_dict(self) -> dict[str, Any]:
        def plain(c: Counts | None) -> Any:
            if c is None:
                return None
            if isinstance(c, dict):
                return {k: int(v) for k, v in c.items()}
            return [int(v) for v in c]

        return {
            "rows": self.rows,
            "prediction_rows": self.prediction_rows,
            "features": {name: plain(c) for name, c in self.features.items()},
            "predictions": plain(self.predictions),
            "projections": {name: plain(c) for name, c in self.projections.items()},
        }

    @classmethod
    def from_dict(cls, reference: Reference, d: Mapping[str, Any]) -> WindowCounts:
        w = cls(reference)
        w.rows = int(d.get("rows", 0))
        for name, raw in d.get("features", {}).items():
            if name in reference.numeric:
                w.numeric[name][:] = _vector(raw, reference.numeric[name])
            elif name in reference.categorical:
                levels = {str(k): int(v) for k, v in raw.items()}
                _add_levels(w.categorical[name], levels, reference.categorical[name])
        mv = reference.multivariate
        if mv is not None:
            profiles = {p.name: p.profile for p in mv.projections}
            for name, raw in (d.get("projections") or {}).items():
                if name in profiles:
                    w.projections[name][:] = _vector(raw, profiles[name])
        preds = d.get("predictions")
        if preds is not None and reference.prediction is not None:
            if isinstance(reference.prediction, CategoricalProfile):
                preds = {str(k): int(v) for k, v in preds.items()}
            w._add_predictions(preds, int(d.get("prediction_rows", 0)))
        return w


def _total(counts: Counts) -> int:
    return int(sum(counts.values())) if isinstance(counts, Mapping) else int(np.sum(counts))


def _vector(raw: Any, prof: NumericProfile) -> np.ndarray:
    vec = np.asarray(raw, dtype=np.int64)
    if vec.shape != (prof.size,):
        raise ValueError(f"expected {prof.size} counts, got shape {vec.shape}")
    return vec


def _add_levels(dst: dict[str, int], src: Mapping[str, int], prof: CategoricalProfile) -> None:
    """Add level counts into ``dst`` in place, capping the number of unseen names."""
    for key, c in src.items():
        if key in dst:
            dst[key] += int(c)
        elif len(dst) - len(prof.levels) < MAX_UNSEEN_NAMES:
            dst[key] = int(c)
        else:
            dst[OTHER_UNSEEN] = dst.get(OTHER_UNSEEN, 0) + int(c)


@dataclass(frozen=True, eq=False)
class Reference:
    """The reference profile: per-feature bins/levels, the prediction and label distributions, projections.

    ``label`` (the training labels) and ``multivariate`` (projections of the
    numeric features) are None in profiles written before they existed.
    """

    task: Task
    features: dict[str, Profile]
    prediction: Profile | None
    n: int
    format: int = FORMAT
    label: Profile | None = None
    multivariate: MultivariateProfile | None = None
    numeric: dict[str, NumericProfile] = field(init=False, repr=False)
    categorical: dict[str, CategoricalProfile] = field(init=False, repr=False)
    _offset: dict[str, int] = field(init=False, repr=False)
    _flat_size: int = field(init=False, repr=False)
    _binner: _Binner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        numeric = {k: p for k, p in self.features.items() if isinstance(p, NumericProfile)}
        categorical = {k: p for k, p in self.features.items() if isinstance(p, CategoricalProfile)}
        binner = _Binner(list(numeric.values()))
        setattr_ = object.__setattr__
        setattr_(self, "numeric", numeric)
        setattr_(self, "categorical", categorical)
        setattr_(self, "_offset", dict(zip(numeric, binner.offsets.tolist(), strict=True)))
        setattr_(self, "_flat_size", binner.flat_size)
        setattr_(self, "_binner", binner)

    def _count_numeric(self, columns: Mapping[str, Any]) -> tuple[np.ndarray | None, int]:
        """Counts of every numeric feature present, as one flat vector, and the row count."""
        names = list(self.numeric)
        if not names or not any(n in columns for n in names):
            return None, 0
        small = np.size(columns.get(names[0], ())) <= _SMALL_BATCH
        if small and all(n in columns for n in names):
            try:
                x = np.array([columns[n] for n in names], dtype=np.float64)
            except ValueError:  # ragged columns: count feature by feature below
                x = None
            if x is not None and x.ndim == 2 and x.shape[1] <= _SMALL_BATCH:
                return self._binner.count_matrix(x), x.shape[1]
        flat = np.zeros(self._flat_size, dtype=np.int64)
        rows = 0
        for name in names:
            if name in columns:
                off = self._offset[name]
                values = columns[name]
                counts = self.numeric[name].count(values)
                flat[off : off + counts.size] += counts
                rows = max(rows, int(np.size(values)))
        return flat, rows

    def bin_counts(self, feature: str, values: Any) -> np.ndarray:
        """Counts of a numeric feature's values: one per bin, then NaN."""
        if feature in self.categorical:
            raise TypeError(f"{feature!r} is categorical; use category_counts")
        return self.numeric[feature].count(values)

    def category_counts(self, feature: str, values: Any) -> dict[str, int]:
        """Counts of a categorical feature's values by ``str(value)``, unseen ones included."""
        if feature in self.numeric:
            raise TypeError(f"{feature!r} is numeric; use bin_counts")
        return self.categorical[feature].count(values)

    def prediction_counts(self, predictions: Any) -> Counts:
        """Class counts (classification) or bin counts (regression) of predictions."""
        if self.prediction is None:
            raise ValueError("the reference has no prediction profile")
        return self.prediction.count(predictions)

    def new_window(self) -> WindowCounts:
        """An empty window to :meth:`WindowCounts.add` requests into."""
        return WindowCounts(self)

    def count_window(self, columns: Mapping[str, Any], predictions: Any = None) -> WindowCounts:
        """Counts of one batch of rows, ready to :meth:`WindowCounts.merge`."""
        w = WindowCounts(self)
        w.add(columns, predictions)
        return w

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "task": self.task,
            "n": self.n,
            "features": {name: prof.to_dict() for name, prof in self.features.items()},
            "prediction": self.prediction.to_dict() if self.prediction is not None else None,
            **({"label": self.label.to_dict()} if self.label is not None else {}),
            **({"multivariate": self.multivariate.to_dict()} if self.multivariate is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        if d.get("format") != FORMAT:
            raise ValueError(f"unsupported reference format {d.get('format')!r}, expected {FORMAT}")
        task = d["task"]
        if task not in ("classification", "regression"):
            raise ValueError(f"unknown task {task!r}")
        pred, label, multivariate = d.get("prediction"), d.get("label"), d.get("multivariate")
        return cls(
            task=task,
            features={name: _profile_from_dict(p) for name, p in d["features"].items()},
            prediction=_profile_from_dict(pred) if pred is not None else None,
            n=int(d["n"]),
            label=_profile_from_dict(label) if label is not None else None,
            multivariate=MultivariateProfile.from_dict(multivariate) if multivariate is not None else None,
        )


def build_reference(
    columns: Mapping[str, Any],
    categorical: set[str] | frozenset[str],
    predictions: Any,
    task: Task,
    bins: int = 32,
    labels: Any = None,
    max_projections: int = MAX_PROJECTIONS,
) -> dict[str, Any]:
    """Profile the training columns and predictions; returns the JSON-ready dict.

    ``columns`` maps feature name to its training values (any array-like);
    names in ``categorical`` are profiled by level, the rest numerically with
    ``bins`` quantile bins (plus the decile edges).  ``predictions`` are the
    model's predictions on the same rows: class labels for classification,
    numbers for regression (``None`` to skip prediction drift).  ``labels``
    are the training targets (``None`` to skip label drift); the numeric
    columns also get up to ``max_projections`` pair projections (0: none).
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', not {task!r}")
    if bins < 2:
        raise ValueError("bins must be at least 2")
    unknown = set(categorical) - set(columns)
    if unknown:
        raise ValueError(f"categorical names not among the columns: {sorted(unknown)}")
    features: dict[str, Profile] = {}
    n = 0
    for name, col in columns.items():
        prof: Profile = (
            CategoricalProfile.build(col) if name in categorical else NumericProfile.build(col, bins)
        )
        features[name] = prof
        n = max(n, prof.n)
    prediction: Profile | None = None
    if predictions is not None:
        prediction = (
            CategoricalProfile.build(predictions)
            if task == "classification"
            else NumericProfile.build(predictions, bins)
        )
    label: Profile | None = None
    if labels is not None:
        label = CategoricalProfile.build(labels) if task == "classification" else NumericProfile.build(labels, bins)
    numeric_columns = {name: columns[name] for name, prof in features.items() if isinstance(prof, NumericProfile)}
    multivariate = build_multivariate(numeric_columns, max_projections) if max_projections > 0 else None
    return Reference(task=task, features=features, prediction=prediction, n=n, label=label,
                     multivariate=multivariate).to_dict()
