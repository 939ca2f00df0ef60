"""Real storage faults (SPEC §7): a full disk, a locked database, an I/O error.

Nothing here mocks the store: each fault is made for real on the daemon's own
SQLite file while the daemon runs, then taken away again.

- Full disk, twice. In process: `PRAGMA max_page_count` on the daemon's writer
  connection, capped at the file's current size, so any write that needs a new
  page fails with SQLITE_FULL ("database or disk is full"); raising the cap again
  is the disk getting room. As a subprocess (when the tests run as root and may
  mount): the database on a 16 MiB tmpfs that a filler file fills to the last
  block, so the WAL's write(2) fails with ENOSPC; deleting the filler makes room.
- Locked database: a second connection holds `BEGIN EXCLUSIVE`, so the writer's
  `BEGIN IMMEDIATE` fails with SQLITE_BUSY ("database is locked") once its
  busy_timeout runs out. The test lowers that timeout from 5 s to 0.2 s on the
  writer connection: the code path is the same, the test is just shorter.
- I/O error: the real daemon subprocess gets a soft RLIMIT_FSIZE of 0 (Python
  ignores SIGXFSZ), so every write(2) to the database or its WAL fails with EFBIG
  and SQLite reports SQLITE_IOERR_WRITE ("disk I/O error"). The test lifts the
  limit with prlimit(2). The daemon's log goes to a pipe, which the limit spares.

Every test tells the same story (`exercise`): deliveries are queued and in flight
when the fault starts; ingest answers 503 `unavailable` with Retry-After; the
scheduler backs off instead of spinning and keeps the outcomes it could not
record; once the fault is gone everything acknowledged is delivered without a
restart or a new request to wake it; and `PRAGMA integrity_check` is ok.

/readyz stays 200 through a write fault, as SPEC §7 defines it: the database
still answers (reads) and the scheduler still runs. The 503 with Retry-After on
ingest is the signal to writers. Taking the only instance out of rotation would
turn those 503s into refused connections, and with no writes arriving readiness
could never see the fault end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import jwt
import pytest
import trustme
from daemon_proc import DaemonProcess, cli, free_port
from support import (
    Daemon,
    Received,
    Receiver,
    Reply,
    ca_file,
    eventually,
    make_config,
    running_daemon,
)

from wahookd.store import SqliteStore

SECRET = "k" * 64
QUEUED = ["queued-0", "queued-1", "queued-2"]  # waiting for a retry when the fault starts
IN_FLIGHT = ["inflight-0", "inflight-1"]  # their attempts answer during the fault
ACKED_BEFORE = QUEUED + IN_FLIGHT
# the first retry waits long enough for the in-flight ones to be sent before the fault
RETRY_SCHEDULE = ["3s", *["1s"] * 15]
BACKOFF_LINE = "storage unavailable, scheduler backs off"


def event(event_id: str) -> dict[str, Any]:
    """A message.received event; its text needs pages of its own (overflow pages)."""
    return {
        "event": "message.received",
        "sessionId": "s1",
        "id": event_id,
        "messageId": f"msg-{event_id}",
        "from": "1234567890",
        "to": "me",
        "type": "text",
        "text": f"{event_id} " + "x" * 6000,
    }


class Script:
    """The receiver's answers: 500 (held back for in-flight ones) until healthy, then 200."""

    def __init__(self) -> None:
        self.healthy = False
        self.delivered: Counter[str] = Counter()  # 2xx answers by event id
        self.bodies: dict[str, bytes] = {}

    def __call__(self, got: Received) -> Reply:
        event_id = json.loads(got.body)["id"]
        if self.healthy:
            self.delivered[event_id] += 1
            self.bodies[event_id] = got.body
            return Reply(200)
        held = event_id in IN_FLIGHT and got.headers["X-Webhook-Attempt"] == "1"
        # a 1 KiB body: every failed attempt logs 1 KiB, so the attempt log needs new pages
        return Reply(500, body=b"e" * 1024, delay_s=1.5 if held else 0.0)


class Harness(Protocol):
    """A running daemon, in process or as a subprocess."""

    async def call(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, str], Any]: ...

    def backoffs(self) -> int: ...

    def alive(self) -> bool: ...


class Fault(Protocol):
    """A real storage fault that can be switched on and off."""

    async def inject(self) -> None: ...

    async def remove(self) -> None: ...


