"""Training on Dask workers against the single-process trainer, on the same data, on this machine.

    python bench/training/run.py [--rows 300000] [--rounds 2] [--write-readme]

One generated classification data set (``make_classification``, float64,
written once as Parquet in row groups of 25,000 rows and read through
``file://`` like any TrainingJob source: the Dask workers read the row groups
themselves). The same XGBoost model (hist, 50 trees, depth 6) is trained by

- ``single``: the trainer's usual path (``xgboost.XGBClassifier``, one thread,
  as one Dask worker has);
- ``dask-N``: ``spec.distributed`` with ``xgboost.dask.DaskXGBClassifier`` on a
  LocalCluster of N single-threaded worker processes (N = 1, 2, 4).

Each run is a fresh process (so peak memory is that run's). Reported: the fit's
wall time (the trainer's ``trainingSeconds``: preprocessing statistics and the
estimator, what Dask distributes), the whole run's wall time (reading, split,
metrics, profile, skops and ONNX checks, store), the runner's peak RSS and each
worker's peak RSS (``ru_maxrss``, asked of every worker before the cluster
closes; a worker process's libraries are most of it). The cluster's start-up
is timed apart: a DaskJob's cluster starts before its runner. Configurations
are interleaved round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
TOP_README = HERE.parent / "README.md"
ROW_GROUP = 25_000
"""Rows per Parquet row group: a distributed run's partition (12 of them at the default 300,000 rows)."""
PARAMS = {"n_estimators": 50, "max_depth": 6, "learning_rate": 0.3, "tree_method": "hist"}


def _job(source: str, workers: int | None) -> dict:
    spec: dict = {
        "model": "bench", "data": {"source": source, "target": "target"},
        "preprocessing": {"numeric": {"impute": "mean", "scale": "none"}},
        "estimator": {"class": "xgboost.dask.DaskXGBClassifier" if workers else "xgboost.XGBClassifier",
                      "params": {**PARAMS, **({} if workers else {"n_jobs": 1})}},
    }
    if workers:
        spec["distributed"] = {"engine": "dask", "workers": workers}
    return {"apiVersion": "mlops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": f"bench-{workers or 0}"},
            "spec": spec}


def child(args: argparse.Namespace) -> None:
    """One run, in its own process, its store removed afterwards: prints one JSON line."""
    job = _job(args.source, args.workers)
    out: dict = {"workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="bench-training-store-") as store:
        _measure(args, job, store, out)
    print(json.dumps(out))


def _measure(args: argparse.Namespace, job: dict, store: str, out: dict) -> None:
    from mlops_operator.runtime.trainer import train

    quiet = lambda *a, **k: None  # noqa: E731
    if not args.workers:
        started = time.monotonic()
        result = train(job, store, allow_modules=["xgboost."], log=quiet)
        out.update(run=time.monotonic() - started)
    else:
        from distributed import Client, LocalCluster

        started = time.monotonic()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
            out["clusterStart"] = time.monotonic() - started
            os.environ["DASK_SCHEDULER_ADDRESS"] = cluster.scheduler_address
            started = time.monotonic()
            result = train(job, store, allow_modules=["xgboost."], log=quiet)
            out.update(run=time.monotonic() - started)
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            out["workerPeakMB"] = sorted(round(v / 1024) for v in peaks.values())
    out.update(fit=result.metadata["trainingSeconds"], accuracy=result.metrics["accuracy"],
               runnerPeakMB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _data(rows: int, folder: Path) -> str:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=rows, n_features=20, n_informative=12, random_state=0)
    frame = pd.DataFrame(X.astype(np.float64), columns=[f"f{i}" for i in range(X.shape[1])])
    frame["target"] = y
    path = folder / "data.parquet"
    frame.to_parquet(path, index=False, row_group_size=ROW_GROUP)  # the workers' partitions
    return f"file://{path}", path.stat().st_size, frame.memory_usage(deep=True).sum()


def _load() -> float:
    return os.getloadavg()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--configs", default="0,1,2,4", help="0 = the single-process trainer; N = N Dask workers")
    p.add_argument("--write-readme", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    configs = [int(c) for c in args.configs.split(",")]
    began, load_start = time.monotonic(), _load()
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        source, parquet_bytes, frame_bytes = _data(args.rows, Path(tmp))
        results: dict[int, list[dict]] = {c: [] for c in configs}
        loads = []
        for r in range(args.rounds):
            for c in configs:
                loads.append(_load())
                proc = subprocess.run([sys.executable, __file__, "--child", "--source", source, "--workers", str(c)],
                                      capture_output=True, text=True, timeout=1800)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not line:
                    raise SystemExit(f"config {c} failed:\n{proc.stderr[-3000:]}")
                results[c].append(json.loads(line[-1]))
                print(f"round {r + 1} config {c}: {results[c][-1]}", file=sys.stderr)
    table = _table(results, args, parquet_bytes, frame_bytes, load_start, loads, time.monotonic() - began)
    print(table)
    if args.write_readme:
        _write(README, "training-table", table)
        _write(TOP_README, "training-table", table)


def _table(results: dict[int, list[dict]], args, parquet_bytes: int, frame_bytes: int, load_start: float,
           loads: list[float], seconds: float) -> str:
    import distributed
    import sklearn
    import xgboost

    base_fit = statistics.median(r["fit"] for r in results.get(0, [])) if results.get(0) else None
    lines = [
        f"`python bench/training/run.py --rows {args.rows} --rounds {args.rounds}` — {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start {load_start:.1f} "
        f"(median during runs {statistics.median(loads):.1f}), {seconds / 60:.1f} min. "
        f"{args.rows:,} rows × 20 float64 features ({parquet_bytes / 2**20:.0f} MiB Parquet, {frame_bytes / 2**20:.0f} MiB in "
        f"memory); XGBoost {xgboost.__version__} hist, 50 trees, depth 6; Dask {distributed.__version__}, "
        f"scikit-learn {sklearn.__version__}. Median of {args.rounds} interleaved rounds [min–max].",
        "",
        "| trainer | fit s | run s | fit: single ÷ this | cluster start s | runner peak MB | each worker's peak MB | accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for c, runs in results.items():
        fit = statistics.median(r["fit"] for r in runs)
        run = statistics.median(r["run"] for r in runs)
        lo, hi = min(r["fit"] for r in runs), max(r["fit"] for r in runs)
        ratio = f"{base_fit / fit:.2f}×" if base_fit and c else ""
        start = f"{statistics.median(r['clusterStart'] for r in runs):.1f}" if c else ""
        workers = ", ".join(str(v) for v in runs[-1].get("workerPeakMB", [])) if c else "(no workers)"
        name = "single process (1 thread)" if c == 0 else f"Dask, {c} worker{'s' if c > 1 else ''} × 1 thread"
        lines.append(f"| {name} | {fit:.1f} [{lo:.1f}–{hi:.1f}] | {run:.1f} | {ratio} | {start} | "
                     f"{max(r['runnerPeakMB'] for r in runs)} | {workers} | {runs[-1]['accuracy']:.4f} |")
    return "\n".join(lines)


def _write(path: Path, tag: str, table: str) -> None:
    text = path.read_text()
    begin, end = f"<!-- {tag}:begin (python bench/training/run.py --write-readme) -->", f"<!-- {tag}:end -->"
    block = f"{begin}\n{table}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
