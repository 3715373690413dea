#!/usr/bin/env python
"""Overload: offer 4x the server's capacity, open loop, and report the admitted p99 and the shed ratio.

    python bench/serving/overload.py [--model heavy] [--rows 100] [--factor 4] [--duration 20]

1. Capacity: ``--clients`` closed-loop clients (default 32) send requests back
   to back for ``--duration`` seconds to the server with an unbounded queue;
   capacity = answered 200s per second.
2. Overload: requests arrive at ``--factor`` x capacity as a Poisson process
   (open loop: an arrival never waits for an earlier answer; each is sent on an
   idle keep-alive connection or a new one).  Latency counts from the
   scheduled arrival, so a slow client side shows up instead of hiding.
3. The same overload against the server with its default bounded queue; the
   unbounded one (``--max-queue-rows 1000000``) is the behaviour before
   shedding.  Both allow 4000 connections, so only the queue differs.

The server is pinned to CPU 0 (``taskset``), this load generator to CPU 1.
Models as in ``run.py`` (heavy = RandomForest(100)); default 100-row requests,
so the model, not this Python client, is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402

TIMEOUT = 60.0


@dataclass
class Outcome:
    ok: list[float] = field(default_factory=list)  # seconds, 200s
    shed: list[float] = field(default_factory=list)  # seconds, 503s
    other: int = 0  # any other status, or a transport error
    seconds: float = 0.0


class Client:
    """HTTP/1.1 POSTs of one body to one URL over a pool of keep-alive connections."""

    def __init__(self, port: int, path: str, body: bytes) -> None:
        self.port = port
        self.request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self) -> int:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = conn
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.lower() == b"content-length":
                    length = int(v)
                elif k.lower() == b"connection" and v.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return status

    def close(self) -> None:
        for _, w in self.idle:
            w.close()
        self.idle.clear()


async def _timed(client: Client, start: float, out: Outcome) -> None:
    loop = asyncio.get_running_loop()
    try:
        status = await asyncio.wait_for(client.post(), TIMEOUT)
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        out.other += 1
        return
    took = loop.time() - start
    if status == 200:
        out.ok.append(took)
    elif status == 503:
        out.shed.append(took)
    else:
        out.other += 1


async def closed_loop(client: Client, clients: int, duration: float) -> Outcome:
    out = Outcome()
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def worker() -> None:
        while loop.time() < end:
            await _timed(client, loop.time(), out)

    t0 = loop.time()
    await asyncio.gather(*(worker() for _ in range(clients)))
    out.seconds = loop.time() - t0
    return out


async def open_loop(client: Client, rate: float, duration: float, seed: int = 0) -> Outcome:
    out = Outcome()
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    start = loop.time()
    t = 0.0
    tasks = []
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            break
        delay = start + t - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_timed(client, start + t, out)))
    await asyncio.gather(*tasks)
    out.seconds = loop.time() - start  # until the last answer: a queue that grows answers late
    return out


def p(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3


def row(name: str, offered: float, o: Outcome) -> str:
    total = len(o.ok) + len(o.shed) + o.other
    return (f"| {name} | {offered:,.0f} | {len(o.ok) / o.seconds:,.0f} | {len(o.shed) / max(total, 1):.0%} | "
            f"{p(o.ok, 0.5):,.0f} | {p(o.ok, 0.99):,.0f} | {p(o.shed, 0.99):,.1f} | {o.other} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="heavy")
    ap.add_argument("--rows", type=int, default=100, help="rows per request (default 100)")
    ap.add_argument("--clients", type=int, default=32, help="closed-loop clients that measure capacity (default 32)")
    ap.add_argument("--factor", type=float, default=4.0, help="offered load as a multiple of capacity (default 4)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of each phase (default 20)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "mlops-operator" / "bench"))
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {int(run.CLIENT_CPU)})
    cache = Path(args.cache).expanduser()
    info = run.prepare_models(cache)[args.model]
    body = run.body_for("v1", info["X"], args.rows)
    lines: list[str] = []
    capacity = 0.0
    # Capacity is measured on the unbounded queue (nothing shed); the connection cap is raised on both so that
    # only the queue differs.
    conns = ["--max-connections", "4000"]
    for name, extra in (("unbounded queue", ["--max-queue-rows", "1000000", *conns]), ("bounded queue (default)", conns)):
        srv = run.start_server("ours", args.model, info, cache, {}, extra_args=extra)
        if srv is None or not run.check_predictions(srv, info):
            print(f"{name}: server did not start or predicts wrongly")
            return 1
        path = f"/v1/models/{args.model}:predict"

        async def phases() -> tuple[Outcome | None, Outcome]:
            cap = None
            if not capacity:
                warm = Client(srv.port, path, body)
                await closed_loop(warm, args.clients, 2.0)
                warm.close()
                c = Client(srv.port, path, body)
                cap = await closed_loop(c, args.clients, args.duration)
                c.close()
            rate = args.factor * (capacity or len(cap.ok) / cap.seconds)  # type: ignore[union-attr]
            c = Client(srv.port, path, body)
            try:
                return cap, await open_loop(c, rate, args.duration)
            finally:
                c.close()

        try:
            cap, over = asyncio.run(phases())
        finally:
            run.stop_server(srv)
        if cap is not None:
            capacity = len(cap.ok) / cap.seconds
            lines.append(row(f"capacity, {args.clients} closed-loop clients", capacity, cap))
            run.log(f"capacity: {capacity:,.1f} req/s ({args.clients} closed-loop clients, {args.rows} rows/request)")
        lines.append(row(f"{args.factor:g}x capacity, {name}", args.factor * capacity, over))
        run.log(lines[-1])
    print(f"\n{args.model}, {args.rows} rows/request, open-loop Poisson arrivals for {args.duration:g} s\n")
    print("| load | offered req/s | 200 req/s (to the last answer) | shed (503) | admitted p50 ms | admitted p99 ms | 503 p99 ms | other |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
