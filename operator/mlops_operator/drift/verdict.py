"""The drift verdict for a window of counts against a reference profile.

Rule per feature: its test is significant after Benjamini–Hochberg
correction across all features (weighted when the policy weights features)
**and** its effect, beyond what unchanged data shows at this window size and
level count, reaches the feature's floor; or, for a categorical feature,
categories never seen in training make up at least ``unseen_share`` of the
rows.  The window drifts when any feature does.  Tests: numeric, the smaller
of the KS and the W1 p-values, doubled; categorical, chi-square of
homogeneity with rare levels pooled (Cochran's rule).  The correction keeps
the false-alarm rate near q however many features there are; the corrected
effect keeps large windows from alarming on differences too small to matter
*and* keeps small windows of many-level features from looking drifted by
noise alone (see :mod:`.null`).  The presets ``strict`` / ``default`` /
``lenient`` set q and the floors.  Below ``min_samples`` rows the answer is
"insufficient_data", never "no_drift".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from weakref import WeakKeyDictionary

import numpy as np
from scipy import special

from .profile import CategoricalProfile, Counts, NumericProfile, Profile, Reference, WindowCounts
from .null import NULL_DRAWS, bridge_w1, w1_pvalue, categorical_null, excess, two_level_quantile
from .stats import MIN_EXPECTED, PSI_EPS, _js, _psi, benjamini_hochberg, bonferroni, chi2_pooled, js_distance

Status = Literal["drift", "no_drift", "insufficient_data"]


Sensitivity = Literal["strict", "default", "lenient"]

PRESETS: dict[str, dict[str, float]] = {
    "strict": {"q": 0.05, "numeric_effect": 0.02, "categorical_effect": 0.02, "unseen_share": 0.005},
    "default": {"q": 0.05, "numeric_effect": 0.04, "categorical_effect": 0.04, "unseen_share": 0.01},
    "lenient": {"q": 0.01, "numeric_effect": 0.08, "categorical_effect": 0.08, "unseen_share": 0.05},
}
"""The sensitivity presets; their measured false-alarm and detection rates are in docs/drift.md."""


@dataclass(frozen=True)
class DriftConfig:
    """Knobs of the verdict; the defaults are the ``default`` preset (see docs/drift.md).

    Effects are compared with their floor *after* subtracting what unchanged
    data shows at this window size (``effect_null_level`` quantile, see
    :mod:`.null`).  ``feature_effects`` overrides the floor of single
    features, ``weights`` gives features more (> 1) or less (< 1, 0: never)
    of the error budget of the correction (weighted Benjamini–Hochberg:
    ``p / w`` with the weights normalised to mean 1).  ``rule="psi"``
    replaces the rule by ``psi >= psi_threshold`` per feature.
    """

    min_samples: int = 500
    correction: Literal["bh", "bonferroni"] = "bh"
    q: float = PRESETS["default"]["q"]
    numeric_effect: float = PRESETS["default"]["numeric_effect"]
    categorical_effect: float = PRESETS["default"]["categorical_effect"]
    rule: Literal["default", "psi"] = "default"
    psi_threshold: float = 0.25
    psi_eps: float = PSI_EPS
    effect_null_level: float = 0.9
    min_expected: float = MIN_EXPECTED
    unseen_share: float = PRESETS["default"]["unseen_share"]
    unseen_min_rows: int = 5
    feature_effects: Mapping[str, float] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def preset(cls, sensitivity: Sensitivity = "default", **overrides: Any) -> DriftConfig:
        """A config from a sensitivity preset; keyword arguments that are not None override it."""
        if sensitivity not in PRESETS:
            raise ValueError(f"sensitivity must be one of {sorted(PRESETS)}, not {sensitivity!r}")
        values: dict[str, Any] = dict(PRESETS[sensitivity])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        if self.correction not in ("bh", "bonferroni"):
            raise ValueError(f"correction must be 'bh' or 'bonferroni', not {self.correction!r}")
        if self.rule not in ("default", "psi"):
            raise ValueError(f"rule must be 'default' or 'psi', not {self.rule!r}")
        if not 0 < self.q < 1:
            raise ValueError("q must be in (0, 1)")
        if self.min_samples < 1:
            raise ValueError("min_samples must be positive")
        if self.numeric_effect < 0 or self.categorical_effect < 0 or self.psi_threshold < 0:
            raise ValueError("thresholds must be non-negative")
        if not 0 < self.effect_null_level < 1:
            raise ValueError("effect_null_level must be in (0, 1)")
        if self.min_expected < 0 or not 0 <= self.unseen_share <= 1 or self.unseen_min_rows < 1:
            raise ValueError("min_expected, unseen_share and unseen_min_rows are out of range")
        if any(not 0 <= v <= 10 for v in self.feature_effects.values()):
            raise ValueError("feature_effects must lie in [0, 10]")
        if any(not (0 <= v < math.inf) for v in self.weights.values()):
            raise ValueError("weights must be finite and non-negative")

    def floor(self, name: str, kind: str) -> float:
        """The effect floor of one feature: its own, else its kind's."""
        if name in self.feature_effects:
            return float(self.feature_effects[name])
        return self.numeric_effect if kind == "numeric" else self.categorical_effect


