"""Fixed, seeded synthetic data for the drift benchmark.

20 numeric features of mixed shapes (normal, exponential, uniform, gamma,
Poisson counts with ties, lognormal) and 3 categorical features with 10
levels (two uniform, one skewed).  The "shifted" distribution changes
exactly 5 features:

* ``normal_1``     mean +0.25 sd
* ``normal_2``     scale x1.3
* ``normal_3``     mean +0.05 sd (subtle: below the 0.1 sd practical threshold)
* ``lognormal_1``  sigma 0.5 -> 0.6 (tail)
* ``cat_uniform_1`` level L0 0.10 -> 0.16 and level L1 0.10 -> 0.04

Data set: a 50,000-row reference, a 10,000-row current window (shifted) and
200 windows of 500 rows: windows 0-99 from the reference distribution (to
count false alarms), 100-199 from the shifted one (to count detections).

``python bench/drift/generate.py --out DIR`` writes it as ``drift_data.npz``
(numpy only) for the peer tools, which run in their own environments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 20240607
N_REFERENCE = 50_000
N_CURRENT = 10_000
N_WINDOWS = 200
WINDOW_ROWS = 500
LEVELS = np.array([f"L{i}" for i in range(10)])
SKEWED = np.array([0.30, 0.20, 0.15, 0.10, 0.08, 0.06, 0.04, 0.03, 0.02, 0.02])
SHIFTED_LEVELS = np.array([0.16, 0.04] + [0.10] * 8)

NUMERIC = [
    "normal_1", "normal_2", "normal_3", "normal_4", "normal_5",
    "expon_1", "expon_2", "expon_3",
    "uniform_1", "uniform_2", "uniform_3",
    "gamma_1", "gamma_2", "gamma_3",
    "poisson_1", "poisson_2", "poisson_3",
    "lognormal_1", "lognormal_2", "lognormal_3",
]  # fmt: skip
CATEGORICAL = ["cat_uniform_1", "cat_uniform_2", "cat_skewed"]
FEATURES = NUMERIC + CATEGORICAL
SHIFTED = ["normal_1", "normal_2", "normal_3", "lognormal_1", "cat_uniform_1"]


def sample(rng: np.random.Generator, n: int, shifted: bool = False) -> dict[str, np.ndarray]:
    """``n`` rows of every feature; ``shifted`` applies the five changes above."""
    s = shifted
    cols = {
        "normal_1": rng.normal(50.0 + (0.25 * 10.0 if s else 0.0), 10.0, n),
        "normal_2": rng.normal(0.0, 1.3 if s else 1.0, n),
        "normal_3": rng.normal(-3.0 + (0.05 * 2.0 if s else 0.0), 2.0, n),
        "normal_4": rng.normal(100.0, 25.0, n),
        "normal_5": rng.normal(0.0, 0.01, n),
        "expon_1": rng.exponential(1.0, n),
        "expon_2": rng.exponential(30.0, n),
        "expon_3": rng.exponential(0.2, n),
        "uniform_1": rng.uniform(0.0, 1.0, n),
        "uniform_2": rng.uniform(-100.0, 100.0, n),
        "uniform_3": rng.uniform(5.0, 6.0, n),
        "gamma_1": rng.gamma(2.0, 2.0, n),
        "gamma_2": rng.gamma(0.5, 1.0, n),
        "gamma_3": rng.gamma(9.0, 0.5, n),
        "poisson_1": rng.poisson(1.0, n).astype(np.float64),
        "poisson_2": rng.poisson(4.0, n).astype(np.float64),
        "poisson_3": rng.poisson(20.0, n).astype(np.float64),
        "lognormal_1": rng.lognormal(0.0, 0.6 if s else 0.5, n),
        "lognormal_2": rng.lognormal(3.0, 1.0, n),
        "lognormal_3": rng.lognormal(-1.0, 0.25, n),
        "cat_uniform_1": rng.choice(LEVELS, n, p=SHIFTED_LEVELS if s else None),
        "cat_uniform_2": rng.choice(LEVELS, n),
        "cat_skewed": rng.choice(LEVELS, n, p=SKEWED),
    }
    return {name: cols[name] for name in FEATURES}


def generate(seed: int = SEED) -> dict[str, object]:
    """The whole data set, identical on every call with the same seed."""
    ref_ss, cur_ss, *win_ss = np.random.SeedSequence(seed).spawn(2 + N_WINDOWS)
    reference = sample(np.random.default_rng(ref_ss), N_REFERENCE)
    current = sample(np.random.default_rng(cur_ss), N_CURRENT, shifted=True)
    windows = [
        sample(np.random.default_rng(ss), WINDOW_ROWS, shifted=i >= N_WINDOWS // 2)
        for i, ss in enumerate(win_ss)
    ]
    return {"reference": reference, "current": current, "windows": windows}


def save(data: dict[str, object], path: Path) -> None:
    """One ``.npz``: ``reference/<f>``, ``current/<f>``, ``window/<i>/<f>`` arrays."""
    arrays: dict[str, np.ndarray] = {}
    for name, col in data["reference"].items():  # type: ignore[attr-defined]
        arrays[f"reference/{name}"] = col
    for name, col in data["current"].items():  # type: ignore[attr-defined]
        arrays[f"current/{name}"] = col
    for i, window in enumerate(data["windows"]):  # type: ignore[arg-type]
        for name, col in window.items():
            arrays[f"window/{i}/{name}"] = col
    np.savez_compressed(path, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for drift_data.npz")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "drift_data.npz"
    save(generate(), path)
    print(path)


if __name__ == "__main__":
    main()
