"""GET /api/openapi.json: the OpenAPI 3.1 document describing every route."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__
from .common import ok, requires


def document() -> dict[str, Any]:
    """The OpenAPI document (filled in by the spec module)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "wahookd", "version": __version__},
        "paths": {},
    }


@requires("viewer")
async def get_openapi(request: web.Request) -> web.Response:
    """Serve the OpenAPI document."""
    return ok(document())