async def until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0
) -> None:
    """Poll predicate until it holds."""
    await eventually(predicate, timeout_s, interval_s=0.05, what=what)


async def queue(h: Harness) -> dict[str, int]:
    """The queue counts, over every session."""
    status, _, body = await h.call("GET", "/api/webhook/queue")
    assert status == 200, body
    return body["queue"]  # type: ignore[no-any-return]


def assert_unavailable(status: int, headers: dict[str, str], body: Any) -> None:
    """503 in the SPEC §3 envelope, with a Retry-After in seconds."""
    assert status == 503, body
    assert body["success"] is False
    assert body["error"]["code"] == "unavailable"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert int(headers["Retry-After"]) > 0


async def exercise(h: Harness, receiver: Receiver, fault: Fault) -> None:
    """Queue work, break the storage, check the daemon's answers, heal it, check recovery."""
    script = Script()
    receiver.responder = script

    # before the fault: three deliveries wait for a retry, two have an attempt in flight
    status, _, body = await h.call("POST", "/api/events", {"events": [event(i) for i in QUEUED]})
    assert status == 202 and body["queued"] == 3, body

    async def queued_retrying() -> bool:
        return (await queue(h))["retrying"] == 3

    await until(queued_retrying, "first attempts recorded")
    for event_id in IN_FLIGHT:
        status, _, body = await h.call("POST", "/api/events", event(event_id))
        assert status == 202 and body["queued"] == 1, body
    await receiver.wait_for(5)
    await fault.inject()
    try:
        injected_at = time.monotonic()
        attempts_before = len(receiver.requests)

        # during the fault: writes are refused with 503 and Retry-After, reads still answer
        assert_unavailable(*await h.call("POST", "/api/events", event("refused-0")))
        batch = {"events": [event("refused-1"), event("refused-2")]}
        assert_unavailable(*await h.call("POST", "/api/events", batch))
        status, _, body = await h.call("GET", "/readyz")
        assert status == 200, body
        counts = await queue(h)
        assert counts["pending"] + counts["processing"] + counts["retrying"] == 5, counts
        assert counts["failed"] == 0, counts

        # the scheduler meets the fault (the in-flight outcomes cannot be recorded, the
        # retries cannot be claimed) and backs off more than once, without spinning
        async def backed_off_twice() -> bool:
            return h.backoffs() >= 2 and time.monotonic() - injected_at >= 2.5

        await until(backed_off_twice, "the scheduler backs off twice")
        assert h.alive()
        assert h.backoffs() <= 10, f"{h.backoffs()} backoffs in {time.monotonic() - injected_at}s"
        assert len(receiver.requests) - attempts_before <= len(ACKED_BEFORE)
        status, _, body = await h.call("GET", "/readyz")
        assert status == 200, body
    finally:
        await fault.remove()

    # the fault is gone: everything acknowledged goes out, nothing needs a nudge
    script.healthy = True

    async def all_delivered() -> bool:
        return set(script.delivered) == set(ACKED_BEFORE) and not any((await queue(h)).values())

    await until(all_delivered, "every event acknowledged before the fault delivered", 40.0)
    status, _, body = await h.call("POST", "/api/events", event("after-0"))
    assert status == 202 and body["queued"] == 1, body

    async def after_delivered() -> bool:
        return "after-0" in script.delivered and not any((await queue(h)).values())

    await until(after_delivered, "an event ingested after the fault delivered")
    status, _, body = await h.call("GET", "/api/webhook/stats/s1")
    assert status == 200, body
    assert body["stats"]["successful"] == 6 and body["stats"]["failed"] == 0, body
    assert script.delivered == Counter([*ACKED_BEFORE, "after-0"])  # each exactly once
    for event_id, raw in script.bodies.items():
        delivered = json.loads(raw)
        delivered.pop("timestamp")
        assert delivered == event(event_id)
    assert h.alive()


def check_database(path: Path) -> None:
    """The file is intact and holds exactly the acknowledged events, all delivered."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        uids = sorted(r[0] for r in conn.execute("SELECT uid FROM events"))
        assert uids == sorted([*ACKED_BEFORE, "after-0"])  # nothing refused was kept
        states = conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()
        assert states == [("delivered", 6)]
    finally:
        conn.close()


# ------------------------------------------------------------------ in process


class CountBackoffs(logging.Handler):
    """Counts the scheduler's backoff warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(BACKOFF_LINE):
            self.count += 1


