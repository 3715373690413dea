"""Drift detection from binned counts.

A check compares the *counts* of a current window with a reference profile
built from the training data, so it costs O(bins) whatever the window size,
and counts from many requests and replicas simply add up.

* Trainer: ``build_reference(columns, categorical, predictions, task)`` ->
  JSON-ready dict, stored as ``reference.json`` (``"format": 1``).
* Server: ``Reference.from_dict(d)``; per request ``reference.count_window(
  columns, predictions)`` (or ``bin_counts`` / ``category_counts`` /
  ``prediction_counts``), merged into a ``WindowCounts``.
* Checker: ``evaluate_window(reference, window, DriftConfig())`` ->
  ``WindowResult`` with status "drift" / "no_drift" / "insufficient_data";
  ``evaluate_predictions`` for the prediction distribution,
  ``evaluate_labels`` for feedback labels against the training labels,
  ``evaluate_multivariate`` for the projections of the numeric features
  (a change in how features move together) and ``performance`` for
  feedback error.

Default rule per feature: KS and a Wasserstein test (numeric, on the binned
CDF) or chi-square homogeneity with rare levels pooled (categorical),
Benjamini–Hochberg across features at q = 0.05, AND an effect size beyond
what unchanged data shows at this window size of at least 0.04
(Wasserstein-1 / reference std, or Jensen–Shannon distance base 2), or new
categories on at least 1 % of the rows; the window drifts if any feature
does.  ``DriftConfig.preset("strict" | "default" | "lenient")``.

Binning error of KS: bins are right-closed reference quantiles, so the binned
CDFs equal the raw empirical CDFs at every edge and
``D_binned <= D_raw <= D_binned + max_i min(r_i, c_i)`` with ``r_i``, ``c_i``
the reference/current shares of bin ``i``; with ``b`` quantile bins
``r_i <= 1/b + 1/n_ref`` for continuous data, and a bin that holds one tied
value adds no error when current values share it (discrete data with at most
``b`` distinct values is exact).  Binning only lowers D, so the test is
conservative.  See docs/drift.md.
"""

from .null import CategoricalNull, bridge_w1, w1_pvalue
from .profile import (
    FORMAT,
    CategoricalProfile,
    MultivariateProfile,
    NumericProfile,
    Reference,
    WindowCounts,
    build_reference,
)
from .stats import (
    benjamini_hochberg,
    bonferroni,
    chi2_homogeneity,
    chi2_pooled,
    pool_rare_levels,
    js_distance,
    ks_binned,
    psi,
    wasserstein_binned,
)
from .verdict import (
    PRESETS,
    DriftConfig,
    FeatureResult,
    PerformanceResult,
    WindowResult,
    evaluate_labels,
    evaluate_multivariate,
    evaluate_predictions,
    evaluate_window,
    performance,
)

__all__ = [
    "FORMAT",
    "PRESETS",
    "CategoricalNull",
    "bridge_w1",
    "chi2_pooled",
    "pool_rare_levels",
    "w1_pvalue",
    "CategoricalProfile",
    "DriftConfig",
    "FeatureResult",
    "MultivariateProfile",
    "NumericProfile",
    "PerformanceResult",
    "Reference",
    "WindowCounts",
    "WindowResult",
    "benjamini_hochberg",
    "bonferroni",
    "build_reference",
    "chi2_homogeneity",
    "evaluate_labels",
    "evaluate_multivariate",
    "evaluate_predictions",
    "evaluate_window",
    "js_distance",
    "ks_binned",
    "performance",
    "psi",
    "wasserstein_binned",
]
