"""`wahookd serve` with no config file at all: the embedded defaults just work."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import stat
import sys
from pathlib import Path

import aiohttp
import pytest
from daemon_proc import DaemonProcess, cli, free_port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_serve_on_embedded_defaults(tmp_path: Path) -> None:
    if not port_is_free(8787):
        pytest.skip("127.0.0.1:8787 is taken by another process on this machine")
    env = {k: v for k, v in os.environ.items() if k != "WAHOOKD_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wahookd",
        "serve",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get("http://127.0.0.1:8787/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("daemon did not become ready on 127.0.0.1:8787")
            token = tmp_path / "wahookd-data" / "jwt.secret"
            assert stat.S_IMODE(token.stat().st_mode) == 0o600
            db = tmp_path / "wahookd-data" / "wahookd.db"
            assert stat.S_IMODE(db.stat().st_mode) == 0o600
            async with http.get("http://127.0.0.1:8787/api/webhook/queue") as resp:
                assert resp.status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    text = out.decode()
    assert "listening on http://127.0.0.1:8787" in text
    # run as `python -m wahookd` on the embedded defaults: no -c, the interpreter's path
    assert hint(text) == [sys.executable, "-m", "wahookd", "token"]


def hint(log: str) -> list[str]:
    """The command of the startup line "mint a token with: COMMAND", split as a shell would."""
    (line,) = [line for line in log.splitlines() if "mint a token with: " in line]
    return shlex.split(line.split("mint a token with: ", 1)[1])


def relative(path: Path, start: Path) -> str:
    """path relative to start, with .. where needed."""
    return os.path.relpath(path, start)


@pytest.mark.parametrize("how", ["python -m wahookd", "console script"])
async def test_the_startup_hint_mints_a_token_from_anywhere(how: str, tmp_path: Path) -> None:
    program = cli()
    if how == "console script":
        script = Path(sys.executable).parent / "wahookd"
        if not script.is_file():
            pytest.skip("no wahookd console script beside this interpreter")
    daemon_dir, elsewhere, conf = (tmp_path / d for d in ("daemon", "elsewhere", "conf"))
    for d in (daemon_dir, elsewhere, conf):
        d.mkdir()
    if how == "console script":
        program = [relative(script, daemon_dir)]  # as typed in a shell
    port = free_port()
    config = conf / "wahookd.toml"
    # no [auth] key: the daemon generates conf/data/jwt.secret, beside its database
    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n[storage]\npath = "data/w.db"\n')
    daemon = DaemonProcess(Path(relative(config, daemon_dir)), port, daemon_dir, program=program)
    try:
        await daemon.start()
        command = hint(daemon.log())
        assert command[-3:] == ["token", "-c", str(config)]
        if how == "console script":
            assert command[:-3] == [str(script)]
        else:
            assert command[:-3] == [sys.executable, "-m", "wahookd"]
        env = {k: v for k, v in os.environ.items() if k != "WAHOOKD_CONFIG"}
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=elsewhere, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
        headers = {"Authorization": f"Bearer {out.decode().strip()}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{daemon.base}/api/webhook/queue", headers=headers) as resp,
        ):
            assert resp.status == 200, await resp.text()
    finally:
        await daemon.stop()
    assert not (elsewhere / "wahookd-data").exists()
