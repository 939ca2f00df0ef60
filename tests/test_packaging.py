"""The shipped artefacts: the shiv zipapp and the systemd unit."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import aiohttp
import pytest
from daemon_proc import DaemonProcess, free_port
from packaging.requirements import Requirement

from wahookd import __version__
from wahookd.config import default_config
from wahookd.units import parse_duration

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "wahookd.service"


def isolated_python() -> list[str]:
    """The base interpreter without the venv, site-packages or PYTHON* variables."""
    base = getattr(sys, "_base_executable", sys.executable)
    return [base, "-I", "-S"]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "wahookd.pyz"
    done = subprocess.run(
        ["sh", str(ROOT / "packaging" / "build-pyz.sh"), sys.executable, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out.chmod(0o644)  # as README's install steps install it: run by python3, not executed
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pyz_runs_without_the_venv(pyz: Path, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "shiv")}
    done = subprocess.run(
        [*isolated_python(), str(pyz), "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wahookd {__version__}"
    # the code that ran is the zipapp's copy, not the checkout's
    assert any((tmp_path / "shiv").glob("wahookd.pyz_*/site-packages/wahookd/cli.py"))


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_pyz_serves_from_outside_the_repo(pyz: Path, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n[storage]\npath = "{tmp_path / "state/w.db"}"\n'
    )
    env = {"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "shiv")}
    daemon = DaemonProcess(
        config,
        port,
        tmp_path,
        env=env,
        program=[*isolated_python(), str(pyz)],
    )
    try:
        await daemon.start(timeout_s=60)
        # the startup hint runs the zipapp (installed 0644) with the daemon's interpreter
        (line,) = [x for x in daemon.log().splitlines() if "mint a token with: " in x]
        command = shlex.split(line.split("mint a token with: ", 1)[1])
        assert command[1:] == [str(pyz), "token", "-c", str(config)]
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and out.count(b".") == 2
        await check_console_served(daemon.base)
        proc = await asyncio.create_subprocess_exec(
            *command[:2],
            "console",
            "-c",
            str(config),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and out.startswith(f"{daemon.base}/ui/#token=".encode())
        await daemon.signal(signal.SIGTERM)
        assert await daemon.wait() == 0
    finally:
        await daemon.stop()
    assert "listening on" in daemon.log()
    assert (tmp_path / "state" / "w.db").exists()


async def check_console_served(base: str) -> None:
    """The console's files come out of the zipapp, typed, with the CSP (SPEC §9)."""
    wanted = {
        "/ui/": "text/html",
        "/ui/app.js": "text/javascript",
        "/ui/views/delivery.js": "text/javascript",
        "/ui/style.css": "text/css",
    }
    async with aiohttp.ClientSession() as http:
        for path, kind in wanted.items():
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
                assert resp.content_type == kind, path
                assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
                assert len(await resp.read()) > 100
        async with http.get(base + "/ui/nope.js") as resp:
            assert resp.status == 404


def unit() -> dict[str, dict[str, str]]:
    """The unit file's sections; a key given twice (SystemCallFilter=) joins its values."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current[key] = f"{current[key]} {value}".strip() if key in current else value
    return sections


def syscall_allowed(name: str, groups: dict[str, set[str]]) -> bool:
    """Whether the unit's SystemCallFilter= lines, read in order as systemd does, allow name.

    The first line sets the default (an allow list denies the rest); each later line
    adds to or takes from the allowed set.
    """
    lines = [
        raw.strip().partition("=")[2]
        for raw in UNIT.read_text().splitlines()
        if raw.strip().startswith("SystemCallFilter=")
    ]
    allowed = not lines[0].startswith("~")  # a deny list first: everything else allowed
    for value in lines:
        deny = value.startswith("~")
        entries = value.lstrip("~").split()
        if any(e == name or name in groups.get(e, set()) for e in entries):
            allowed = not deny
    return allowed


def systemd_groups(names: list[str]) -> dict[str, set[str]] | None:
    """These syscall groups, nested ones expanded, as this machine's systemd defines them."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return None

    def expand(group: str) -> set[str]:
        out = subprocess.run(
            [analyze, "syscall-filter", group], capture_output=True, text=True, check=True
        ).stdout.splitlines()[1:]
        calls: set[str] = set()
        for line in (line.strip() for line in out):
            if line.startswith("@"):
                calls |= expand(line)
            elif line and not line.startswith("#"):
                calls.add(line)
        return calls

    return {name: expand(name) for name in names}


