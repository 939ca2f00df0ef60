"""Nodes over PostgreSQL (issue 15, SPEC §10): four rows for `make bench`.

    .venv/bin/python bench/cluster.py [--quick] [--events N] [--webhooks W] [--only j,k,l,m]

(j) one node on SQLite, (k) one node on PostgreSQL, (l) two nodes on PostgreSQL: N
    events spread round-robin over W sessions (16), each with its own webhook, to one
    receiver; (m) as (l) with one webhook, so that every claim of both nodes takes that
    webhook's limit lock (the cluster's per_webhook_concurrency is then 64 in all).
    Each: deliveries/s, each node's CPU µs per delivery, PostgreSQL's own CPU µs per
    delivery (every process of the server: /proc/<pid>/stat of the postmaster, its
    reaped children and its live ones), WAL bytes and write transactions per delivery
    (pg_current_wal_lsn(), pg_current_xact_id()), the connections the server had, and how
    often a backend waited on a lock (pg_stat_activity sampled every 100 ms).
    Ratios: (k)/(j) and (l)/(k).

The daemons run the suite's settings (synchronous = "full", every attempt logged,
delivery.concurrency = per_webhook_concurrency = 64 per node; per_webhook_concurrency
is cluster-wide on PostgreSQL). PostgreSQL is a server of its own that this script
starts (tests/pg.py: initdb in a temp dir, 127.0.0.1, a free port, fsync on,
synchronous_commit on, password auth) and stops by PID at the end; each PostgreSQL run
has a fresh database. The webhooks are made through the first node's API before the
second node starts (webhook changes reach other nodes only at their start, for now).
Events go in as in (b): 100 per request, 4 requests in flight, split evenly over the
nodes. The clock starts just before the first POST /api/events and stops at the
receiver's timestamp of the last 2xx; then the queue must be empty and every delivery
must have arrived once (distinct X-Webhook-Id).

Without PostgreSQL (Debian's postgresql: initdb, pg_ctl; as root, a `postgres` user) the
PostgreSQL rows are skipped with the reason. Everything runs on 127.0.0.1 in a temp
directory; every loop is bounded; daemons, receiver and server are stopped by PID. The
DSN's password is never printed. Results: bench/results/cluster.json. The machine is
shared and small: compare the ratios and the CPU per delivery of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/pg.py
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pg
from suite import report
from suite.common import (
    REPO,
    DaemonProcess,
    auth_headers,
    batch_body,
    batches,
    cpu_s,
    free_port,
    pid_of,
    put_webhook,
    queue_counts,
    say,
    wait_until,
    write_daemon_config,
)
from suite.end_to_end import ingest_all
from suite.receiver import Receiver, start_receiver

RESULTS = REPO / "bench" / "results" / "cluster.json"
INFLIGHT = 64
SAMPLE_S = 0.1


# ------------------------------------------------------------------ PostgreSQL
def pg_cpu_s(postmaster: int) -> float:
    """CPU seconds of the whole server so far: the postmaster, its reaped children
    (cutime, cstime) and its live ones (backends, WAL writer, checkpointer, ...)."""
    stat = Path(f"/proc/{postmaster}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    total = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children")
    for kid in children.read_text().split() if children.exists() else []:
        with contextlib.suppress(OSError, ValueError):
            total += cpu_s(int(kid))
    return total


class Sampler:
    """Samples pg_stat_activity every SAMPLE_S: connections, and backends waiting on a lock."""

    def __init__(self, dsn: str, database: str) -> None:
        self.dsn = dsn
        self.database = database
        self.samples = 0
        self.max_connections = 0
        self.lock_waits = 0  # backends seen waiting on a lock, summed over samples
        self.active = 0  # backends seen running a statement, summed over samples
        self.wait_events: dict[str, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not stop.is_set():
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    self.database,
                )
                self.samples += 1
                self.max_connections = max(self.max_connections, len(rows))
                for state, kind, event in rows:
                    if state == "active":
                        self.active += 1
                        if kind == "Lock":
                            self.lock_waits += 1
                            self.wait_events[event] = self.wait_events.get(event, 0) + 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SAMPLE_S)
        finally:
            await conn.close()


async def db_counters(dsn: str) -> tuple[int, int]:
    """(WAL position in bytes, the next transaction id): the server's, read at once.

    Only transactions that write get an id, so the difference of two readings less one
    (this reading takes one) counts the write transactions between them; the server's
    statistics views are not used, as they lag by up to a second.
    """
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'),"
            " pg_current_xact_id()::text::bigint"
        )
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


# -------------------------------------------------------------------- daemons
def node_config(tmp: Path, port: int, dsn: str | None, log_level: str) -> Path:
    """The suite's config, on PostgreSQL when `dsn` is given."""
    config = write_daemon_config(
        tmp, port, concurrency=INFLIGHT, per_webhook_concurrency=INFLIGHT, log_level=log_level
    )
    if dsn is not None:
        text = config.read_text().replace(
            "[storage]\n", f'[storage]\nbackend = "postgres"\ndsn = "{dsn}"\n', 1
        )
        config.write_text(text)
        config.chmod(0o600)  # the DSN carries a password
    return config


