"""Liveness and readiness probes (no token needed)."""

from __future__ import annotations

import logging

from aiohttp import web

from .common import error_response, ok
from .keys import SCHEDULER, STORE

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the process runs."""
    return ok({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 when the database answers and the scheduler runs."""
    try:
        await request.app[STORE].ping()
    except Exception as exc:
        log.warning("readiness: database does not answer: %s", exc)
        return error_response(503, "database does not answer", {"Retry-After": "5"})
    if not request.app[SCHEDULER].running:
        return error_response(503, "scheduler is not running", {"Retry-After": "5"})
    return ok({"status": "ready"})
