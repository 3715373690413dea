#!/usr/bin/env python
"""Interleaved A/B: several servers up at once (all pinned to CPU 0, idle while not measured),
wrk (CPU 1) against each in turn for several short rounds; medians per server.

For a noisy, shared machine where load drifts between the cells of ``run.py``:
interleaving puts every server under the same drift.

    python bench/serving/ab.py --model heavy --servers ours,ours-nosensor,kserve --clients 16 --rows 1 --rounds 5 --duration 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="heavy")
    p.add_argument("--servers", default="ours,ours-nosensor,kserve")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "mlops-operator" / "bench"))
    args = p.parse_args(argv)
    if not run.shutil.which("wrk"):
        print("wrk not found; install it (Debian/Ubuntu: apt-get install -y wrk). Skipping.")
        return 0
    cache = Path(args.cache).expanduser()
    info = run.prepare_models(cache)[args.model]
    venvs = {k: v for k in ("kserve", "mlserver", "fastapi") if (v := run.ensure_venv(cache, k, False)) is not None}
    servers: list[run.Running] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    try:
        for kind in args.servers.split(","):
            if kind in ("kserve", "mlserver", "fastapi") and kind not in venvs:
                run.log(f"{kind}: not installed, skipped")
                continue
            r = run.start_server(kind, args.model, info, cache, venvs)
            if r is not None and run.check_predictions(r, info):
                servers.append(r)
        samples: dict[str, list[tuple[float, float, float]]] = {r.name: [] for r in servers}
        for i in range(args.rounds):
            for r in servers:
                body = run.body_for(r.protocol, info["X"], args.rows)
                run.wrk(r.url(), body, args.clients, 1, tmp)
                rps, p50, p99, errs = run.wrk(r.url(), body, args.clients, args.duration, tmp)
                samples[r.name].append((rps, p50, p99))
                run.log(f"round {i}: {r.name:14s} {rps:9.1f} req/s p50 {p50:8.2f} ms p99 {p99:8.2f} ms errors {errs}")
        print(f"\n{args.model}, {args.clients} clients, {args.rows} rows/request, {args.rounds} interleaved rounds of {args.duration:g} s (medians)\n")
        print("| server | req/s | rows/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: |")
        for name, s in samples.items():
            rps = statistics.median(x[0] for x in s)
            print(f"| {name} | {rps:,.0f} | {rps * args.rows:,.0f} | {statistics.median(x[1] for x in s):.2f} | "
                  f"{statistics.median(x[2] for x in s):.2f} |")
        if len(samples) > 1:
            # Paired per round: both servers saw the same machine load, so the ratio is steadier than medians'.
            first, *others = samples
            print(f"\nreq/s of {first} over each other server, per round (paired), median [min, max]\n")
            print("| server | median ratio | min | max |\n| --- | ---: | ---: | ---: |")
            for name in others:
                ratios = [a[0] / b[0] for a, b in zip(samples[first], samples[name]) if b[0] > 0]
                if ratios:
                    print(f"| {name} | {statistics.median(ratios):.2f} | {min(ratios):.2f} | {max(ratios):.2f} |")
    finally:
        for r in servers:
            run.stop_server(r)
        run.shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