def attempts_logged(node: DaemonProcess) -> int:
    """Attempts the node made, from its info log (one line each)."""
    with node.log_path.open("rb") as f:
        return sum(1 for line in f if b" attempt " in line)


async def measure(
    rx: Receiver,
    tmp: Path,
    name: str,
    nodes: int,
    webhooks: int,
    server: pg.PgServer | None,
    args: Any,
) -> dict[str, Any]:
    """One run: fresh nodes (and database), the webhooks, then the timed ingest."""
    sessions = [f"c{i:03d}" for i in range(webhooks)]
    bodies = [batch_body(r, sessions) for r in batches(args.events, 100)]
    log = rx.log(name)
    dsn = database = None
    if server is not None:
        database = name
        server.psql(f"CREATE DATABASE {database}")
        dsn = server.dsn(database)
    daemons: list[DaemonProcess] = []
    problems: list[str] = []
    sampler = stop = sampling = None
    try:
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            for n in range(nodes):
                home = tmp / f"node{n}"
                home.mkdir()
                port = free_port()
                node = DaemonProcess(node_config(home, port, dsn, args.log_level), port, home)
                daemons.append(node)
                await node.start(timeout_s=60)
                if n == 0:  # before the others start: they load the webhooks then
                    for session in sessions:
                        await put_webhook(http, node.base, rx.url(name), session)
            pids = [pid_of(d) for d in daemons]
            if server is not None and dsn is not None and database is not None:
                wal0, xact0 = await db_counters(server.dsn())
                sampler, stop = Sampler(server.dsn(), database), asyncio.Event()
                sampling = asyncio.create_task(sampler.run(stop))
                pg0 = pg_cpu_s(server.pid)
            cpu0 = [cpu_s(p) for p in pids]
            t0 = time.time()
            share = [bodies[i :: len(daemons)] for i in range(len(daemons))]
            ingest = asyncio.gather(
                *(
                    ingest_all(http, d.base, part, max(1, 4 // len(daemons)))
                    for d, part in zip(daemons, share, strict=True)
                )
            )

            def done() -> bool:
                failed = ingest.done() and ingest.exception() is not None
                return failed or log.count_2xx() >= args.events

            complete = await wait_until(done, max(120.0, args.events / 50))
            await ingest
            cpu1 = [cpu_s(p) for p in pids]
            out: dict[str, Any] = {}
            if server is not None and database is not None:
                pg1 = pg_cpu_s(server.pid)
                assert stop is not None and sampling is not None and sampler is not None
                stop.set()
                await sampling
                wal1, xact1 = await db_counters(server.dsn())
                out |= {
                    "pg_cpu_s": pg1 - pg0,
                    "wal_bytes": wal1 - wal0,
                    "xacts": xact1 - xact0 - 1,
                    "connections_max": sampler.max_connections,
                    "samples": sampler.samples,
                    "active_per_sample": sampler.active / max(1, sampler.samples),
                    "lock_waits_per_sample": sampler.lock_waits / max(1, sampler.samples),
                    "lock_wait_events": sampler.wait_events,
                }
            queue: dict[str, int] = {}
            for _ in range(50):  # the last outcomes commit just after their 2xx
                queue = await queue_counts(http, daemons[0].base)
                if not any(queue.values()):
                    break
                await asyncio.sleep(0.1)
            else:
                problems.append(f"queue {queue} after the run")
    finally:
        if stop is not None:
            stop.set()
        if sampling is not None:
            with contextlib.suppress(Exception):
                await sampling
        for d in daemons:
            await d.stop()
        if server is not None and database is not None:
            server.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    await asyncio.sleep(0.2)
    ok = [p for p in log.fields() if p[1].startswith(b"2")]
    unique = len({p[2] for p in ok})
    last = max((float(p[0]) for p in ok), default=time.time())
    seconds = max(last - t0, 1e-9)
    if unique != args.events:
        problems.append(f"{unique:,} distinct deliveries arrived, expected {args.events:,}")
    if len(ok) != unique:
        problems.append(f"{len(ok) - unique} duplicate requests")
    node_cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    return out | {
        "nodes": nodes,
        "backend": "postgres" if server is not None else "sqlite",
        "events": args.events,
        "webhooks": webhooks,
        "complete": complete,
        "delivered_unique": unique,
        "seconds": seconds,
        "per_s": unique / seconds,
        "node_cpu_s": node_cpu,
        "node_cpu_us_per_delivery": [c / max(unique, 1) * 1e6 for c in node_cpu],
        "node_attempts": [attempts_logged(d) for d in daemons],
        "queue_after": queue,
        "problems": problems,
        "verified": complete and not problems,
    }


# ---------------------------------------------------------------------- suite
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/cluster.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: 5,000 events per run")
    p.add_argument("--events", type=int, help="events per run (20,000; quick 5,000)")
    p.add_argument("--webhooks", type=int, default=16, help="sessions, one webhook each")
    p.add_argument("--log-level", default="info", help="the daemons' log level")
    p.add_argument("--receiver", default="auto", choices=("auto", "nginx", "aiohttp"))
    p.add_argument("--only", default="j,k,l,m", help="rows to run: some of j,k,l,m")
    p.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    args = p.parse_args(argv)
    args.only = [x for x in args.only.split(",") if x in LABELS]
    args.events = args.events or (5_000 if args.quick else 20_000)
    args.events = max(100, min(args.events, 500_000))
    args.webhooks = max(1, min(args.webhooks, 1_000))
    return args


# (key, nodes, on PostgreSQL, webhooks: None for --webhooks); (m) puts every claim of
# both nodes on one webhook's limit lock
RUNS = (("j", 1, False, None), ("k", 1, True, None), ("l", 2, True, None), ("m", 2, True, 1))
LABELS = {
    "j": "(j) 1 node, SQLite",
    "k": "(k) 1 node, PostgreSQL",
    "l": "(l) 2 nodes, PostgreSQL",
    "m": "(m) 2 nodes, PostgreSQL, 1 webhook",
}


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    reason = pg.why_unavailable()
    with tempfile.TemporaryDirectory(prefix="wahookd-bench-cluster-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "rx").mkdir()
        rx = await start_receiver(tmp / "rx", [k for k, *_ in RUNS], args.receiver)
        res["receiver"] = rx.kind
        server = None
        try:
            if reason is None:
                server = pg.start_server()  # fsync on; stopped by PID below
                version = server.psql("SHOW server_version").strip()
                res["postgres"] = f"PostgreSQL {version} (fsync on, synchronous_commit on)"
                say(f"{res['postgres']} on 127.0.0.1:{server.port}, pid {server.pid}")
            for key, nodes, on_pg, webhooks in RUNS:
                if key not in args.only:
                    continue
                if on_pg and server is None:
                    res[key] = {"skipped": f"no PostgreSQL: {reason}"}
                    continue
                say(f"{key}: {nodes} node(s) on {'PostgreSQL' if on_pg else 'SQLite'}")
                started = time.monotonic()
                (tmp / key).mkdir()
                try:
                    res[key] = await measure(
                        rx,
                        tmp / key,
                        key,
                        nodes,
                        webhooks or args.webhooks,
                        server if on_pg else None,
                        args,
                    )
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if server is not None:  # never the DSN's password, should it show
                        error = error.replace(server.password, "****")
                    say(f"{key}: FAILED: {error}")
                    res[key] = {"error": error}
                res.setdefault("phase_s", {})[key] = time.monotonic() - started
        finally:
            rx.stop()
            if server is not None:
                pg.stop_server(server)
    return res


def _ok(phase: dict[str, Any] | None) -> bool:
    return bool(phase) and "error" not in phase and "skipped" not in phase  # type: ignore[operator]


def _figure(r: dict[str, Any]) -> str:
    cpu = "+".join(f"{c:.0f}" for c in r["node_cpu_us_per_delivery"])
    text = f"{r['per_s']:,.0f}/s ({r['seconds']:.1f} s), nodes {cpu} us CPU/delivery"
    if "pg_cpu_s" in r:
        text += f", PostgreSQL {r['pg_cpu_s'] / r['delivered_unique'] * 1e6:.0f} us"
    return text + ("" if r["verified"] else ", NOT VERIFIED")


def rows(res: dict[str, Any]) -> list[report.Row]:
    """(measure, value, target, verdict), as the suite's table."""
    out: list[report.Row] = []
    for key, label in LABELS.items():
        r = res.get(key)
        if r is None:
            continue
        if "skipped" in r:
            out.append((label, r["skipped"][:80], "", "skipped"))
        elif not _ok(r):
            out.append((label, f"ERROR: {r['error'][:60]}", "", "ERROR"))
        else:
            out.append((label, _figure(r), "", "" if r["verified"] else "FAIL"))
    j, k, l2 = (res.get(x) for x in ("j", "k", "l"))
    for name, top, bottom, key in (("(k)/(j)", k, j, "k_over_j"), ("(l)/(k)", l2, k, "l_over_k")):
        if _ok(top) and _ok(bottom):
            assert top is not None and bottom is not None
            ratio = top["per_s"] / bottom["per_s"]
            cpu = sum(top["node_cpu_s"]) / sum(bottom["node_cpu_s"])
            res[key] = {"per_s": ratio, "node_cpu": cpu}
            verdict = "" if top["verified"] and bottom["verified"] else "FAIL"
            out.append((f"{name} deliveries/s; nodes' CPU", f"{ratio:.2f}; {cpu:.2f}", "", verdict))
    return out


def notes(res: dict[str, Any]) -> list[str]:
    lines = [f"receiver: {res['receiver']}"]
    if "postgres" in res:
        lines.append(f"server: {res['postgres']}, started by the bench, stopped by PID")
    for key in ("k", "l", "m"):
        r = res.get(key)
        if _ok(r) and r is not None:
            n = max(r["delivered_unique"], 1)
            waits = ", ".join(f"{e} {c}" for e, c in sorted(r["lock_wait_events"].items()))
            lines.append(
                f"({key}): WAL {r['wal_bytes'] / n:,.0f} bytes and {r['xacts'] / n:.2f}"
                f" transactions per delivery; {r['connections_max']} connections at most;"
                f" {r['active_per_sample']:.2f} backends active and"
                f" {r['lock_waits_per_sample']:.3f} waiting on a lock per sample"
                f" ({r['samples']} samples{'; ' + waits if waits else ''});"
                f" attempts by node {r['node_attempts']}"
            )
    for key in LABELS:
        r = res.get(key)
        if _ok(r) and r is not None and r["problems"]:
            lines.append(f"({key}): " + "; ".join(r["problems"]))
    m = res["machine"]
    lines.append(
        f"machine: {m['cpus']} CPUs, Python {m['python']}; load average"
        f" {m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the rows, print the table, write the JSON; 1 when a run failed."""
    args = parse_args(argv)
    res = report.run_and_report(lambda: run_all(args), rows, notes, args.output, quick=args.quick)
    # without PostgreSQL its rows are skipped (the reason shows), not failed
    ran = [k for k, *_ in RUNS if k in args.only and "skipped" not in res.get(k, {})]
    failed = any(not _ok(res.get(k)) or not res[k]["verified"] for k in ran)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