def _json_float(x: float | None) -> float | None:
    """JSON-safe float: nan/inf become None."""
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass
class FeatureResult:
    """One feature's comparison, and why it drifts or not (``reason``).

    ``raw_effect`` is W1/std(reference) for numeric features (the share of
    values that moved if the reference is constant; at least the JS distance
    of the missing/present shares when values are missing) and the JS
    distance for categorical ones; ``effect`` is its excess over what
    unchanged data shows at this window size (see :mod:`.null`), the number
    compared with ``floor``.  ``unseen`` maps levels absent from training to
    their counts and ``unseen_share`` is their share of the rows;
    ``out_of_range`` is the share of present values outside the training
    range; ``pooled_levels`` how many rare levels the chi-square test pooled.
    ``reason``: ``drift`` (significant and effect >= floor),
    ``unseen_levels`` (new categories on at least ``unseen_share`` of the
    rows), ``not_significant``, ``below_floor``, ``psi`` / ``below_psi``
    (PSI rule) or ``excluded`` (weight 0).
    """

    name: str
    kind: Literal["numeric", "categorical"]
    test: Literal["ks", "chi2"]
    statistic: float
    pvalue: float
    effect: float
    psi: float
    samples: int
    adjusted_pvalue: float = math.nan
    drifted: bool = False
    unseen: dict[str, int] = field(default_factory=dict)
    missing_rate: float = 0.0
    out_of_range: float = 0.0
    raw_effect: float = math.nan
    floor: float = math.nan
    weight: float = 1.0
    unseen_share: float = 0.0
    pooled_levels: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("statistic", "pvalue", "effect", "psi", "adjusted_pvalue", "missing_rate", "out_of_range",
                  "raw_effect", "floor", "weight", "unseen_share"):
            d[k] = _json_float(d[k])
        return d


@dataclass
class WindowResult:
    """Verdict of one window: ``features`` ranked drifted first, then by effect, then p-value."""

    status: Status
    samples: int
    features: list[FeatureResult]
    config: DriftConfig
    unseen_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def unseen(self) -> dict[str, list[str]]:
        """Unseen categories by feature, most frequent first (also when data is insufficient)."""
        return {name: sorted(c, key=lambda k: -c[k]) for name, c in self.unseen_counts.items() if c}

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "samples": self.samples,
            "min_samples": self.config.min_samples,
            "rule": self.config.rule,
            "correction": self.config.correction,
            "q": self.config.q,
            "drifted_features": self.drifted_features,
            "unseen": self.unseen,
            "features": [f.to_dict() for f in self.features],
        }


