"""[storage] backend, dsn, dsn_file and [cluster] lease: check-config, and what serve does.

A DSN's password never shows: not in an error, not in repr(), not in the daemon's output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pg import PgServer

from wahookd.cli import main
from wahookd.config import ConfigError, load_config
from wahookd.dsn import resolve

PASSWORD = "hunter2-never-shown"
DSN = f"postgresql://wahookd:{PASSWORD}@127.0.0.1:5432/wahookd"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wahookd.toml"
    path.write_text(text)
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.errors


def test_sqlite_is_the_default_backend_and_the_lease_30s(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.storage.backend == "sqlite" and config.storage.dsn is None
    assert config.cluster.lease_s == 30.0


def test_postgres_with_an_inline_dsn(tmp_path: Path) -> None:
    path = write(
        tmp_path, f'[storage]\nbackend = "postgres"\ndsn = "{DSN}"\n[cluster]\nlease = "45s"\n'
    )
    config = load_config(path)
    assert config.storage.backend == "postgres"
    assert resolve(config.storage.dsn, config.storage.dsn_file) == DSN
    assert config.cluster.lease_s == 45.0
    assert PASSWORD not in repr(config)  # kept out of repr (and so out of any log of it)


def test_postgres_with_a_dsn_file(tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(f"\n{DSN}\n")
    path = write(tmp_path, f'[storage]\nbackend = "postgres"\ndsn_file = "{dsn_file}"\n')
    config = load_config(path)
    assert (
        config.storage.dsn is None and resolve(config.storage.dsn, config.storage.dsn_file) == DSN
    )


@pytest.mark.parametrize(
    ("storage", "wanted"),
    [
        ('backend = "postgres"', 'storage.backend: "postgres" needs storage.dsn or'),
        ('backend = "mysql"', "storage.backend:"),
        (f'dsn = "{DSN}"', 'storage.dsn: only used with storage.backend = "postgres"'),
        (
            f'backend = "postgres"\ndsn = "{DSN}"\ndsn_file = "DSNFILE"',
            "storage.dsn: set storage.dsn or storage.dsn_file, not both",
        ),
        (
            f'backend = "postgres"\ndsn = "mysql://u:{PASSWORD}@h/d"',
            "storage.dsn: not a PostgreSQL DSN",
        ),
        ('backend = "postgres"\ndsn_file = "missing"', "storage.dsn_file: cannot read file"),
        ('backend = "postgres"\ndsn_file = "DSNFILE-BAD"', "storage.dsn_file:"),
    ],
)
def test_bad_storage_is_named_by_file_and_key_without_the_password(
    tmp_path: Path, storage: str, wanted: str
) -> None:
    good, bad = tmp_path / "dsn", tmp_path / "bad-dsn"
    good.write_text(DSN)
    bad.write_text(f"not a dsn {PASSWORD}\n")
    storage = storage.replace("DSNFILE-BAD", str(bad)).replace("DSNFILE", str(good))
    path = write(tmp_path, f"[storage]\n{storage}\n")
    found = errors(path)
    assert any(e.startswith(f"{path}: ") and wanted in e for e in found), found
    assert not any(PASSWORD in e for e in found), found


@pytest.mark.parametrize(("lease", "wanted"), [('"1s"', "at least 3s"), ('"0s"', ""), ("-5", "")])
def test_a_lease_too_short_is_refused(tmp_path: Path, lease: str, wanted: str) -> None:
    found = errors(write(tmp_path, f"[cluster]\nlease = {lease}\n"))
    assert any(e.startswith(f"{tmp_path / 'wahookd.toml'}: cluster.lease: ") for e in found)
    assert any(wanted in e for e in found), found


def test_check_config_prints_every_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[storage]\nbackend = "postgres"\n[cluster]\nlease = "1s"\nbogus = 1\n')
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "storage.backend" in err and "cluster.lease" in err and "cluster.bogus" in err


def test_serve_says_which_database_it_cannot_reach_without_the_password(
    tmp_path: Path, pg_server: PgServer
) -> None:
    # the session's server, a wrong password: PostgreSQL refuses the login
    dsn = pg_server.dsn().replace(pg_server.password, PASSWORD)
    path = write(
        tmp_path,
        f'[server]\nlisten = "127.0.0.1:0"\n[storage]\nbackend = "postgres"\ndsn = "{dsn}"\n'
        f'path = "{tmp_path / "data" / "w.db"}"\n',
    )
    done = subprocess.run(
        [sys.executable, "-m", "wahookd", "serve", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert PASSWORD not in output
    assert f"postgresql://postgres:****@127.0.0.1:{pg_server.port}/postgres" in output
    assert "Traceback" not in output
