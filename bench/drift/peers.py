"""Run one real peer drift tool on the benchmark data; prints one JSON line.

    <venv>/bin/python bench/drift/peers.py {evidently|nannyml|alibi-detect} drift_data.npz
    <venv>/bin/python bench/drift/peers.py {evidently|nannyml|alibi-detect} flights_windows.npz --windows

The second form (presets.py --peers) reads a table (``col/<f>``), the
reference rows (``ref``) and the rows of each window
(``win/<period>/<size>/<i>``) and prints, per period and size, the share of
windows the tool calls drift.

Runs inside the peer's own virtualenv (see README.md), so it imports nothing
from this repository; run.py --peers calls it.  Each tool runs with its
defaults except where noted:

* evidently:    Report([DataDriftPreset()]); window drifts when >= 50 % of
                columns drift (its default dataset rule).
* nannyml:      UnivariateDriftCalculator with its default methods
                (Jensen-Shannon, thresholds from reference chunks of the
                window size); a window drifts when any column alerts.
* alibi-detect: TabularDrift (KS numeric / chi-square categorical,
                Bonferroni, p_val=0.05); a window drifts when is_drift.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")

SHIFTED = ["normal_1", "normal_2", "normal_3", "lognormal_1", "cat_uniform_1"]
Verdict = tuple[bool, list[str]]


def load(path: str) -> dict[str, Any]:
    z = np.load(path)
    ref: dict[str, np.ndarray] = {}
    cur: dict[str, np.ndarray] = {}
    windows: dict[int, dict[str, np.ndarray]] = {}
    for key in z.files:
        part, *rest = key.split("/")
        if part == "reference":
            ref[rest[0]] = z[key]
        elif part == "current":
            cur[rest[0]] = z[key]
        else:
            windows.setdefault(int(rest[0]), {})[rest[1]] = z[key]
    names = list(ref)
    categorical = [n for n in names if ref[n].dtype.kind in "US"]
    numeric = [n for n in names if n not in categorical]
    return {
        "reference": ref,
        "current": cur,
        "windows": [windows[i] for i in sorted(windows)],
        "numeric": numeric,
        "categorical": categorical,
    }


def _time(fn: Callable[[], Any], repeat: int = 3) -> dict[str, float]:
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return {"cpu_ms": statistics.median(cpu), "cpu_min_ms": min(cpu), "wall_ms": statistics.median(wall)}


def summarise(verdicts: list[Verdict], current: Verdict) -> dict[str, Any]:
    half = len(verdicts) // 2
    found = {f: sum(f in fl for _, fl in verdicts[half:]) / half for f in SHIFTED}
    return {
        "false_alarm_rate": sum(d for d, _ in verdicts[:half]) / half,
        "detection_rate": sum(d for d, _ in verdicts[half:]) / half,
        "shifted_feature_found": found,
        "current_10k": {"drift": current[0], "flagged": sorted(current[1])},
    }


def run_evidently(data: dict[str, Any]) -> dict[str, Any]:
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=data["numeric"], categorical_columns=data["categorical"])

    def dataset(cols: dict[str, np.ndarray]) -> Any:
        return Dataset.from_pandas(pd.DataFrame(cols), data_definition=definition)

    reference = dataset(data["reference"])

    def check(cols: dict[str, np.ndarray]) -> Verdict:
        result = Report([DataDriftPreset()]).run(dataset(cols), reference).dict()
        flagged, share = [], 0.0
        for m in result["metrics"]:
            cfg = m["config"]
            if cfg["type"].endswith("ValueDrift") and m["value"] >= cfg["threshold"]:
                flagged.append(cfg["column"])
            if cfg["type"].endswith("DriftedColumnsCount"):
                share, needed = m["value"]["share"], cfg["drift_share"]
        return share >= needed, flagged

    check(data["windows"][0])  # warm up imports and caches
    out = summarise([check(w) for w in data["windows"]], check(data["current"]))
    out["version"] = evidently.__version__
    out["cost"] = {
        "500": _time(lambda: check(data["windows"][0])),
        "10000": _time(lambda: check(data["current"])),
    }
    return out


def run_nannyml(data: dict[str, Any]) -> dict[str, Any]:
    import nannyml
    import pandas as pd
    from nannyml.drift.univariate import UnivariateDriftCalculator

    names = data["numeric"] + data["categorical"]

    def fitted(chunk_size: int) -> Any:
        calc = UnivariateDriftCalculator(
            column_names=names,
            treat_as_categorical=data["categorical"],
            chunk_size=chunk_size,
        )
        return calc.fit(pd.DataFrame(data["reference"]))

    def verdicts(result: Any) -> list[Verdict]:
        frame = result.filter(period="analysis").to_df()
        out = []
        for _, row in frame.iterrows():
            flagged = [c for c in names if any(bool(row[(c, m, "alert")]) for m in _methods(frame, c))]
            out.append((bool(flagged), flagged))
        return out

    calc500 = fitted(500)
    windows = pd.concat([pd.DataFrame(w) for w in data["windows"]], ignore_index=True)
    per_window = verdicts(calc500.calculate(windows))
    calc10k = fitted(10_000)
    current = verdicts(calc10k.calculate(pd.DataFrame(data["current"])))[0]
    out = summarise(per_window, current)
    out["version"] = nannyml.__version__
    one = pd.DataFrame(data["windows"][0])
    cur = pd.DataFrame(data["current"])
    out["cost"] = {
        "500": _time(lambda: calc500.calculate(one)),
        "10000": _time(lambda: calc10k.calculate(cur)),
    }
    return out


def _methods(frame: Any, column: str) -> list[str]:
    return sorted({key[1] for key in frame.columns if key[0] == column and len(key) == 3})


def run_alibi(data: dict[str, Any]) -> dict[str, Any]:
    import alibi_detect
    from alibi_detect.cd import TabularDrift

    names = data["numeric"] + data["categorical"]
    codes = {
        c: {v: i for i, v in enumerate(sorted(set(data["reference"][c].tolist())))}
        for c in data["categorical"]
    }

    def matrix(cols: dict[str, np.ndarray]) -> np.ndarray:
        parts = [cols[n].astype(np.float64) for n in data["numeric"]]
        parts += [
            np.array([codes[c].get(v, -1) for v in cols[c].tolist()], dtype=np.float64)
            for c in data["categorical"]
        ]
        return np.stack(parts, axis=1)

    cat_idx = {len(data["numeric"]) + i: None for i in range(len(data["categorical"]))}
    detector = TabularDrift(matrix(data["reference"]), p_val=0.05, categories_per_feature=cat_idx)

    def check(cols: dict[str, np.ndarray]) -> Verdict:
        pred = detector.predict(matrix(cols))["data"]  # drift_type="batch": Bonferroni
        flagged = [n for n, p in zip(names, pred["p_val"]) if p < pred["threshold"]]
        return bool(pred["is_drift"]), flagged

    out = summarise([check(w) for w in data["windows"]], check(data["current"]))
    out["version"] = alibi_detect.__version__
    out["cost"] = {
        "500": _time(lambda: check(data["windows"][0])),
        "10000": _time(lambda: check(data["current"])),
    }
    return out


# --------------------------------------------------------------------------- windows of a real table


def load_windows(path: str, limit: int | None = None) -> dict[str, Any]:
    z = np.load(path)
    cols = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("col/")}
    windows: dict[tuple[str, int], list[tuple[int, np.ndarray]]] = {}
    for key in z.files:
        if key.startswith("win/"):
            _, period, size, i = key.split("/")
            windows.setdefault((period, int(size)), []).append((int(i), z[key]))
    categorical = [n for n, c in cols.items() if c.dtype.kind in "US"]
    return {
        "cols": cols,
        "ref": z["ref"],
        "windows": {k: [idx for _, idx in sorted(v, key=lambda t: t[0])][:limit] for k, v in windows.items()},
        "numeric": [n for n in cols if n not in categorical],
        "categorical": categorical,
    }


def _frame(data: dict[str, Any], idx: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame({n: c[idx] for n, c in data["cols"].items()})


def windows_nannyml(data: dict[str, Any]) -> dict[str, Any]:
    import nannyml
    import pandas as pd
    from nannyml.drift.univariate import UnivariateDriftCalculator

    names = data["numeric"] + data["categorical"]
    reference = _frame(data, data["ref"])
    calcs: dict[int, Any] = {}
    rates: dict[str, dict[str, float]] = {}
    for (period, size), idxs in data["windows"].items():
        if size not in calcs:
            calcs[size] = UnivariateDriftCalculator(
                column_names=names, treat_as_categorical=data["categorical"], chunk_size=size
            ).fit(reference)
        frame = calcs[size].calculate(pd.concat([_frame(data, i) for i in idxs], ignore_index=True))
        frame = frame.filter(period="analysis").to_df()
        alerts = [
            any(bool(row[(c, m, "alert")]) for c in names for m in _methods(frame, c)) for _, row in frame.iterrows()
        ]
        rates.setdefault(period, {})[str(size)] = sum(alerts) / len(alerts)
    return {"version": nannyml.__version__, "rule": "univariate defaults, any column alerting", "rates": rates}


def windows_alibi(data: dict[str, Any]) -> dict[str, Any]:
    import alibi_detect
    from alibi_detect.cd import TabularDrift

    cols, ref = data["cols"], data["ref"]
    codes = {c: {v: i for i, v in enumerate(sorted(set(cols[c][ref].tolist())))} for c in data["categorical"]}

    def matrix(idx: np.ndarray) -> np.ndarray:
        parts = [cols[n][idx].astype(np.float64) for n in data["numeric"]]
        parts += [np.array([codes[c].get(v, -1) for v in cols[c][idx].tolist()], dtype=np.float64)
                  for c in data["categorical"]]
        return np.stack(parts, axis=1)

    cat_idx = {len(data["numeric"]) + i: None for i in range(len(data["categorical"]))}
    detector = TabularDrift(matrix(ref), p_val=0.05, categories_per_feature=cat_idx)
    rates: dict[str, dict[str, float]] = {}
    for (period, size), idxs in data["windows"].items():
        hits = sum(bool(detector.predict(matrix(i))["data"]["is_drift"]) for i in idxs)
        rates.setdefault(period, {})[str(size)] = hits / len(idxs)
    return {"version": alibi_detect.__version__, "rule": "TabularDrift, Bonferroni p 0.05", "rates": rates}


def windows_evidently(data: dict[str, Any]) -> dict[str, Any]:
    import evidently
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=data["numeric"], categorical_columns=data["categorical"])
    reference = Dataset.from_pandas(_frame(data, data["ref"]), data_definition=definition)
    rates: dict[str, dict[str, float]] = {}
    for (period, size), idxs in data["windows"].items():
        hits = 0
        for i in idxs:
            result = Report([DataDriftPreset()]).run(
                Dataset.from_pandas(_frame(data, i), data_definition=definition), reference
            ).dict()
            for m in result["metrics"]:
                cfg = m["config"]
                if cfg["type"].endswith("DriftedColumnsCount"):
                    hits += m["value"]["share"] >= cfg["drift_share"]
        rates.setdefault(period, {})[str(size)] = hits / len(idxs)
    return {"version": evidently.__version__, "rule": "DataDriftPreset, 50 % of columns", "rates": rates}


def main() -> None:
    tool, path = sys.argv[1], sys.argv[2]
    if "--windows" in sys.argv[3:]:
        runner = {"evidently": windows_evidently, "nannyml": windows_nannyml, "alibi-detect": windows_alibi}[tool]
        limit = int(sys.argv[sys.argv.index("--limit") + 1]) if "--limit" in sys.argv else None
        data = load_windows(path, limit)
        out = runner(data)
        out["windows"] = min(len(v) for v in data["windows"].values())
        print(json.dumps(out))
        return
    data = load(path)
    runner = {"evidently": run_evidently, "nannyml": run_nannyml, "alibi-detect": run_alibi}[tool]
    print(json.dumps(runner(data)))


if __name__ == "__main__":
    main()
