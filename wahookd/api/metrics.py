"""GET /metrics: the Prometheus scrape (no token needed, like the probes)."""

from __future__ import annotations

from aiohttp import web

from ..metrics import CONTENT_TYPE
from .keys import METRICS


async def get_metrics(request: web.Request) -> web.Response:
    """The daemon's metrics in the Prometheus text format 0.0.4.

    Always 200 while the process runs: when the database does not answer, the queue
    gauges are left out and `wahookd_storage_up` is 0, so the scrape itself says so.
    """
    body = await request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
