"""The drift verdict for a window of counts against a reference profile.

Default rule: a feature drifts when its test is significant after
Benjamini–Hochberg correction across all features (q = 0.05) **and** its
effect size is practically large (Wasserstein-1 / std(reference) >= 0.1 for
numeric features, Jensen–Shannon distance >= 0.1 for categorical ones); the
window drifts when any feature does.  The correction keeps the window-level
false-alarm rate near q however many features there are; the effect size
keeps large windows from alarming on differences too small to matter; "any
feature" (not "half of the columns") catches drift confined to a few
features.  Below ``min_samples`` rows the answer is "insufficient_data",
never "no_drift".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import special

from .profile import CategoricalProfile, Counts, NumericProfile, Profile, Reference, WindowCounts
from .stats import PSI_EPS, benjamini_hochberg, bonferroni, chi2_homogeneity, js_distance, psi

Status = Literal["drift", "no_drift", "insufficient_data"]


@dataclass(frozen=True)
class DriftConfig:
    """Knobs of the verdict; the defaults are the measured-good rule (see docs/drift.md).

    ``rule="psi"`` replaces the test-and-effect rule by ``psi >= psi_threshold``
    per feature (PSI on the reference deciles), for users who want the
    classic banking-style check.
    """

    min_samples: int = 500
    correction: Literal["bh", "bonferroni"] = "bh"
    q: float = 0.05
    numeric_effect: float = 0.1
    categorical_effect: float = 0.1
    rule: Literal["default", "psi"] = "default"
    psi_threshold: float = 0.25
    psi_eps: float = PSI_EPS

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


def _num(x: float | None) -> float | None:
    """JSON-safe float: nan/inf become None."""
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass
class FeatureResult:
    """One feature's comparison; ``effect`` is W1/std (numeric) or JS distance (categorical)."""

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("statistic", "pvalue", "effect", "psi", "adjusted_pvalue", "missing_rate", "out_of_range"):
            d[k] = _num(d[k])
        return d


@dataclass
class WindowResult:
    """Verdict of one window: ``features`` ranked drifted first, then by effect, then p-value."""

    status: Status
    samples: int
    features: list[FeatureResult]
    config: DriftConfig

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def unseen(self) -> dict[str, list[str]]:
        """Unseen categories by feature, most frequent first."""
        return {
            f.name: sorted(f.unseen, key=lambda k: -f.unseen[k]) for f in self.features if f.unseen
        }

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


def _numeric(name: str, prof: NumericProfile, counts: Counts, eps: float) -> FeatureResult:
    """KS, W1/std, PSI of one numeric feature from the cached reference arrays.

    Same numbers as ``ks_binned``/``wasserstein_binned``/``psi`` on the full
    vectors (tested), computed with fewer passes: this runs once per feature
    per check.
    """
    ref = prof.prepared()
    cur = np.asarray(counts, dtype=np.float64)
    if cur.shape != ref["full"].shape:
        raise ValueError(f"{name}: expected {ref['full'].size} counts, got {cur.shape}")
    m = float(cur.sum())
    if not cur.min() >= 0 or not math.isfinite(m):
        raise ValueError(f"{name}: counts must be finite and non-negative")
    n = ref["n"]
    if m == 0 or n == 0:
        return FeatureResult(name, "numeric", "ks", math.nan, 1.0, 0.0, math.nan, int(m))
    cum = np.cumsum(cur)
    # NaN sorts after every number, so the NaN slot is the last KS bin:
    # a change in the missing rate moves the CDF like any other shift.
    stat = float(np.max(np.abs(ref["cdf"] - cum / m)))
    p = min(max(float(special.kolmogorov(stat * math.sqrt(n * m / (n + m)))), 0.0), 1.0)
    present = m - cur[-1]
    effect = 0.0
    if present > 0 and ref["present"] > 0:
        gap = np.abs(ref["pcdf"] - cum[:-2] / present)
        if prof.std > 0:
            effect = float(np.dot(gap, ref["gaps"])) / prof.std
        else:  # constant reference: the share of values that moved off it
            effect = float(np.max(gap))
    if cur[-1] or ref["full"][-1]:
        miss = js_distance([ref["full"][-1], ref["present"]], [cur[-1], present])
        effect = max(effect, miss)
    shares = prof.psi_counts(cur) / m
    r = np.where(ref["psi"] == 0, eps, ref["psi"])
    c = np.where(shares == 0, eps, shares)
    return FeatureResult(
        name=name,
        kind="numeric",
        test="ks",
        statistic=stat,
        pvalue=p,
        effect=effect,
        psi=float(np.sum((c - r) * np.log(c / r))),
        samples=int(m),
        missing_rate=float(cur[-1] / m),
        out_of_range=float((cur[0] + cur[-2]) / present) if present else 0.0,
    )


