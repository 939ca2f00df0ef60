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
from .api.console import add_console_routes
from .api.keys import (
    CLOCK,
    METRICS,
    REFUSALS,
    REGISTRY,
    SCHEDULER,
    SENDER,
    SETTINGS,
    STORE,
    WEBHOOKS,
    Settings,
)
from .api.meta import OPENAPI_JSON
from .api.routes import add_routes
from .auth import KeyError_, Verifier, load_keys
from .clock import Clock, SystemClock
from .config import Config
from .delivery.scheduler import Scheduler
from .delivery.sender import Sender, make_ssl_context
from .logs import RateLimitedLog
from .metrics import Metrics
from .registry import Registry
from .retention import Pruner
from .store import PgStore, StaticRow, StorageUnavailable, Store, open_store
from .store.postgres.heartbeat import Heartbeat
from .store.postgres.listener import Listener
from .webhooks import WebhookService

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
    add_console_routes(app)
    app.cleanup_ctx.append(_daemon)
    return app


def static_rows(config: Config) -> list[StaticRow]:
    """The config file's static webhooks as the store syncs them."""
    return [
        StaticRow(
            w.key,
            w.session,
            w.url,
            w.events,
            w.secret,
            w.headers,
            w.description,
            w.filter_chats,
            w.ordering,
            w.rate_limit,
        )
        for w in config.webhooks
    ]


class ReloadError(Exception):
    """A reload could not be applied; the running config stays fully in force."""


async def reload(app: web.Application, new: Config) -> list[str]:
    """Apply a reloaded config (SIGHUP) atomically; returns what needs a restart.

    1. prepare everything the new config needs, with no side effect (keys, the verifier,
       the TLS context of `ca_file`); 2. commit the static webhooks; 3. swap everything
       in one synchronous block. A failure in 1 or 2 raises ReloadError and leaves the
       old config in force: verifier, delivery policy, scheduler limits, webhooks.
    """
    settings, scheduler = app[SETTINGS], app[SCHEDULER]
    old = settings.config
    restart = [
        f"{name} changed: restart wahookd to apply it"
        for name, before, after in (
            ("server.listen", old.server.listen, new.server.listen),
            ("server.max_body", old.server.max_body, new.server.max_body),
            ("server.pin_cpu", old.server.pin_cpu, new.server.pin_cpu),
            ("storage.path", old.storage.path, new.storage.path),
            ("storage.synchronous", old.storage.synchronous, new.storage.synchronous),
            ("storage.backend", old.storage.backend, new.storage.backend),
            ("storage.dsn", old.storage.dsn, new.storage.dsn),
            ("storage.dsn_file", old.storage.dsn_file, new.storage.dsn_file),
            ("cluster.lease", old.cluster.lease_s, new.cluster.lease_s),
        )
        if before != after
    ]
    try:
        verifier = Verifier(new.auth, load_keys(new.auth, old.storage.path, generate=False))
        ca_file = new.delivery.ca_file
        make_ssl_context(str(ca_file) if ca_file else None)  # a broken bundle fails here
    except (KeyError_, OSError, ValueError) as exc:
        raise ReloadError(f"cannot use the new config: {exc}") from None
    try:
        hooks = await app[WEBHOOKS].sync_statics(static_rows(new), now=app[CLOCK].time())
    except StorageUnavailable as exc:
        raise ReloadError(f"cannot store the static webhooks: {exc}") from None
    # from here on nothing awaits and nothing is expected to fail: the swap is one block
    settings.verifier = verifier
    app[SENDER].reconfigure(new.delivery)
    scheduler.config = new.delivery
    app[WEBHOOKS].adopt(hooks)
    app[PRUNER].keep_finished_s = new.storage.keep_finished_s
    storage = replace(old.storage, keep_finished_s=new.storage.keep_finished_s)
    settings.config = replace(new, server=old.server, storage=storage, cluster=old.cluster)
    return restart


async def _daemon(app: web.Application) -> AsyncIterator[None]:
    config, clock = app[CONFIG], app[CLOCK]
    keys = load_keys(config.auth, config.storage.path)
    store: Store = await open_store(config.storage, config.cluster)
    try:
        if isinstance(store, PgStore):
            # join the cluster (and take back the expired leases of nodes gone meanwhile:
            # the scheduler's first refill finds them due)
            await store.heartbeat(clock.time())
            log.info("node %s of the PostgreSQL cluster (lease %gs)", store.node_id, store.lease_s)
        recovered = await store.recover(clock.time())
        if recovered:
            log.info("returned %d interrupted attempts to the queue", recovered)
        registry = Registry(await store.sync_static_webhooks(static_rows(config), clock.time()))
        sender = Sender(config.delivery)
        await sender.start()
        metrics = Metrics(clock)
        webhooks = WebhookService(store, registry)
        scheduler = Scheduler(
            store,
            registry,
            sender,
            config.delivery,
            clock,
            on_outcome=metrics.observe_outcome,
            on_claimed=metrics.observe_claimed,
            webhooks=webhooks,
        )
        metrics.watch(store, scheduler)
        app[SETTINGS] = Settings(config, Verifier(config.auth, keys))
        app[STORE], app[REGISTRY], app[SENDER] = store, registry, sender
        app[SCHEDULER], app[METRICS], app[WEBHOOKS] = scheduler, metrics, webhooks
        runner = asyncio.create_task(scheduler.run(), name="wahookd-scheduler")
        pruner = Pruner(store, clock, config.storage.keep_finished_s)
        app[PRUNER] = pruner
        pruning = asyncio.create_task(pruner.run(), name="wahookd-pruner")
        beating = listening = None
        if isinstance(store, PgStore):
            # reclaimed leases and deliveries due that no node holds go to this scheduler
            heartbeat = Heartbeat(store, clock, scheduler.push)
            beating = asyncio.create_task(heartbeat.run(), name="wahookd-heartbeat")
            # the other nodes' webhook changes and due work, as they commit
            listener = Listener(
                store,
                on_webhook=webhooks.mirror,
                on_resync=webhooks.mirror_all,
                poll=heartbeat.poll,
                local_version=lambda: registry.version,
            )
            listening = asyncio.create_task(listener.run(), name="wahookd-listener")
        try:
            yield
        finally:
            for task in (pruning, listening):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            cancelled = await scheduler.drain(config.server.shutdown_grace_s)
            await runner
            if cancelled:
                log.warning("%d attempts did not finish within the shutdown grace", cancelled)
            if beating is not None:
                # only now: the leases of attempts finishing in the grace period were renewed
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
            # attempts cut short go back to the queue with their attempt number unchanged;
            # a node hands its leases back at once and leaves the cluster
            if isinstance(store, PgStore):
                await store.leave(clock.time())
            else:
                await store.recover(clock.time())
            await sender.close()
    finally:
        await store.close()
