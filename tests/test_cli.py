"""The command line, called through its entry function with argv."""

from __future__ import annotations

import os
import stat
import time
import tomllib
from pathlib import Path

import jwt
import pytest

import wahookd
from wahookd import __version__
from wahookd.auth import load_keys
from wahookd.cli import invocation, main
from wahookd.config import load_config, parse_config_text

EXAMPLE = Path(__file__).parents[1] / "wahookd.toml.example"
SECRET = "k" * 64


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wahookd.toml"
    path.write_text(text)
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"wahookd {__version__}\n"


def test_check_config_ok_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, '[delivery]\ntimeout = "3s"\n')
    assert main(["check-config", "-c", str(good)]) == 0
    assert capsys.readouterr().out == "ok\n"
    bad = write(tmp_path, '[delivery]\ntimeout = "soon"\nbogus = 1\n')
    assert main(["check-config", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: delivery.timeout: invalid duration 'soon'" in err
    assert "bogus" in err


def test_missing_config_file_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "-c", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_example_config_passes_and_lists_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(EXAMPLE)]) == 0
    # uncomment the optional lines: every key of every section must be present
    text = EXAMPLE.read_text()
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and ("=" in line or line.startswith("# [[")) else line
        for line in text.splitlines()
    )
    doc = tomllib.loads(uncommented.replace("jwt_secret_file", "jwt_secret"))
    expected = {
        "server": {"listen", "max_body", "shutdown_grace", "pin_cpu"},
        "storage": {"path", "synchronous", "keep_finished", "backend"},
        "cluster": {"lease"},
        "auth": {"jwt_secret", "jwt_public_key_file", "algorithms", "issuer", "audience", "leeway"},
        "delivery": {
            "timeout",
            "retry_schedule",
            "retry_jitter",
            "concurrency",
            "per_webhook_concurrency",
            "require_https",
            "allow_networks",
            "ca_file",
            "max_response",
            "idle_timeout",
            "disable_after",
        },
        "log": {"level", "format"},
    }
    for section, keys in expected.items():
        assert set(doc[section]) == keys, section
    assert set(doc["webhook"][0]) == {
        "session",
        "url",
        "events",
        "secret_file",
        "headers",
        "description",
        "filter",
        "ordering",
        "rate_limit",
    }
    # and the example's values are the embedded defaults
    example = parse_config_text(text, source=EXAMPLE, base_dir=EXAMPLE.parent)
    from wahookd.config import default_config

    defaults = default_config()
    assert example.delivery == defaults.delivery
    assert example.server == defaults.server
    assert example.log == defaults.log
    assert example.auth == defaults.auth


