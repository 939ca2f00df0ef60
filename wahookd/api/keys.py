"""The daemon's parts as typed application keys: each handler takes only what it uses.

app.py stores them at startup. A reload swaps the config in force and the token verifier,
so those two live in one mutable `Settings`; every other part stays the same object.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..auth import Verifier
from ..clock import Clock
from ..config import Config
from ..delivery.scheduler import Scheduler
from ..delivery.sender import Sender
from ..logs import RateLimitedLog
from ..metrics import Metrics
from ..registry import Registry
from ..store import Store
from ..webhooks import WebhookService


@dataclass
class Settings:
    """What a reload replaces: the config in force and the verifier built from it."""

    config: Config
    verifier: Verifier


SETTINGS = web.AppKey("wahookd_settings", Settings)
CLOCK = web.AppKey("wahookd_clock", Clock)
STORE = web.AppKey("wahookd_store", Store)
REGISTRY = web.AppKey("wahookd_registry", Registry)
SCHEDULER = web.AppKey("wahookd_scheduler", Scheduler)
SENDER = web.AppKey("wahookd_sender", Sender)
METRICS = web.AppKey("wahookd_metrics", Metrics)
# the one owner of webhook changes (wahookd/webhooks.py)
WEBHOOKS = web.AppKey("wahookd_webhooks", WebhookService)
# one warning per refusal reason every 10 s (built by app.py with the app's clock)
REFUSALS = web.AppKey("wahookd_refusals", RateLimitedLog)
