"""(f) The baseline: (b)'s workload through Huey (SqliteHuey) workers posting with requests.

A Huey consumer (`workers` threads or processes, polling every 10-100 ms) runs
suite/huey_tasks.py against a fresh SQLite file in `tmp`. A producer process enqueues
one `deliver` task per event, as a web handler would, one committed insert each. The
clock starts at the first enqueue and stops at the receiver's timestamp of the last
2xx, as in (b); completion is detected the same way (the access log's line count).

`python -m suite.huey_baseline produce COUNT URL` is the producer; it prints JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import bench_env, cpu_s, event_body, run_module, say, wait_until
from .receiver import Receiver

NAME = "huey"
WARMUP = "huey-warmup"


@dataclass(frozen=True)
class Options:
    """What (f) does."""

    events: int
    workers: int
    worker_type: str  # "thread" or "process"
    timeout_s: float


def produce(count: int, url: str) -> dict[str, Any]:
    """Enqueue `count` deliveries (BENCH_HUEY_DB names the queue); when it started, how long."""
    from .huey_tasks import deliver

    t0 = time.time()
    for i in range(count):
        deliver(url, f"dlv_huey_{i:08d}", event_body(i))
    return {"t0": t0, "enqueue_s": time.time() - t0}


def _process_tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (process workers)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    for p in [pid, *map(int, kids)]:
        with contextlib.suppress(OSError):
            total += cpu_s(p)
    return total


async def measure(rx: Receiver, tmp: Path, opts: Options) -> dict[str, Any]:
    """Run (f) in `tmp`; the figures as a dict."""
    queue_env = {"BENCH_HUEY_DB": str(tmp / "huey.db")}
    log_path = tmp / "huey-consumer.log"
    argv = [
        sys.executable,
        "-m",
        "huey.bin.huey_consumer",
        "suite.huey_tasks.huey",
        "--workers",
        str(opts.workers),
        "--worker-type",
        opts.worker_type,
        "--delay",
        "0.01",
        "--max-delay",
        "0.1",
        "--no-periodic",
        "--logfile",
        str(log_path),
    ]
    out = (tmp / "huey-consumer.out").open("ab")
    consumer = await asyncio.create_subprocess_exec(
        *argv,
        env={**bench_env(), **queue_env},
        stdout=out,
        stderr=out,
        cwd=tmp,
        start_new_session=True,
    )
    out.close()
    log, warm = rx.log(NAME), rx.log(WARMUP)
    try:
        # every worker is up and has a connection once this many warm-up tasks arrived
        await run_module(
            "suite.huey_baseline",
            ["produce", str(opts.workers * 4), rx.url(WARMUP)],
            60,
            queue_env,
        )
        if not await wait_until(lambda: warm.count() >= opts.workers * 4, 60):
            raise RuntimeError(f"huey consumer did not start:\n{log_path.read_text()[-2000:]}")
        cpu0, rx_cpu0 = _process_tree_cpu_s(consumer.pid), rx.cpu_s()
        producer = asyncio.create_task(
            run_module(
                "suite.huey_baseline",
                ["produce", str(opts.events), rx.url(NAME)],
                opts.timeout_s,
                queue_env,
            )
        )

        def done() -> bool:
            failed = producer.done() and producer.exception() is not None
            return failed or log.count() >= opts.events

        complete = await wait_until(done, opts.timeout_s, every_s=0.05)
        polled_at = time.time()
        cpu1, rx_cpu1 = _process_tree_cpu_s(consumer.pid), rx.cpu_s()
        produced = await producer
    finally:
        if consumer.returncode is None:
            consumer.send_signal(signal.SIGTERM)  # huey: stop now, do not finish the queue
            try:
                await asyncio.wait_for(consumer.wait(), 15)
            except TimeoutError:
                os.killpg(consumer.pid, signal.SIGKILL)  # its own group: its workers too
                await consumer.wait()
    entries = log.entries()
    ok = [e for e in entries if 200 <= e[1] < 300]
    unique = len({e[2] for e in ok})
    last = max((e[0] for e in ok), default=polled_at)
    seconds = max(last - produced["t0"], 1e-9)
    if not complete:
        say(f"(f) huey: only {unique} of {opts.events} delivered in {opts.timeout_s:.0f}s")
    return {
        "events": opts.events,
        "workers": opts.workers,
        "worker_type": opts.worker_type,
        "complete": complete,
        "delivered_unique": unique,
        "duplicates": len(ok) - unique,
        "seconds": seconds,
        "per_s": unique / seconds,
        "enqueue_s": produced["enqueue_s"],
        "consumer_cpu_s": cpu1 - cpu0,
        "receiver_cpu_s": rx_cpu1 - rx_cpu0,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["produce"]:
        print(json.dumps(produce(int(sys.argv[2]), sys.argv[3])))
    else:
        sys.exit("usage: python -m suite.huey_baseline produce COUNT URL")
