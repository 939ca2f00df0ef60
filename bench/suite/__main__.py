"""wahookd's speed suite (issue 6): `make bench`, or from the repository's root

    .venv/bin/python bench/run.py [--quick] [--only a,b,g] [--profile DIR]

In one run it starts a receiver (nginx, or N aiohttp processes), measures

  (a) the ceiling: a plain aiohttp client posting signed 400-byte bodies, 64 in flight;
  (b) wahookd end to end: N events through the batch API to the last 2xx;
  (c) ingest only, receiver paused: single-event requests/s, events/s in batches;
  (d) latency from 202 to arrival at a fixed rate;
  (e) the daemon's peak RSS (VmHWM) over (b), (g), (c), (d), each a fresh daemon;
  (f) (b)'s workload through Huey (SqliteHuey) + requests;
  (g) (b)'s workload spread over 200 sessions, each with its own webhook, on 20
      receiver ports;

prints a table with the ratios (b)/(a), (b)/(f), (g)/(b) and the targets, and writes
bench/results/bench.json. Everything runs on 127.0.0.1 in a temp directory and is
stopped by PID at the end. The machine is shared: the figures are noisy, compare the
ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import end_to_end, fanout, huey_baseline, ingest, latency, report
from .common import REPO, filesystem_of, run_module, say
from .profile import summarize
from .receiver import start_receiver

RESULTS = REPO / "bench" / "results" / "bench.json"
PHASES = ("a", "b", "g", "f", "c", "d")  # the order they run in: (g) right after (b)
INFLIGHT = 64
FANOUT_WEBHOOKS = 200
FANOUT_PORTS = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The suite's options; --quick scales every measurement down."""
    p = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: 5k events, 5 s latency")
    p.add_argument("--events", type=int, help="events for (a), (b), (f), (g) (50,000; quick 5,000)")
    p.add_argument("--batch", type=int, default=100, help="events per ingest request in (b)")
    p.add_argument("--ingest-parallel", type=int, default=4, help="ingest requests in (b)")
    p.add_argument(
        "--webhooks", type=int, default=FANOUT_WEBHOOKS, help="(g)'s sessions, one webhook each"
    )
    p.add_argument("--receiver-ports", type=int, default=FANOUT_PORTS, help="(g)'s receiver ports")
    p.add_argument("--ingest-seconds", type=float, help="each (c) figure's window (10; quick 3)")
    p.add_argument("--latency-rate", type=float, default=1000.0, help="(d) events/s")
    p.add_argument("--latency-seconds", type=float, help="(d) duration (30; quick 5)")
    p.add_argument("--concurrency", type=int, default=INFLIGHT, help="daemon attempts in flight")
    p.add_argument("--log-level", default="info", help="the daemon's log level (info: its default)")
    p.add_argument("--receiver", choices=("auto", "nginx", "aiohttp"), default="auto")
    p.add_argument("--huey-workers", type=int, default=4)
    p.add_argument("--huey-worker-type", choices=("thread", "process"), default="process")
    p.add_argument("--only", default=",".join(PHASES), help="phases to run, e.g. a,b or b,g")
    p.add_argument("--profile", type=Path, help="py-spy (b), (g), (c) into this directory")
    p.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    args = p.parse_args(argv)
    args.events = args.events or (5_000 if args.quick else 50_000)
    args.ingest_seconds = args.ingest_seconds or (3.0 if args.quick else 10.0)
    args.latency_seconds = args.latency_seconds or (5.0 if args.quick else 30.0)
    # bounds: whatever is asked, every loop of the suite stays finite and short
    args.events = max(100, min(args.events, 1_000_000))
    args.batch = max(1, min(args.batch, 1000))
    args.ingest_parallel = max(1, min(args.ingest_parallel, 64))
    args.webhooks = max(1, min(args.webhooks, 10_000))  # session ids g0000..g9999
    args.receiver_ports = max(1, min(args.receiver_ports, 64, args.webhooks))
    args.ingest_seconds = max(1.0, min(args.ingest_seconds, 120.0))
    args.latency_rate = max(1.0, min(args.latency_rate, 5_000.0))
    args.latency_seconds = max(1.0, min(args.latency_seconds, 300.0))
    args.concurrency = max(1, min(args.concurrency, 1024))
    args.huey_workers = max(1, min(args.huey_workers, 64))
    args.only = [x for x in args.only.split(",") if x in PHASES]
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase asked for, each in its own temp directory; a failed phase is recorded
    as {"error": ...} and the others still run."""
    res: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="wahookd-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "rx").mkdir()
        names = [ceiling_name := "ceiling", end_to_end.NAME, latency.NAME]
        names += [huey_baseline.NAME, huey_baseline.WARMUP, fanout.NAME]
        ports = args.receiver_ports if "g" in args.only else 1
        rx = await start_receiver(tmp / "rx", names, args.receiver, ports)
        res["receiver"] = rx.kind
        res["receiver_ports"] = len(rx.ports)
        res["tmp_fs"] = filesystem_of(tmp)
        more = f" (+{len(rx.ports) - 1} more ports)" if len(rx.ports) > 1 else ""
        say(f"receiver: {rx.kind} on 127.0.0.1:{rx.port}{more}")
        events = args.events
        phases: dict[str, tuple[str, Callable[[Path], Awaitable[dict[str, Any]]]]] = {
            "a": (
                f"(a) ceiling: {events:,} signed POSTs, {INFLIGHT} in flight",
                lambda _: run_module(
                    "suite.ceiling",
                    [rx.url(ceiling_name), str(events), str(INFLIGHT)],
                    timeout_s=max(120.0, events / 100),
                ),
            ),
            "b": (
                f"(b) wahookd end to end: {events:,} events",
                lambda d: end_to_end.measure(
                    rx,
                    d,
                    end_to_end.Options(
                        events=events,
                        batch=args.batch,
                        parallel=args.ingest_parallel,
                        concurrency=args.concurrency,
                        log_level=args.log_level,
                        timeout_s=max(120.0, events / 200),
                        profile_dir=args.profile,
                    ),
                ),
            ),
            "g": (
                f"(g) {args.webhooks} webhooks on {args.receiver_ports} ports: {events:,} events",
                lambda d: fanout.measure(
                    rx,
                    d,
                    fanout.Options(
                        events=events,
                        webhooks=args.webhooks,
                        ports=args.receiver_ports,
                        batch=args.batch,
                        parallel=args.ingest_parallel,
                        concurrency=args.concurrency,
                        log_level=args.log_level,
                        timeout_s=max(120.0, events / 200),
                        profile_dir=args.profile,
                    ),
                ),
            ),
            "f": (
                f"(f) Huey baseline: {events:,} events",
                lambda d: huey_baseline.measure(
                    rx,
                    d,
                    huey_baseline.Options(
                        events=events,
                        workers=args.huey_workers,
                        worker_type=args.huey_worker_type,
                        timeout_s=max(300.0, events / 50),
                    ),
                ),
            ),
            "c": (
                f"(c) ingest only: 2 x {args.ingest_seconds:g} s",
                lambda d: ingest.measure(
                    d,
                    ingest.Options(
                        seconds=args.ingest_seconds,
                        clients=INFLIGHT,
                        batch=100,
                        batch_parallel=8,
                        concurrency=args.concurrency,
                        log_level=args.log_level,
                        profile_dir=args.profile,
                    ),
                ),
            ),
            "d": (
                f"(d) latency: {args.latency_rate:,.0f} events/s for {args.latency_seconds:g} s",
                lambda d: latency.measure(
                    rx,
                    d,
                    latency.Options(
                        rate=args.latency_rate,
                        seconds=args.latency_seconds,
                        concurrency=args.concurrency,
                        log_level=args.log_level,
                    ),
                ),
            ),
        }
        try:
            for key in PHASES:
                if key not in args.only:
                    continue
                label, measure = phases[key]
                say(label)
                workdir = tmp / key
                workdir.mkdir()
                started = time.monotonic()
                try:
                    res[key] = await measure(workdir)
                except Exception as exc:
                    say(f"{label}: FAILED: {exc!r}")
                    res[key] = {"error": f"{type(exc).__name__}: {exc}"}
                res.setdefault("phase_s", {})[key] = time.monotonic() - started
        finally:
            rx.stop()
    return res


def main(argv: list[str] | None = None) -> int:
    """Run the suite, print the table, write the JSON; 1 when a phase could not run."""
    args = parse_args(argv)
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        say(f"load average {load_before[0]:.2f}: the machine is busy, expect noisy figures")
    started = time.monotonic()
    try:
        import uvloop

        res = uvloop.run(run(args))
    except ImportError:
        import asyncio

        res = asyncio.run(run(args))
    res["runtime_s"] = time.monotonic() - started
    res["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tmp_fs": res.pop("tmp_fs", "?"),
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    res["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    table = report.rows(res)
    print()
    report.print_table(table)
    print()
    for line in report.notes(res):
        print(f"- {line}")
    print(f"- runtime {res['runtime_s']:.0f} s{' (--quick)' if args.quick else ''}")
    for key in ("b", "g", "c-single", "c-batched"):
        if args.profile is not None and (args.profile / f"wahookd-{key}.txt").exists():
            print(f"\npy-spy during ({key}), {args.profile}/wahookd-{key}.svg:\n")
            print(summarize(args.profile / f"wahookd-{key}.txt", 20))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 1 if any("error" in res.get(k, {}) for k in PHASES) else 0


if __name__ == "__main__":
    sys.exit(main())