def _categorical(name: str, prof: CategoricalProfile, counts: Counts, eps: float) -> FeatureResult:
    """Chi-square homogeneity, JS distance and PSI over levels + the unseen slot."""
    if not isinstance(counts, Mapping):
        raise ValueError(f"{name}: categorical counts must be a {{level: count}} mapping")
    vec, unseen = prof.vector(counts)
    ref = prof.full_counts()
    stat, p, _ = chi2_homogeneity(ref, vec)
    effect = js_distance(ref, vec)
    return FeatureResult(
        name=name,
        kind="categorical",
        test="chi2",
        statistic=stat,
        pvalue=p,
        effect=0.0 if math.isnan(effect) else effect,
        psi=psi(ref, vec, eps),
        samples=int(vec.sum()),
        unseen=unseen,
    )


def _compare(name: str, prof: Profile, counts: Counts, eps: float) -> FeatureResult:
    if isinstance(prof, NumericProfile):
        return _numeric(name, prof, counts, eps)
    return _categorical(name, prof, counts, eps)


def _window_parts(
    reference: Reference, window: WindowCounts | Mapping[str, Any]
) -> tuple[dict[str, Counts], int]:
    if isinstance(window, WindowCounts):
        return window.features, window.rows
    counts = {name: window[name] for name in reference.features if name in window}
    totals = [
        int(sum(c.values())) if isinstance(c, Mapping) else int(np.sum(c)) for c in counts.values()
    ]
    return counts, max(totals, default=0)


def _decide(results: list[FeatureResult], samples: int, config: DriftConfig) -> WindowResult:
    if samples < config.min_samples:
        return WindowResult("insufficient_data", samples, [], config)
    correct = benjamini_hochberg if config.correction == "bh" else bonferroni
    significant, adjusted = correct([r.pvalue for r in results], config.q)
    for r, sig, adj in zip(results, significant, adjusted):
        r.adjusted_pvalue = float(adj)
        if config.rule == "psi":
            r.drifted = bool(r.psi >= config.psi_threshold)
        else:
            limit = config.numeric_effect if r.kind == "numeric" else config.categorical_effect
            r.drifted = bool(sig) and r.effect >= limit
    results.sort(key=lambda r: (not r.drifted, -r.effect, r.pvalue))
    status: Status = "drift" if any(r.drifted for r in results) else "no_drift"
    return WindowResult(status, samples, results, config)


def evaluate_window(
    reference: Reference,
    window_counts: WindowCounts | Mapping[str, Any],
    config: DriftConfig = DriftConfig(),
) -> WindowResult:
    """Compare a window's feature counts with the reference and decide.

    ``window_counts`` is a :class:`WindowCounts` or a mapping of feature name
    to its counts (a vector from ``bin_counts`` or a dict from
    ``category_counts``); features absent from it are skipped.
    """
    counts, samples = _window_parts(reference, window_counts)
    if samples < config.min_samples:
        return WindowResult("insufficient_data", samples, [], config)
    results = [
        _compare(name, reference.features[name], c, config.psi_eps) for name, c in counts.items()
    ]
    return _decide(results, samples, config)


def evaluate_predictions(
    reference: Reference,
    prediction_counts: WindowCounts | Counts,
    config: DriftConfig = DriftConfig(),
) -> WindowResult:
    """Prediction drift: the same rule on the predictions' distribution.

    Class counts (chi-square + JS) for classification, value bins (KS + W1)
    for regression; a single test, so the correction is a no-op.
    """
    if reference.prediction is None:
        raise ValueError("the reference has no prediction profile")
    if isinstance(prediction_counts, WindowCounts):
        counts = prediction_counts.predictions
        if counts is None:
            return WindowResult("insufficient_data", 0, [], config)
    else:
        counts = prediction_counts
    samples = int(sum(counts.values())) if isinstance(counts, Mapping) else int(np.sum(counts))
    if samples < config.min_samples:
        return WindowResult("insufficient_data", samples, [], config)
    result = _compare("prediction", reference.prediction, counts, config.psi_eps)
    return _decide([result], samples, config)


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
            d[k] = _num(d[k])
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
