"""The OpenAPI 3.1 document describing every route (served by api/meta.py).

The document is Python data. `paths` is built by walking the route table (`routes.ROUTES`):
every route must have an entry in `OPERATIONS`, keyed by (method, path), and every entry
must name a route, else building the document fails loudly. Security (the bearer JWT) and
the 401/500 answers are added from the route itself: a route that needs a role is
authenticated, the probes are not. Limits and patterns are taken from the modules that
enforce them, so they cannot drift apart.

No import cycle: this package reads the route table, and the route table's handler for
`GET /api/openapi.json` only serves the bytes app.py stores from `document_bytes()`.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Final

from ... import __version__
from ...jsontext import dumps_compact
from ..routes import ROUTES
from . import cluster, deliveries, sessions, webhooks
from .components import _COMPONENTS_EXTRA, _responses, _schemas
from .operations import OPERATIONS as _BASE_OPERATIONS
from .schema import URL_PATTERN, Operation, _error

__all__ = ["OPERATIONS", "URL_PATTERN", "UndocumentedRoute", "document", "document_bytes"]

# One entry per route of routes.ROUTES; `security`, `x-wahookd-role`, 401 and 500 are added
# from the route when the document is built.
OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    **_BASE_OPERATIONS,
    **deliveries.OPERATIONS,
    **sessions.OPERATIONS,
    **webhooks.OPERATIONS,
    **cluster.OPERATIONS,
}


class UndocumentedRoute(RuntimeError):
    """The route table and OPERATIONS disagree."""


def _operation(method: str, path: str, role: str | None) -> Operation:
    try:
        op = copy.deepcopy(OPERATIONS[(method, path)])
    except KeyError:
        raise UndocumentedRoute(
            f"route {method} {path} has no entry in wahookd.api.openapi.OPERATIONS"
        ) from None
    responses: dict[str, Any] = op["responses"]
    if role is None:
        op["security"] = []
    else:
        op["security"] = [{"bearerAuth": []}]
        op["x-wahookd-role"] = role
        op["description"] = (
            op.get("description", "") + f"\n\nNeeds role `{role}` or higher."
        ).strip()
        responses["401"] = _error("Unauthorized")
    responses["500"] = _error("Internal")
    op["responses"] = dict(sorted(responses.items()))
    return op


@functools.cache
def _built() -> dict[str, Any]:
    paths: dict[str, dict[str, Operation]] = {}
    for route in ROUTES:
        item = paths.setdefault(route.path, {})
        item[route.method.lower()] = _operation(route.method, route.path, route.role)
    described = {(r.method, r.path) for r in ROUTES}
    extra = sorted(set(OPERATIONS) - described)
    if extra:
        raise UndocumentedRoute(f"OPERATIONS describes routes that do not exist: {extra}")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wahookd",
            "version": __version__,
            "summary": "Durable, signed webhook delivery for a WhatsApp HTTP API gateway",
            "description": (
                "Every `/api` route needs `Authorization: Bearer <JWT>`; the probes need none. "
                'Errors are always `{"success": false, "error": {"code", "message"}}`. '
                "A method a path does not offer is 405 `method_not_allowed` (with `Allow`); "
                "an unknown path is 404 `not_found`."
            ),
        },
        "tags": [
            {
                "name": "webhook",
                "description": "A session's default webhook and its extra ones; static ones.",
            },
            {"name": "queue", "description": "Queued deliveries and statistics."},
            {"name": "deliveries", "description": "The delivery log; retrying failed ones."},
            {"name": "events", "description": "Event ingest."},
            {"name": "meta", "description": "This API's description."},
            {"name": "probes", "description": "Liveness, readiness and metrics (no token)."},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": _responses(),
            **_COMPONENTS_EXTRA,
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_built())


@functools.cache
def document_bytes() -> bytes:
    """The document as served: compact UTF-8 JSON, built once."""
    return dumps_compact(_built()).encode()
