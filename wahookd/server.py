"""Runs the daemon: startup, serve until a signal, orderly shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .app import build_app
from .auth import generated_secret_path
from .clock import Clock
from .config import Config

log = logging.getLogger("wahookd")


async def serve(config: Config, *, clock: Clock | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, drain and close."""
    app = build_app(config, clock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        listen = config.server.listen
        site: web.BaseSite
        if listen.unix_path is not None:
            site = web.UnixSite(runner, listen.unix_path)
        else:
            site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
        await site.start()
        _announce(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            # handlers only set the event; the main flow below does the work
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("stopping: no new requests, waiting for attempts in flight")
    finally:
        await runner.cleanup()
    log.info("stopped")


def _announce(config: Config) -> None:
    listen = config.server.listen
    where = listen.unix_path if listen.unix_path else f"http://{listen}"
    log.info("wahookd listening on %s (database %s)", where, config.storage.path)
    source = f" -c {config.source}" if config.source else ""
    if not (config.auth.jwt_secret or config.auth.jwt_secret_file):
        log.info(
            "mint a token with: wahookd token%s   (key: %s)",
            source,
            generated_secret_path(config.storage.path),
        )
    else:
        log.info("mint a token with: wahookd token%s", source)
