"""Runs the daemon: startup, serve until a signal, reload on SIGHUP, orderly shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import signal
import sys

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .api.common import error_response
from .api.keys import SCHEDULER
from .app import ReloadError, build_app, reload
from .auth import generated_secret_path
from .clock import Clock
from .config import Config, ConfigError, load_config
from .cpu import CpuPinner, pin_mode
from .invocation import invocation
from .logs import set_level
from .systemd import Notifier

log = logging.getLogger("wahookd")
http_log = logging.getLogger("wahookd.http")
# the words that open aiohttp's parser message ("Invalid header value char:\n\n  b'...'"),
# before it quotes what the client sent
_PARSER_WORDS = re.compile(r"[A-Za-z0-9 ,-]{1,80}")


class _RequestHandler(RequestHandler):
    """aiohttp's connection handler; what its parser refuses gets our envelope and one line.

    aiohttp answers a request it cannot parse (a NUL in a header, two Content-Lengths, a
    request line over 8 KiB) with handle_error(), before any middleware, logging the
    parser's exception with a traceback at error level. That is the client's mistake:
    one info line, no traceback, and the error envelope of SPEC §3.
    """

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A 4xx from the parser as the error envelope; anything else as aiohttp does it."""
        if status >= 500 or request.writer.output_size > 0:
            # 5xx is a bug of ours (the traceback helps); after output, aiohttp hangs up
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):  # its message quotes the line
            reason = "request line or header field too long"
        else:
            if message is None and isinstance(exc, HttpProcessingError):
                message = exc.message
            words = _PARSER_WORDS.match(message or "")
            reason = (words.group().strip() if words else "") or "unreadable request"
        # non-HTTP bytes (TLS, scanners) as a connection's first request: aiohttp's choice
        quiet = self._request_count == 1 and isinstance(exc, BadHttpMethod)
        http_log.log(
            logging.DEBUG if quiet else logging.INFO,
            "refused malformed HTTP from %s: %s (%d)",
            request.remote,
            reason,
            status,
        )
        response = error_response(status, f"malformed HTTP request: {reason}")
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server, with our connection handler."""

    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner serving through _Server (aiohttp has no option to name the handler)."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # the app's startup runs here
        return _Server(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **plain._kwargs,
        )


async def serve(
    config: Config, *, clock: Clock | None = None, notifier: Notifier | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, drain and close."""
    notifier = notifier or Notifier()
    app = build_app(config, clock)
    runner = AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=config.server.shutdown_grace_s
    )
    stop, hup = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum, event in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, hup)):
        # handlers only set an event; the main flow below does the work
        loop.add_signal_handler(signum, event.set)
    # before the store starts its threads: they inherit the loop thread's CPU
    pinner = CpuPinner(pin_mode(config.server.pin_cpu, config.storage.backend))
    pinner.start()
    await runner.setup()
    watchdog = asyncio.create_task(notifier.watchdog(), name="wahookd-watchdog")
    try:
        await _start_site(runner, config)
        await app[SCHEDULER].started.wait()
        _announce(config)
        notifier.ready(f"listening on {config.server.listen}")
        while not stop.is_set():
            await _first(stop, hup)
            if hup.is_set() and not stop.is_set():
                hup.clear()
                notifier.reloading()
                await _reload(app, config)
                notifier.ready(f"listening on {config.server.listen}")
        log.info("stopping: no new requests, waiting for attempts in flight")
        notifier.stopping()
    finally:
        pinner.stop()
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    log.info("stopped")


async def _start_site(runner: AppRunner, config: Config) -> None:
    listen = config.server.listen
    site: web.BaseSite
    if listen.unix_path is not None:
        site = web.UnixSite(runner, listen.unix_path)
    else:
        site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True)
    await site.start()


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _reload(app: web.Application, running: Config) -> None:
    source = running.source
    log.info("SIGHUP: reloading %s", source or "the embedded defaults")
    try:
        new = load_config(source)
    except ConfigError as exc:
        log.error("reload failed, keeping the running config:\n%s", exc)
        return
    try:
        notes = await reload(app, new)
    except ReloadError as exc:
        log.error("reload failed, keeping the running config: %s", exc)
        return
    except Exception:
        log.exception("reload failed, keeping the running config")
        return
    set_level(new.log.level)
    for note in notes:
        log.warning(note)
    log.info("reloaded: %d static webhooks", len(new.webhooks))


def _announce(config: Config) -> None:
    listen = config.server.listen
    where = listen.unix_path if listen.unix_path else f"http://{listen}"
    log.info("wahookd listening on %s (database %s)", where, config.storage.path)
    if not (config.auth.jwt_secret or config.auth.jwt_secret_file):
        log.info("JWT secret: %s", generated_secret_path(config.storage.path))
    # a command that works as printed, from any directory: absolute program and config
    command = [*invocation(sys.argv[0], sys.executable), "token"]
    if config.source:
        command += ["-c", str(config.source)]
    log.info("mint a token with: %s", shlex.join(command))
