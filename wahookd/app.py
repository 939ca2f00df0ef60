"""Builds the aiohttp application and wires the parts' lifetimes (cleanup_ctx)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import web

from .api import openapi
from .api.common import auth_log, auth_middleware, error_middleware
from .api.keys import (
    CLOCK,
    METRICS,
    REFUSALS,
    REGISTRY,
    SCHEDULER,
    SENDER,
    SETTINGS,
    STORE,
    Settings,
)
from .api.meta import OPENAPI_JSON
from .api.routes import add_routes
from .audit import CONFIG as CONFIG_ACTOR
from .audit import audit
from .auth import Verifier, load_keys
from .clock import Clock, SystemClock
from .config import Config
from .delivery.scheduler import Scheduler
from .delivery.sender import Sender
from .logs import RateLimitedLog
from .metrics import Metrics
from .models import Webhook
from .registry import Registry
from .retention import Pruner
from .store import Store

log = logging.getLogger("wahookd")

CONFIG = web.AppKey("wahookd_config", Config)
MAX_HEADER_BYTES = 16 * 1024
PRUNER = web.AppKey("wahookd_pruner", Pruner)
REFUSAL_LOG_INTERVAL_S = 10.0  # a refused token's warning, at most once per reason


def build_app(config: Config, clock: Clock | None = None) -> web.Application:
    """The daemon as an aiohttp Application; its parts start with it and stop with it."""
    app = web.Application(
        middlewares=[error_middleware, auth_middleware],
        client_max_size=config.server.max_body,
        # room for a header just over the token limit, so it gets our JSON 401; beyond
        # this aiohttp's parser refuses the request itself (400, plain text)
        handler_args={"max_field_size": MAX_HEADER_BYTES},
    )
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app[REFUSALS] = RateLimitedLog(auth_log, app[CLOCK], interval_s=REFUSAL_LOG_INTERVAL_S)
    app[OPENAPI_JSON] = openapi.document_bytes()
    add_routes(app)
    app.cleanup_ctx.append(_daemon)
    return app


def static_rows(config: Config) -> list[tuple[str, str, str, tuple[str, ...], str | None, object]]:
    """The config file's static webhooks as the store syncs them."""
    return [(w.key, w.session, w.url, w.events, w.secret, w.headers) for w in config.webhooks]


async def reload(app: web.Application, new: Config) -> list[str]:
    """Apply a reloaded config (SIGHUP); returns what needs a restart to take effect."""
    settings, scheduler, registry = app[SETTINGS], app[SCHEDULER], app[REGISTRY]
    old = settings.config
    restart = [
        f"{name} changed: restart wahookd to apply it"
        for name, before, after in (
            ("server.listen", old.server.listen, new.server.listen),
            ("server.max_body", old.server.max_body, new.server.max_body),
            ("storage.path", old.storage.path, new.storage.path),
            ("storage.synchronous", old.storage.synchronous, new.storage.synchronous),
        )
        if before != after
    ]
    keys = load_keys(new.auth, old.storage.path)
    settings.verifier = Verifier(new.auth, keys)
    app[SENDER].reconfigure(new.delivery)
    scheduler.config = new.delivery
    statics = registry.statics()
    before = {hook.id for hook in statics}
    await app[STORE].sync_static_webhooks(static_rows(new), app[CLOCK].time())
    registry.replace_all(await app[STORE].webhooks())
    after = {hook.id: hook for hook in registry.statics()}
    _audit_statics(statics, list(after.values()))
    for webhook_id in before | set(after):
        # re-read each static lane: a reload may re-activate one or drop its queue
        scheduler.webhook_changed(after.get(webhook_id), webhook_id)
    app[PRUNER].keep_finished_s = new.storage.keep_finished_s
    storage = replace(old.storage, keep_finished_s=new.storage.keep_finished_s)
    settings.config = replace(new, server=old.server, storage=storage)
    return restart


def _audit_statics(before: list[Webhook], after: list[Webhook]) -> None:
    """One audit line per static webhook a reload added, changed or removed."""
    old = {hook.id: hook for hook in before}
    new = {hook.id: hook for hook in after}
    for webhook_id in sorted(old.keys() | new.keys()):
        was, now = old.get(webhook_id), new.get(webhook_id)
        if now is None:
            action, details = "webhook.delete", "removed from the config file"
        elif was is None:
            action, details = "webhook.put", "added by the config file"
        elif (was.url, was.events, was.secret, was.headers, was.is_active) != (
            now.url,
            now.events,
            now.secret,
            now.headers,
            now.is_active,
        ):
            action, details = "webhook.put", "changed by the config file"
        else:
            continue
        hook = now or was
        assert hook is not None
        audit(action, by=CONFIG_ACTOR, session=hook.session, webhook=webhook_id, details=details)


async def _daemon(app: web.Application) -> AsyncIterator[None]:
    config, clock = app[CONFIG], app[CLOCK]
    keys = load_keys(config.auth, config.storage.path)
    store = await Store.open(config.storage.path, config.storage.synchronous)
    try:
        recovered = await store.recover(clock.time())
        if recovered:
            log.info("returned %d interrupted attempts to the queue", recovered)
        await store.sync_static_webhooks(static_rows(config), clock.time())
        registry = Registry(await store.webhooks())
        sender = Sender(config.delivery)
        await sender.start()
        metrics = Metrics(clock)
        scheduler = Scheduler(
            store,
            registry,
            sender,
            config.delivery,
            clock,
            on_outcome=metrics.observe_outcome,
            on_claimed=metrics.observe_claimed,
        )
        metrics.watch(store, scheduler)
        app[SETTINGS] = Settings(config, Verifier(config.auth, keys))
        app[STORE], app[REGISTRY], app[SENDER] = store, registry, sender
        app[SCHEDULER], app[METRICS] = scheduler, metrics
        runner = asyncio.create_task(scheduler.run(), name="wahookd-scheduler")
        pruner = Pruner(store, clock, config.storage.keep_finished_s)
        app[PRUNER] = pruner
        pruning = asyncio.create_task(pruner.run(), name="wahookd-pruner")
        try:
            yield
        finally:
            pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruning
            cancelled = await scheduler.drain(config.server.shutdown_grace_s)
            await runner
            if cancelled:
                log.warning("%d attempts did not finish within the shutdown grace", cancelled)
            # attempts cut short go back to the queue with their attempt number unchanged
            await store.recover(clock.time())
            await sender.close()
    finally:
        await store.close()
