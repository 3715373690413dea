"""What an effect size looks like when nothing changed, for this window size.

A distance between a reference and a finite sample is positive even when
both come from one distribution: the Jensen–Shannon distance of a 500-row
sample of a 94-level categorical from its own reference is about 0.19.  So a
raw effect compared with a fixed floor means different things at different
window sizes and level counts.  The verdict therefore uses the *excess* of
the squared distance over its null quantile for this window size::

    effect = sqrt(max(0, d**2 - Q0(n_ref, m)))

where ``Q0`` is the ``level`` quantile (default 0.9) of ``d**2`` when the
window and the reference are independent samples of one distribution.  On
unchanged data the effect is 0 with probability ``level`` at every window
size and level count, and it rises to the population distance as windows
grow (``d**2`` is, to first order, the population value plus noise whose
quantile ``Q0`` shrinks like ``1/n_ref + 1/m``).

* Numeric (W1 / std on bins): the centred empirical CDFs at the bin edges are,
  to first order, a Brownian bridge at the reference's cumulative shares
  times ``sqrt(1/n_ref + 1/m)``.  The distribution of ``W1`` at scale 1 is
  computed once per profile by a seeded Monte-Carlo of that bridge and
  scales exactly, so a check costs nothing extra.
* Categorical (JS distance): levels with few expected rows are far from any
  Gaussian limit, so the null quantile comes from a seeded Monte-Carlo of
  two multinomial samples of the reference's shares, ``n_ref`` and ``m``
  rows, cached per (profile, m).
* Missing share (two levels, JS): ``d**2 ≈ chi2_1 (1/n + 1/m) / (8 ln 2)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from weakref import WeakKeyDictionary

import numpy as np
from scipy import special, stats

NULL_DRAWS = 4000
"""Monte-Carlo draws of the numeric null (once per profile)."""
CATEGORICAL_DRAWS = 400
"""Monte-Carlo draws of the categorical null (once per profile and window size)."""
_SEED = 20260
_CACHE_SIZE = 64


def bridge_w1(shares: np.ndarray, gaps: np.ndarray, draws: int = NULL_DRAWS, seed: int = _SEED) -> np.ndarray:
    """Sorted null draws of ``sum_i |B(F_i)| gaps_i`` for a Brownian bridge ``B``.

    ``shares`` are the reference's bin shares (summing to 1), ``gaps`` the
    distances between consecutive bin positions (one fewer than shares).
    ``W1 * sqrt(1/(1/n + 1/m))`` has this distribution when nothing changed.
    """
    shares = np.asarray(shares, dtype=np.float64)
    gaps = np.asarray(gaps, dtype=np.float64)
    if shares.size < 2 or not np.any(gaps > 0):
        return np.zeros(1)
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal((draws, shares.size)) * np.sqrt(shares), axis=1)
    cdf = np.cumsum(shares)
    bridge = walk[:, :-1] - cdf[None, :-1] * walk[:, -1:]
    return np.sort(np.abs(bridge) @ gaps)


def w1_pvalue(null_sorted: np.ndarray, lipschitz: float, observed: float) -> float:
    """P-value of a W1 (at scale 1) against its null: Monte-Carlo, and a Gaussian bound in the tail.

    The null W1 is a Lipschitz function of Gaussian noise with constant
    ``L = sum_i gap_i sd(B(F_i))`` and mean ``sqrt(2/pi) L``, so
    ``P(W >= mean + t) <= exp(-t**2 / (2 L**2))`` (Gaussian concentration): a
    valid bound where the draws run out, so far-out p-values are small
    numbers rather than ``1 / draws``.
    """
    draws = null_sorted.size
    above = draws - int(np.searchsorted(null_sorted, observed, side="left"))
    p = (above + 1) / (draws + 1)
    if lipschitz > 0:
        t = observed - math.sqrt(2 / math.pi) * lipschitz
        if t > 0:
            p = min(p, math.exp(-t * t / (2 * lipschitz * lipschitz)))
    return p


class CategoricalNull:
    """Null quantiles of the squared JS distance (bits) for one reference, per window size."""

    def __init__(self, ref_counts: np.ndarray, draws: int = CATEGORICAL_DRAWS) -> None:
        ref = np.asarray(ref_counts, dtype=np.float64)
        self.n_ref = int(round(ref.sum()))
        self.shares = ref / ref.sum() if ref.sum() > 0 else ref
        self.draws = draws
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def sample(self, m: int) -> np.ndarray:
        """Sorted null draws of ``JS distance**2`` between ``n_ref`` and ``m`` rows."""
        hit = self._cache.get(m)
        if hit is not None:
            self._cache.move_to_end(m)
            return hit
        keep = self.shares > 0
        p = self.shares[keep]
        if p.size < 2 or m <= 0 or self.n_ref <= 0:
            out = np.zeros(1)
        else:
            p = p / p.sum()
            rng = np.random.default_rng([_SEED, p.size, m, self.n_ref])
            a = rng.multinomial(self.n_ref, p, size=self.draws) / self.n_ref
            b = rng.multinomial(m, p, size=self.draws) / m
            out = np.sort(js_squared_rows(a, b))
        self._cache[m] = out
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return out

    def quantile(self, m: int, level: float) -> float:
        return float(np.quantile(self.sample(m), level))


def js_squared_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise squared JS distance (JS divergence in bits) of share matrices."""
    mid = (a + b) / 2.0
    js = (special.rel_entr(a, mid).sum(axis=-1) + special.rel_entr(b, mid).sum(axis=-1)) / (2.0 * math.log(2.0))
    return np.maximum(js, 0.0)


def two_level_quantile(n_ref: float, m: float, level: float) -> float:
    """Null quantile of the squared JS distance (bits) of two shares (the missing rate)."""
    if n_ref <= 0 or m <= 0:
        return 0.0
    return float(stats.chi2.ppf(level, 1)) * (1.0 / n_ref + 1.0 / m) / (8.0 * math.log(2.0))


def excess(distance: float, null_quantile_sq: float) -> float:
    """``sqrt(max(0, d**2 - Q0))``: the part of a distance that noise of this size does not explain."""
    if not math.isfinite(distance):
        return 0.0
    return math.sqrt(max(0.0, distance * distance - null_quantile_sq))


_CATEGORICAL: WeakKeyDictionary[object, CategoricalNull] = WeakKeyDictionary()


def categorical_null(owner: object, ref_counts: np.ndarray) -> CategoricalNull:
    """The cached null of a categorical profile (``owner``: the profile object)."""
    null = _CATEGORICAL.get(owner)
    if null is None:
        null = _CATEGORICAL[owner] = CategoricalNull(ref_counts)
    return null