class InProcess:
    """The daemon built by `running_daemon`, on a real loopback socket."""

    def __init__(self, daemon: Daemon, counter: CountBackoffs) -> None:
        self.daemon = daemon
        self.counter = counter

    async def call(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        resp = await self.daemon.client.request(
            method, path, json=body, headers=self.daemon.headers()
        )
        return resp.status, dict(resp.headers), await resp.json()

    def backoffs(self) -> int:
        return self.counter.count

    def alive(self) -> bool:
        return self.daemon.state.scheduler.running


@contextmanager
def counting_backoffs() -> Iterator[CountBackoffs]:
    counter = CountBackoffs()
    logger = logging.getLogger("wahookd.scheduler")
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)


@asynccontextmanager
async def in_process(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> AsyncIterator[InProcess]:
    """An in-process daemon with a webhook for session s1 pointing at the receiver."""
    config = make_config(
        tmp_path, ca_file=str(ca_file(ca, tmp_path)), retry_schedule=RETRY_SCHEDULE, timeout="5s"
    )
    with counting_backoffs() as counter:
        async with running_daemon(config) as d:
            hook = {"url": receiver.url, "events": ["*"], "secret": "hook-secret"}
            status, answer = await d.call("PUT", "/api/webhook/config/s1", hook)
            assert status == 200, answer
            yield InProcess(d, counter)


async def on_writer(store: SqliteStore, sql: str) -> int:
    """Run one pragma on the daemon's own writer connection (its worker thread)."""
    return await store.on_writer(lambda c: c.execute(sql).fetchone()[0])


class FullDisk:
    """The database file may not grow: SQLITE_FULL for any write that needs a page."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.max_pages = 0

    async def inject(self) -> None:
        self.max_pages = await on_writer(self.store, "PRAGMA max_page_count")
        pages = await on_writer(self.store, "PRAGMA page_count")
        assert await on_writer(self.store, f"PRAGMA max_page_count = {pages}") == pages

    async def remove(self) -> None:
        if self.max_pages:
            await on_writer(self.store, f"PRAGMA max_page_count = {self.max_pages}")
            self.max_pages = 0


class Locked:
    """Another connection holds the database's write lock."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.holder: sqlite3.Connection | None = None

    async def inject(self) -> None:
        await on_writer(self.store, "PRAGMA busy_timeout = 200")
        holder = sqlite3.connect(
            self.store.path, isolation_level=None, check_same_thread=False, timeout=10
        )
        # may wait for a commit of the daemon's writer: not on the event loop
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        self.holder = holder

    async def remove(self) -> None:
        if self.holder is not None:
            await asyncio.to_thread(self.holder.execute, "ROLLBACK")
            self.holder.close()
            self.holder = None


async def test_full_disk(tmp_path: Path, ca: trustme.CA, receiver: Receiver) -> None:
    async with in_process(tmp_path, ca, receiver) as h:
        store = h.daemon.state.store
        await exercise(h, receiver, FullDisk(store))
    check_database(store.path)


async def test_locked_database(tmp_path: Path, ca: trustme.CA, receiver: Receiver) -> None:
    async with in_process(tmp_path, ca, receiver) as h:
        store = h.daemon.state.store
        await exercise(h, receiver, Locked(store))
    check_database(store.path)


async def test_lone_outcome_is_recorded_once_storage_is_back(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    # nothing else is queued, so no timer or ingest wakes the scheduler: the failed
    # record itself must bring it back, and it must keep trying until storage is back
    script = Script()
    receiver.responder = script
    async with in_process(tmp_path, ca, receiver) as h:
        store = h.daemon.state.store
        status, _, body = await h.call("POST", "/api/events", event("inflight-0"))
        assert status == 202, body
        await receiver.wait_for(1)
        fault = Locked(store)
        await fault.inject()
        try:

            async def backed_off() -> bool:
                return h.backoffs() >= 2

            await until(backed_off, "the unrecorded outcome makes the scheduler back off")
            assert (await queue(h))["processing"] == 1
        finally:
            await fault.remove()
        script.healthy = True

        async def delivered() -> bool:
            return script.delivered["inflight-0"] == 1 and not any((await queue(h)).values())

        await until(delivered, "the outcome recorded and the retry delivered")
        assert h.backoffs() <= 6
    conn = sqlite3.connect(store.path)
    try:
        attempts = conn.execute("SELECT attempt, status_code FROM attempts ORDER BY id").fetchall()
    finally:
        conn.close()
    assert attempts == [(1, 500), (2, 200)]  # the outcome made during the fault was kept


# ------------------------------------------------------------------ subprocess


class PipedDaemon(DaemonProcess):
    """The daemon subprocess with its log on a pipe: RLIMIT_FSIZE does not cover pipes."""

    def __init__(self, config_path: Path, port: int, cwd: Path) -> None:
        super().__init__(config_path, port, cwd)
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 15.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("WAHOOKD_CONFIG", None)
        self.proc = await asyncio.create_subprocess_exec(
            *cli("serve", "-c", str(self.config_path)),
            cwd=self.cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read(self.proc.stdout))
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc.returncode is None, f"daemon exited:\n{self.log()}"
                try:
                    async with http.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, f"daemon not ready:\n{self.log()}"
                await asyncio.sleep(0.05)

    async def _read(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace"))

    def log(self) -> str:
        return "".join(self.lines)

    async def stop(self) -> int:
        status = await super().stop()
        if self._reader is not None:
            await self._reader
        return status


class Subprocess:
    """The real daemon subprocess, reached over HTTP."""

    def __init__(self, daemon: PipedDaemon, http: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.http = http

    async def call(
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        token = jwt.encode({"exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
        async with self.http.request(
            method,
            self.daemon.base + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            return resp.status, dict(resp.headers), await resp.json()

    def backoffs(self) -> int:
        return sum(BACKOFF_LINE in line for line in self.daemon.lines)

    def alive(self) -> bool:
        assert self.daemon.proc is not None
        return self.daemon.proc.returncode is None


class WritesFail:
    """Every write(2) of the daemon process to a file fails with EFBIG: SQLITE_IOERR."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.limits = resource.prlimit(pid, resource.RLIMIT_FSIZE)

    async def inject(self) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (0, self.limits[1]))

    async def remove(self) -> None:
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, self.limits)


@asynccontextmanager
async def daemon_subprocess(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver, db: Path
) -> AsyncIterator[tuple[PipedDaemon, Subprocess]]:
    """The real daemon, database at `db`, a static webhook for s1 to the receiver."""
    port = free_port()
    config = tmp_path / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{db}"\n'
        f'[auth]\njwt_secret = "{SECRET}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, tmp_path)}"\nallow_networks = ["127.0.0.0/8"]\n'
        f'timeout = "5s"\nretry_schedule = {json.dumps(RETRY_SCHEDULE)}\n'
        f'[[webhook]]\nsession = "s1"\nurl = "{receiver.url}"\nevents = ["*"]\n'
    )
    daemon = PipedDaemon(config, port, tmp_path)
    await daemon.start()
    try:
        async with aiohttp.ClientSession() as http:
            yield daemon, Subprocess(daemon, http)
    except BaseException:
        print(daemon.log())
        raise
    finally:
        assert await daemon.stop() == 0, daemon.log()


async def test_io_error(tmp_path: Path, ca: trustme.CA, receiver: Receiver) -> None:
    db = tmp_path / "data" / "wahookd.db"
    async with daemon_subprocess(tmp_path, ca, receiver, db) as (daemon, h):
        assert daemon.proc is not None
        await exercise(h, receiver, WritesFail(daemon.proc.pid))
    assert "disk I/O error" in daemon.log()
    check_database(db)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    """Mount a tmpfs of `size` at path (needs root; skips the test otherwise)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


class FullFilesystem:
    """A file takes every free block of the database's filesystem: ENOSPC, SQLITE_FULL."""

    def __init__(self, filler: Path) -> None:
        self.filler = filler

    async def inject(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1):
                with suppress(OSError):
                    while os.write(fd, b"\0" * chunk):
                        pass
        finally:
            os.close(fd)
        assert os.statvfs(self.filler.parent).f_bavail == 0

    async def remove(self) -> None:
        self.filler.unlink(missing_ok=True)


async def test_full_filesystem(tmp_path: Path, ca: trustme.CA, receiver: Receiver) -> None:
    disk = tmp_path / "disk"
    with tmpfs(disk, "16m"):
        db = disk / "wahookd.db"
        async with daemon_subprocess(tmp_path, ca, receiver, db) as (daemon, h):
            await exercise(h, receiver, FullFilesystem(disk / "filler"))
        check_database(db)
    assert "database or disk is full" in daemon.log()
