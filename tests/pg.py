"""A real PostgreSQL server for the test session, and a fresh database per test.

Registered as a plugin (`pytest_plugins` in tests/conftest.py), so every test directory
can ask for `pg_dsn` (a database of its own) or `pg_server`. The server is Debian's
postgresql (initdb and pg_ctl from PATH or /usr/lib/postgresql/*/bin): initdb in a temp
dir, as the `postgres` user when the tests run as root (PostgreSQL refuses root), on a
free 127.0.0.1 port, no Unix socket, fsync on, password authentication (so a DSN always
carries a password the tests can look for in logs). It is stopped by its PID at the end
of the session, also when the session fails. Without the binaries the tests that need it
skip, and the reason shows in pytest's summary (`-ra`).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
SUPERUSER = "postgres"
_DATABASES = itertools.count(1)


@dataclass(frozen=True)
class PgServer:
    """A running PostgreSQL server of the test session."""

    bindir: Path
    datadir: Path
    port: int
    password: str
    pid: int

    def dsn(self, database: str = "postgres") -> str:
        """A DSN for `database` as the superuser, password included."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run sql with psql (autocommit); its output. For setup, not for what is tested."""
        done = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout


def find_bindir() -> Path | None:
    """The directory of initdb and pg_ctl: PATH first, then Debian's versioned dirs."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        # /usr/local/bin/initdb may be a link into /usr/lib/postgresql/N/bin
        real = Path(initdb).resolve().parent
        if (real / "pg_ctl").exists() and (real / "postgres").exists():
            return real
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def why_unavailable() -> str | None:
    """Why no server can be started here, or None when one can."""
    if find_bindir() is None:
        return (
            "PostgreSQL is not installed: no initdb/pg_ctl in PATH or /usr/lib/postgresql/*/bin"
            " (Debian package postgresql; `make test` installs it when run as root)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    """argv as the `postgres` user when we are root (PostgreSQL refuses to run as root)."""
    return ["runuser", "-u", SUPERUSER, "--", *argv] if os.geteuid() == 0 else argv


def start_server() -> PgServer:
    """initdb a cluster in a new temp dir and start it; raises RuntimeError on failure."""
    bindir = find_bindir()
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="wahookd-pg-"))
    datadir = root / "data"
    password = secrets.token_urlsafe(18)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SUPERUSER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    pwfile.chmod(0o600)
    try:
        subprocess.run(
            _as_owner(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        pwfile.unlink()
        for attempt in range(3):  # another process may take the free port meanwhile
            port = _free_port()
            started = _pg_ctl_start(bindir, datadir, port)
            if started.returncode == 0:
                return PgServer(bindir, datadir, port, password, _postmaster_pid(datadir))
            if attempt == 2:
                log = (root / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    raise AssertionError("unreachable")


def _pg_ctl_start(bindir: Path, datadir: Path, port: int) -> subprocess.CompletedProcess[str]:
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''"
        " -c fsync=on -c synchronous_commit=on -c max_connections=200"
        " -c shared_buffers=32MB -c log_min_messages=warning"
    )
    return subprocess.run(
        _as_owner(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-w",
                "-t",
                str(int(START_TIMEOUT_S)),
                "-D",
                str(datadir),
                "-l",
                str(datadir.parent / "server.log"),
                "-o",
                options,
            ]
        ),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S + 10,
        check=False,
    )


def _postmaster_pid(datadir: Path) -> int:
    return int((datadir / "postmaster.pid").read_text().split()[0])


def halt_server(server: PgServer) -> None:
    """Stop the server by its PID (SIGINT: PostgreSQL's fast shutdown); its files stay."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGKILL)  # immediate: it would not stop


def start_again(server: PgServer) -> PgServer:
    """Start a halted server again on its data and port; the server with its new PID.

    Only for a server of the test's own (`start_server`), never the session's.
    """
    started = _pg_ctl_start(server.bindir, server.datadir, server.port)
    if started.returncode != 0:
        log = (server.datadir.parent / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()}\n{log}")
    return replace(server, pid=_postmaster_pid(server.datadir))


def stop_server(server: PgServer) -> None:
    """Stop the server by its PID, then remove it."""
    halt_server(server)
    shutil.rmtree(server.datadir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server; skips (with the reason) when none can run."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A DSN of a new, empty database of its own for this test; dropped afterwards."""
    name = f"t{os.getpid()}_{next(_DATABASES)}"
    pg_server.psql(f"CREATE DATABASE {name}")
    yield pg_server.dsn(name)
    # WITH (FORCE): a pool a failed test left open must not keep the database alive
    pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
