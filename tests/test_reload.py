"""SIGHUP reload is atomic: a failure at any step leaves the old config fully in force."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from support import ca_file, make_config, running_daemon

from wahookd.api.keys import SCHEDULER, SENDER, SETTINGS, STORE
from wahookd.app import ReloadError, reload
from wahookd.config import Config
from wahookd.store import StorageUnavailable


def config(tmp_path: Path, ca: trustme.CA, *, secret: str, events: str, timeout: str) -> Config:
    extra = f'[[webhook]]\nsession = "s1"\nurl = "https://hooks.example/a"\nevents = [{events}]\n'
    cfg = make_config(tmp_path, extra, ca_file=str(ca_file(ca, tmp_path)), timeout=timeout)
    return replace(cfg, auth=replace(cfg.auth, jwt_secret=secret))


def snapshot(app: Any) -> tuple[Any, ...]:
    """Everything a reload swaps, as comparable values."""
    statics = sorted((h.id, h.url, h.events) for h in app[SCHEDULER].registry.statics())
    return (
        app[SETTINGS].config,
        app[SETTINGS].verifier,
        app[SENDER].config,
        app[SCHEDULER].config,
        statics,
    )


async def failing_write(*args: Any, **kwargs: Any) -> Any:
    raise StorageUnavailable("database or disk is full")


async def test_a_failed_store_write_leaves_the_old_config_in_force(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = config(tmp_path, ca, secret="a" * 64, events='"message.received"', timeout="2s")
    new = config(tmp_path, ca, secret="b" * 64, events='"*"', timeout="3s")
    async with running_daemon(old) as d:
        app = d.client.app
        before = snapshot(app)
        with monkeypatch.context() as m:
            m.setattr(app[STORE], "write", failing_write)
            with pytest.raises(ReloadError, match="cannot store the static webhooks"):
                await reload(app, new)
        assert snapshot(app) == before
        # the old key still verifies tokens; the new one does not yet
        status, _ = await d.call("GET", "/api/webhook/queue")
        assert status == 200

        await reload(app, new)
        after = snapshot(app)
        assert after[2].timeout_s == 3.0 and after[3].timeout_s == 3.0
        assert [s[2] for s in after[4]] == [("*",)]
        status, _ = await d.call("GET", "/api/webhook/queue")  # minted with the old key
        assert status == 401


async def test_a_broken_ca_bundle_changes_nothing(tmp_path: Path, ca: trustme.CA) -> None:
    old = config(tmp_path, ca, secret="a" * 64, events='"message.received"', timeout="2s")
    async with running_daemon(old) as d:
        app = d.client.app
        before = snapshot(app)
        bad = tmp_path / "broken.pem"
        bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        new = config(tmp_path, ca, secret="b" * 64, events='"*"', timeout="3s")
        new = replace(new, delivery=replace(new.delivery, ca_file=bad))
        with pytest.raises(ReloadError, match="cannot use the new config"):
            await reload(app, new)
        assert snapshot(app) == before
        rows = await app[STORE].webhooks()
        assert [h.events for h in rows if h.kind == "static"] == [("message.received",)]


async def test_a_changed_pin_cpu_needs_a_restart(tmp_path: Path, ca: trustme.CA) -> None:
    old = config(tmp_path, ca, secret="a" * 64, events='"message.received"', timeout="2s")
    new = replace(old, server=replace(old.server, pin_cpu="off"))
    async with running_daemon(old) as d:
        app = d.client.app
        # the threads were placed at start (server.py): a reload does not move them
        assert await reload(app, new) == ["server.pin_cpu changed: restart wahookd to apply it"]
        assert app[SETTINGS].config.server.pin_cpu == "auto"