def test_unit_lets_the_daemon_pin_its_threads() -> None:
    # systemd 252's groups, where `systemd-analyze` is missing: @system-service holds
    # @resources, which holds sched_setaffinity; @privileged does not
    groups = systemd_groups(["@system-service", "@resources", "@privileged"]) or {
        "@system-service": {"sched_setaffinity", "sched_getaffinity", "setrlimit"},
        "@resources": {"sched_setaffinity", "setrlimit"},
        "@privileged": {"chown", "setuid"},
    }
    assert "sched_setaffinity" in groups["@resources"]
    assert syscall_allowed("sched_setaffinity", groups)  # server.pin_cpu (cpu.py)
    assert not syscall_allowed("setrlimit", groups)  # the rest of @resources stays denied


def test_unit_has_the_hardening_the_issue_lists() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert parse_duration(service["WatchdogSec"]) > 0
    assert service["ExecStart"].split()[1].endswith("wahookd.pyz")
    assert "-HUP $MAINPID" in service["ExecReload"]
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == "wahookd"
    assert service["ConfigurationDirectory"] == "wahookd"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert service["LockPersonality"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert "@system-service" in service["SystemCallFilter"]
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    # shiv must unpack somewhere writable under ProtectSystem=strict
    assert "SHIV_ROOT=/var/cache/wahookd" in service["Environment"]


def test_unit_stop_timeout_outlasts_the_drain() -> None:
    service = unit()["Service"]
    grace = default_config().server.shutdown_grace_s
    assert parse_duration(service["TimeoutStopSec"]) > grace + 5


def test_unit_paths_match_the_example_config() -> None:
    service = unit()["Service"]
    example = (ROOT / "wahookd.toml.example").read_text()
    assert "-c /etc/wahookd/wahookd.toml" in service["ExecStart"]
    assert 'path = "/var/lib/wahookd/wahookd.db"' in example


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit() -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert done.returncode == 0, done.stderr
    assert "wahookd.service" not in done.stderr, done.stderr


def test_pyz_pins_stay_within_pyproject_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    pins = {}
    for line in (ROOT / "packaging" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    for name, req in ranges.items():
        assert name in pins, f"{name} is not pinned in packaging/requirements.txt"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {req.specifier}"


def install_steps() -> dict[str, str]:
    """README's "Install on a server" `install SRC DEST` lines: {DEST: SRC}."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Install on a server", 1)[1].split("\n## ", 1)[0]
    copied = {}
    for line in section.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["install"]:
            src, dest = [w for w in words[1:] if not w.startswith("-") and w != "0644"][-2:]
            copied[dest] = src
    return copied


def test_unit_documentation_is_installed_by_the_install_steps() -> None:
    docs = unit()["Unit"]["Documentation"].split()
    assert docs
    copied = install_steps()
    assert "/etc/systemd/system/wahookd.service" in copied  # the parsing found the steps
    for doc in docs:
        scheme, _, rest = doc.partition(":")
        assert scheme in ("file", "man", "https"), doc
        if scheme == "file":
            path = rest.removeprefix("//")
            assert path in copied, f"{doc}: no install step puts a file there"
            assert (ROOT / copied[path]).is_file(), copied[path]


@pytest.mark.timeout(300)
def test_wheel_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    # build a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "wahookd", src / "wahookd", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "deprecat" not in output.lower(), output
    (wheel,) = (tmp_path / "dist").glob("wahookd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(f"wahookd-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata.splitlines()
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    console = {p.relative_to(ROOT).as_posix() for p in (ROOT / "wahookd" / "ui").rglob("*.*")}
    console = {p for p in console if not p.endswith((".py", ".pyc"))}
    assert console and console <= names, console - names
