"""The route table: one place that lists every route, used to register them and to
describe them (OpenAPI) and to test their permissions."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..auth import Role
from . import (
    activity,
    cluster,
    deliveries,
    health,
    ingest,
    meta,
    metrics,
    queue,
    webhook_collection,
    webhooks,
)
from .common import Handler


@dataclass(frozen=True)
class Route:
    """One HTTP route of the daemon."""

    method: str
    path: str
    handler: Handler

    @property
    def role(self) -> Role | None:
        """The least role the route needs; None for the unauthenticated probes."""
        role: Role | None = getattr(self.handler, "wahookd_role", None)
        return role


ROUTES: tuple[Route, ...] = (
    Route("PUT", "/api/webhook/config/{sessionId}", webhooks.put_config),
    Route("GET", "/api/webhook/config/{sessionId}", webhooks.get_config),
    Route("PATCH", "/api/webhook/config/{sessionId}", webhooks.patch_config),
    Route("DELETE", "/api/webhook/config/{sessionId}", webhooks.delete_config),
    Route("POST", "/api/webhook/test", webhooks.test_webhook),
    Route("GET", "/api/webhooks", webhook_collection.list_webhooks),
    Route("POST", "/api/webhooks", webhook_collection.create_webhook),
    Route("GET", "/api/webhooks/{id}", webhook_collection.get_webhook),
    Route("PATCH", "/api/webhooks/{id}", webhook_collection.patch_webhook),
    Route("DELETE", "/api/webhooks/{id}", webhook_collection.delete_webhook),
    Route("GET", "/api/webhook/queue", queue.get_queue),
    Route("DELETE", "/api/webhook/queue/{sessionId}", queue.delete_queue),
    Route("GET", "/api/webhook/stats/{sessionId}", queue.get_stats),
    Route("GET", "/api/webhook/sessions", queue.list_sessions),
    Route("GET", "/api/webhook/activity", activity.get_activity),
    Route("GET", "/api/webhook/deliveries/{sessionId}", deliveries.list_deliveries),
    Route("GET", "/api/webhook/deliveries/{sessionId}/{deliveryId}", deliveries.get_delivery),
    Route(
        "POST",
        "/api/webhook/deliveries/{sessionId}/{deliveryId}/retry",
        deliveries.retry_delivery,
    ),
    Route("POST", "/api/webhook/queue/{sessionId}/retry-failed", deliveries.retry_failed),
    Route("POST", "/api/events", ingest.post_events),
    Route("GET", "/api/cluster", cluster.get_cluster),
    Route("GET", "/api/openapi.json", meta.get_openapi),
    Route("GET", "/healthz", health.healthz),
    Route("GET", "/readyz", health.readyz),
    Route("GET", "/metrics", metrics.get_metrics),
)


def add_routes(app: web.Application) -> None:
    """Register every route of the table."""
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