class _NumericStack:
    """All numeric features of a reference as padded matrices, so one check
    runs a couple of dozen array operations in total instead of that many per
    feature (the per-call overhead of numpy dominates at ~40 bins).

    Row ``j`` holds feature ``j``'s bins from column 0, zeros after them and
    its NaN slot in the last column: cumulative sums then give the full CDF
    (NaN last) and, on all but the last column, the CDF of present values;
    padding adds nothing to any statistic.  Numbers equal ``ks_binned``,
    ``wasserstein_binned`` and ``psi`` on each feature's own vectors (tested).
    """

    def __init__(self, profiles: list[NumericProfile]) -> None:
        self.profiles = profiles
        k = len(profiles)
        width = max(p.size for p in profiles)
        groups = max(p.psi_edges.size + 2 for p in profiles)
        rows, cols, cells = [], [], []
        values = np.zeros((k, width - 1))
        for j, p in enumerate(profiles):
            bins = p.size - 1
            rows.append(np.full(p.size, j))
            cols.append(np.append(np.arange(bins), width - 1))
            cells.append(j * groups + np.append(p.psi_groups, groups - 1))
            values[j, :bins] = p.values
            values[j, bins:] = p.values[-1] if bins else 0.0
        self.rows, self.cols = np.concatenate(rows), np.concatenate(cols)
        self.cells, self.k, self.width, self.groups = np.concatenate(cells), k, width, groups
        self.sizes = np.array([p.size for p in profiles])
        self.gaps = np.diff(values, axis=1)
        self.std = np.array([p.std for p in profiles])
        ref = self._matrix(np.concatenate([p.full_counts() for p in profiles]).astype(np.float64))
        self.n = ref.sum(axis=1)
        self.present = self.n - ref[:, -1]
        self.missing = ref[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            self.cdf = np.cumsum(ref, axis=1) / self.n[:, None]
            self.pcdf = np.cumsum(ref[:, :-2], axis=1) / self.present[:, None]
        self.psi_ref = self._psi_matrix(np.concatenate([p.full_counts() for p in profiles]), self.n)
        # Null W1/std at scale 1 (see null.py): W1 * sqrt(1/(1/n + 1/m)) / std when nothing changed.
        self.null_w1 = np.vstack([self._null_draws(p) for p in profiles])
        self.lipschitz = np.array([_w1_lipschitz(p) for p in profiles])
        self._quantiles: dict[float, np.ndarray] = {}

    def _null_quantile(self, level: float) -> np.ndarray:
        cached = self._quantiles.get(level)
        if cached is None:
            cached = self._quantiles[level] = np.quantile(self.null_w1, level, axis=1)
        return cached

    @staticmethod
    def _null_draws(p: NumericProfile) -> np.ndarray:
        present = p.counts.sum()
        if present == 0 or not p.std > 0:
            return np.zeros(NULL_DRAWS)
        draws = bridge_w1(p.counts / present, np.diff(p.values))
        return np.resize(draws, NULL_DRAWS) / p.std

    def _matrix(self, flat: np.ndarray) -> np.ndarray:
        out = np.zeros((self.k, self.width))
        out[self.rows, self.cols] = flat
        return out

    def _psi_matrix(self, flat: np.ndarray, totals: np.ndarray) -> np.ndarray:
        grouped = np.bincount(self.cells, weights=flat, minlength=self.k * self.groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return grouped.reshape(self.k, self.groups) / totals[:, None]

    def compare(self, names: list[str], flat: np.ndarray, eps: float, level: float = 0.9) -> list[FeatureResult]:
        cur = np.asarray(flat, dtype=np.float64)
        if cur.shape != self.rows.shape:
            raise ValueError(f"expected {self.rows.size} numeric counts, got {cur.shape}")
        if cur.size and (not cur.min() >= 0 or not math.isfinite(cur.sum())):
            raise ValueError("counts must be finite and non-negative")
        c = self._matrix(cur)
        m = c.sum(axis=1)
        present = m - c[:, -1]
        cum = np.cumsum(c, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            # NaN sorts after every number, so the NaN slot is the last KS bin:
            # a change in the missing rate moves the CDF like any other shift.
            stat = np.max(np.abs(self.cdf - cum / m[:, None]), axis=1)
            pvalue = np.clip(special.kolmogorov(stat * np.sqrt(self.n * m / (self.n + m))), 0.0, 1.0)
            gap = np.abs(self.pcdf - cum[:, :-2] / present[:, None])
            w1 = np.sum(gap * self.gaps, axis=1) / self.std
            # A constant reference: the share of values that moved off it.
            effect = np.where(self.std > 0, w1, np.max(gap, axis=1, initial=0.0))
            effect = np.where((present > 0) & (self.present > 0), effect, 0.0)
            shares = self._psi_matrix(cur, m)
            r = np.where(self.psi_ref == 0, eps, self.psi_ref)
            q = np.where(shares == 0, eps, shares)
            psi_ = np.sum((q - r) * np.log(q / r), axis=1)
            missing_rate = c[:, -1] / m
            scale = np.sqrt(1.0 / self.present + 1.0 / present)
            null_q = self._null_quantile(level) * scale
            corrected = np.sqrt(np.maximum(effect**2 - null_q**2, 0.0))
            corrected = np.where(self.std > 0, corrected, effect)
            w1_p = np.array([
                w1_pvalue(self.null_w1[j], self.lipschitz[j], float(w1[j] / scale[j]))
                if self.std[j] > 0 and present[j] > 0 and self.present[j] > 0 else 1.0
                for j in range(self.k)
            ])
            # Two tests of one feature: KS (shape, missing rate) and W1 (location, scale, tails);
            # the smaller p-value, doubled (Bonferroni over the two).
            pvalue = np.minimum(1.0, 2.0 * np.minimum(pvalue, w1_p))
            ends = c[np.arange(self.k), self.sizes - 2] + c[:, 0]
            out_of_range = np.where(present > 0, ends / present, 0.0)
        results = []
        for j, name in enumerate(names):
            e, raw = float(corrected[j]), float(effect[j])
            if c[j, -1] or self.missing[j]:
                miss = js_distance([self.missing[j], self.present[j]], [c[j, -1], present[j]])
                miss = 0.0 if math.isnan(miss) else miss
                raw = max(raw, miss)
                e = max(e, excess(miss, two_level_quantile(self.n[j], m[j], level)))
            if m[j] == 0:
                results.append(FeatureResult(name, "numeric", "ks", math.nan, 1.0, 0.0, math.nan, 0))
                continue
            results.append(
                FeatureResult(
                    name=name,
                    kind="numeric",
                    test="ks",
                    statistic=float(stat[j]),
                    pvalue=float(pvalue[j]),
                    effect=e,
                    psi=float(psi_[j]),
                    samples=int(m[j]),
                    missing_rate=float(missing_rate[j]),
                    out_of_range=float(out_of_range[j]),
                    raw_effect=raw,
                )
            )
        return results


def _w1_lipschitz(p: NumericProfile) -> float:
    """``sum_i gap_i sd(B(F_i)) / std``: the Lipschitz constant of the null W1 at scale 1."""
    present = p.counts.sum()
    if present == 0 or not p.std > 0:
        return 0.0
    cdf = np.cumsum(p.counts)[:-1] / present
    return float(np.dot(np.sqrt(cdf * (1 - cdf)), np.diff(p.values)) / p.std)


_STACKS: WeakKeyDictionary[object, _NumericStack] = WeakKeyDictionary()


def _stack(owner: object, profiles: list[NumericProfile]) -> _NumericStack:
    stack = _STACKS.get(owner)
    if stack is None:
        stack = _STACKS[owner] = _NumericStack(profiles)
    return stack


def _categorical(name: str, prof: CategoricalProfile, counts: Counts, config: DriftConfig) -> FeatureResult:
    """Chi-square homogeneity (rare levels pooled), JS distance and PSI over levels + the unseen slot."""
    if not isinstance(counts, Mapping):
        raise ValueError(f"{name}: categorical counts must be a {{level: count}} mapping")
    vec, unseen = prof.vector(counts)
    cur = vec.astype(np.float64)
    if cur.size and not cur.min() >= 0:
        raise ValueError(f"{name}: counts must be non-negative")
    ref = prof.full_counts().astype(np.float64)
    m = int(cur.sum())
    stat, p, _, pooled = chi2_pooled(ref, cur, config.min_expected)
    raw = _js(ref, cur)
    raw = 0.0 if math.isnan(raw) else raw
    effect = excess(raw, categorical_null(prof, ref).quantile(m, config.effect_null_level)) if m else 0.0
    ref_unseen = ref[-1] / ref.sum() if ref.sum() else 0.0
    return FeatureResult(
        name=name,
        kind="categorical",
        test="chi2",
        statistic=stat,
        pvalue=p,
        effect=effect,
        psi=_psi(ref, cur, config.psi_eps),
        samples=m,
        unseen=unseen,
        raw_effect=raw,
        unseen_share=float(max(cur[-1] / m - ref_unseen, 0.0)) if m else 0.0,
        pooled_levels=pooled,
    )


def evaluate_window(
    reference: Reference,
    window_counts: WindowCounts | Mapping[str, Any],
    config: DriftConfig = DriftConfig(),
) -> WindowResult:
    """Compare a window's feature counts with the reference and decide.

    ``window_counts`` is a :class:`WindowCounts` or a mapping of feature name
    to its counts (a vector from ``bin_counts`` or a dict from
    ``category_counts``); features absent from the mapping are skipped.
    """
    numeric = list(reference.numeric)
    categorical: dict[str, Any]
    flat: np.ndarray
    if isinstance(window_counts, WindowCounts):
        samples = window_counts.rows
        present = set(reference.features)
        flat = window_counts._flat
        categorical = dict(window_counts.categorical)
    else:
        present = {name for name in reference.features if name in window_counts}
        totals = [
            int(sum(c.values())) if isinstance(c, Mapping) else int(np.sum(c))
            for name, c in window_counts.items()
            if name in present
        ]
        samples = max(totals, default=0)
        parts = []
        for name, prof in reference.numeric.items():
            raw = window_counts.get(name)
            vec = np.zeros(prof.size) if raw is None else np.asarray(raw, dtype=np.float64)
            if vec.shape != (prof.size,):
                raise ValueError(f"{name}: expected {prof.size} counts, got {vec.shape}")
            parts.append(vec)
        flat = np.concatenate(parts) if parts else np.zeros(0)
        categorical = {name: window_counts[name] for name in reference.categorical if name in present}
    unseen = {
        name: reference.categorical[name].vector(counts)[1]
        for name, counts in categorical.items()
        if isinstance(counts, Mapping)
    }
    if samples < config.min_samples:
        return WindowResult("insufficient_data", samples, [], config, unseen)
    results: list[FeatureResult] = []
    if numeric:
        stack = _stack(reference, list(reference.numeric.values()))
        results = [
            r for r in stack.compare(numeric, flat, config.psi_eps, config.effect_null_level) if r.name in present
        ]
    for name, counts in categorical.items():
        results.append(_categorical(name, reference.categorical[name], counts, config))
    result = _decide(results, samples, config)
    result.unseen_counts = unseen
    return result


def _weights(results: list[FeatureResult], config: DriftConfig) -> np.ndarray:
    """Per-feature weights normalised to mean 1 (features without one weigh 1; all 0 stays all 0)."""
    w = np.array([float(config.weights.get(r.name, 1.0)) for r in results])
    total = w.sum()
    return w * (w.size / total) if total > 0 else w


def _decide(results: list[FeatureResult], samples: int, config: DriftConfig) -> WindowResult:
    correct = benjamini_hochberg if config.correction == "bh" else bonferroni
    weights = _weights(results, config)
    with np.errstate(divide="ignore", invalid="ignore"):
        weighted = np.where(weights > 0, np.array([r.pvalue for r in results]) / weights, 1.0)
    significant, adjusted = correct(np.minimum(weighted, 1.0), config.q)
    for r, sig, adj, w in zip(results, significant, adjusted, weights):
        r.adjusted_pvalue = float(adj)
        r.weight = float(w)
        r.floor = config.floor(r.name, r.kind)
        if config.rule == "psi":
            r.drifted = bool(r.psi >= config.psi_threshold)
            r.reason = "psi" if r.drifted else "below_psi"
            continue
        new_levels = (
            r.unseen_share >= config.unseen_share
            and r.unseen_share * r.samples >= config.unseen_min_rows
            and w > 0
        )
        if w == 0:
            r.reason = "excluded"
        elif sig and r.effect >= r.floor:
            r.reason = "drift"
        elif new_levels:
            r.reason = "unseen_levels"
        else:
            r.reason = "not_significant" if not sig else "below_floor"
        r.drifted = r.reason in ("drift", "unseen_levels")
    results.sort(key=lambda r: (not r.drifted, -r.effect, r.adjusted_pvalue, -r.raw_effect))
    status: Status = "drift" if any(r.drifted for r in results) else "no_drift"
    return WindowResult(status, samples, results, config)


def _evaluate_distribution(
    profile: Profile, name: str, counts: Counts | None, config: DriftConfig
) -> WindowResult:
    """One distribution (predictions or labels) against its reference: a single test, so no correction."""
    if counts is None:
        return WindowResult("insufficient_data", 0, [], config)
    samples = int(sum(counts.values())) if isinstance(counts, Mapping) else int(np.sum(counts))
    if samples < config.min_samples:
        return WindowResult("insufficient_data", samples, [], config)
    if isinstance(profile, NumericProfile):
        result = _stack(profile, [profile]).compare(
            [name], np.asarray(counts), config.psi_eps, config.effect_null_level
        )[0]
    else:
        result = _categorical(name, profile, counts, config)
    return _decide([result], samples, config)


def evaluate_predictions(
    reference: Reference,
    prediction_counts: WindowCounts | Counts,
    config: DriftConfig = DriftConfig(),
) -> WindowResult:
    """Prediction drift: the same rule on the predictions' distribution.

    Class counts (chi-square + JS) for classification, value bins (KS + W1)
    for regression; a single test, so the correction is a no-op.
    """
    pred = reference.prediction
    if pred is None:
        raise ValueError("the reference has no prediction profile")
    counts = (
        prediction_counts.predictions if isinstance(prediction_counts, WindowCounts) else prediction_counts
    )
    return _evaluate_distribution(pred, "prediction", counts, config)


def evaluate_labels(reference: Reference, label_counts: Counts | None, config: DriftConfig = DriftConfig()) -> WindowResult:
    """Label drift: feedback labels against the training labels, by the same rule as predictions.

    ``label_counts`` is ``{class: count}`` (classification, ``str(label)``)
    or the count vector over the reference label bins then NaN (regression).
    A change in the labels' distribution (prior shift, or a changed concept
    when the inputs did not move) shows here even when the error rate's
    check waits for more rows.
    """
    if reference.label is None:
        raise ValueError("the reference has no training-label profile")
    return _evaluate_distribution(reference.label, "label", label_counts, config)


def evaluate_multivariate(
    reference: Reference,
    projection_counts: WindowCounts | Mapping[str, Any],
    config: DriftConfig = DriftConfig(),
) -> WindowResult:
    """Multivariate drift: every projection of the reference tested like a numeric feature.

    KS and W1 on each projection's bins, Benjamini–Hochberg across the
    projections, the corrected effect against ``numeric_effect`` (or a
    projection's own floor, by its name ``a~b``).  Projections absent from
    ``projection_counts`` are left out.
    """
    mv = reference.multivariate
    if mv is None:
        raise ValueError("the reference has no multivariate section")
    raw = projection_counts.projections if isinstance(projection_counts, WindowCounts) else projection_counts
    present = [p for p in mv.projections if p.name in raw]
    if not present:
        return WindowResult("insufficient_data", 0, [], config)
    parts = []
    for p in mv.projections:
        vec = np.asarray(raw[p.name], dtype=np.float64) if p.name in raw else np.zeros(p.profile.size)
        if vec.shape != (p.profile.size,):
            raise ValueError(f"{p.name}: expected {p.profile.size} counts, got {vec.shape}")
        parts.append(vec)
    samples = max(int(np.asarray(raw[p.name]).sum()) for p in present)
    if samples < config.min_samples:
        return WindowResult("insufficient_data", samples, [], config)
    stack = _stack(mv, [p.profile for p in mv.projections])
    names = {p.name for p in present}
    results = [
        r for r in stack.compare(mv.names, np.concatenate(parts), config.psi_eps, config.effect_null_level)
        if r.name in names
    ]
    return _decide(results, samples, config)


@dataclass(frozen=True)
class PerformanceResult:
    """Live error from feedback against the training baseline and the allowed maximum."""

    metric: Literal["error_rate", "rmse"]
    value: float
    baseline: float
    maximum: float
    samples: int
    status: Literal["degraded", "ok", "insufficient_data"]
    low: float = math.nan
    high: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("value", "baseline", "maximum", "low", "high"):
            d[k] = _json_float(d[k])
        return d


def _wilson(errors: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = errors / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def performance(
    errors: float,
    n: int,
    baseline: float,
    maximum: float,
    *,
    task: Literal["classification", "regression"] = "classification",
    min_samples: int = 100,
) -> PerformanceResult:
    """Error rate (classification: ``errors`` = wrong predictions) or RMSE
    (regression: ``errors`` = sum of squared errors) over ``n`` feedback rows.

    ``status`` is "degraded" when the value exceeds ``maximum``; below
    ``min_samples`` feedback rows it is "insufficient_data".  For
    classification ``low``/``high`` give a 95 % Wilson interval of the rate
    so a reader can judge how firm a breach is.
    """
    if n < 0 or errors < 0:
        raise ValueError("errors and n must be non-negative")
    metric: Literal["error_rate", "rmse"] = "error_rate" if task == "classification" else "rmse"
    if n == 0:
        return PerformanceResult(metric, math.nan, baseline, maximum, 0, "insufficient_data")
    value = errors / n if metric == "error_rate" else math.sqrt(errors / n)
    low, high = _wilson(min(errors, n), n) if metric == "error_rate" else (math.nan, math.nan)
    if n < min_samples:
        status: Literal["degraded", "ok", "insufficient_data"] = "insufficient_data"
    else:
        status = "degraded" if value > maximum else "ok"
    return PerformanceResult(metric, value, baseline, maximum, n, status, low, high)