def test_token_prints_only_a_jwt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\nissuer = "gw"\naudience = "wahookd"\n')
    assert main(["token", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    claims = jwt.decode(out.strip(), SECRET, algorithms=["HS256"], audience="wahookd", issuer="gw")
    assert claims["role"] == "admin" and claims["sessions"] == "*"
    assert 3590 <= claims["exp"] - time.time() <= 3600
    assert (
        main(
            [
                "token",
                "-c",
                str(cfg),
                "--role",
                "viewer",
                "--sessions",
                "a,b",
                "--ttl",
                "5m",
                "--sub",
                "ops",
            ]
        )
        == 0
    )
    claims = jwt.decode(
        capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"], audience="wahookd"
    )
    assert (claims["role"], claims["sessions"], claims["sub"]) == ("viewer", ["a", "b"], "ops")
    assert 290 <= claims["exp"] - time.time() <= 300


def test_token_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, f'[auth]\njwt_secret = "{SECRET}"\n')
    assert main(["token", "-c", str(cfg), "--ttl", "forever"]) == 2
    assert "--ttl" in capsys.readouterr().err
    assert main(["token", "-c", str(cfg), "--sessions", "bad id"]) == 2
    assert "--sessions" in capsys.readouterr().err


def test_token_never_creates_the_secret_and_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # run where the daemon is not: the embedded defaults point at ./wahookd-data/jwt.secret
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WAHOOKD_CONFIG", raising=False)
    assert main(["token"]) == 2
    out, err = capsys.readouterr()
    secret_file = tmp_path / "wahookd-data" / "jwt.secret"
    assert out == ""
    assert err == (
        f"wahookd: no JWT secret at {secret_file}: start the daemon once (wahookd serve)"
        " to generate it, or pass the daemon's config with -c PATH\n"
    )
    assert not (tmp_path / "wahookd-data").exists()
    # the same with a config file naming no key: the path is the one beside its database
    cfg = write(tmp_path, '[storage]\npath = "state/w.db"\n')
    assert main(["token", "-c", str(cfg)]) == 2
    assert f"no JWT secret at {tmp_path / 'state' / 'jwt.secret'}: " in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_token_reads_the_secret_the_daemon_generated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WAHOOKD_CONFIG", raising=False)
    config = load_config(None)
    generated = load_keys(config.auth, config.storage.path)  # what `serve` does at startup
    assert main(["token"]) == 0
    token = capsys.readouterr().out.strip()
    secret_file = tmp_path / "wahookd-data" / "jwt.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert generated.hmac_secret == secret_file.read_text().strip()
    assert jwt.decode(token, generated.hmac_secret, algorithms=["HS256"])["role"] == "admin"


def test_invocation_is_absolute_and_runnable(tmp_path: Path) -> None:
    python = "/usr/bin/python3.11"
    script = tmp_path / "bin" / "wahookd"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    zipapp = tmp_path / "wahookd.pyz"
    zipapp.write_bytes(b"PK")
    zipapp.chmod(0o644)
    main_py = Path(wahookd.__file__).parent / "__main__.py"
    assert invocation(str(main_py), python) == [python, "-m", "wahookd"]
    assert invocation(str(script), python) == [str(script)]
    assert invocation(str(zipapp), python) == [python, str(zipapp)]  # not executable
    relative = os.path.relpath(script)
    assert invocation(relative, python) == [str(script.resolve())]
    assert invocation("", python) == ["wahookd"]


def test_check_config_says_when_it_checked_the_embedded_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WAHOOKD_CONFIG", raising=False)
    monkeypatch.setattr("wahookd.config.DEFAULT_CONFIG_PATHS", (tmp_path / "wahookd.toml",))
    assert main(["check-config"]) == 0
    assert capsys.readouterr() == ("ok (no config file found; checked the embedded defaults)\n", "")
    # found by the lookup (./wahookd.toml): plain ok, as SPEC §1 says
    write(tmp_path, '[log]\nlevel = "debug"\n')
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out == "ok\n"


@pytest.mark.parametrize("command", ["serve", "token", "check-config"])
def test_every_command_help_has_a_description(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    # argparse prints the description between the usage and the options
    description = help_text.split("\n\n")[1]
    assert not description.startswith("options:"), help_text
    assert len(description.split()) >= 8 and description.rstrip().endswith("."), description


def test_console_prints_the_url_with_a_fresh_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path, f'[server]\nlisten = "0.0.0.0:9876"\n[auth]\njwt_secret = "{SECRET}"\n')
    assert main(["console", "-c", str(cfg), "--role", "viewer"]) == 0
    captured = capsys.readouterr()
    url, token = captured.out.strip().split("#token=")
    assert url == "http://127.0.0.1:9876/ui/"  # every interface: reached on loopback
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["role"] == "viewer" and claims["sub"] == "wahookd-console"
    assert 890 <= claims["exp"] - time.time() <= 900  # 15 minutes by default
    assert "valid for 15m" in captured.err
    assert main(["console", "-c", str(cfg), "--ttl", "1h"]) == 0
    claims = jwt.decode(capsys.readouterr().out.split("#token=")[1].strip(), SECRET, ["HS256"])
    assert claims["role"] == "admin" and 3590 <= claims["exp"] - time.time() <= 3600
    with pytest.raises(SystemExit):
        main(["console", "-c", str(cfg), "--role", "ingest"])
    assert main(["console", "-c", str(cfg), "--ttl", "soon"]) == 2
    unix = write(
        tmp_path, f'[server]\nlisten = "unix:{tmp_path}/w.sock"\n[auth]\njwt_secret = "{SECRET}"\n'
    )
    capsys.readouterr()
    assert main(["console", "-c", str(unix)]) == 2
    assert "browser needs a TCP address" in capsys.readouterr().err
