"""GET /api/openapi.json: the API's own description.

app.py stores the document's bytes (built by the `openapi` package from the route table)
under OPENAPI_JSON, so this handler, listed in that table, needs no import of the builder.
"""

from __future__ import annotations

from aiohttp import web

from .common import requires

OPENAPI_JSON = web.AppKey("wahookd_openapi_json", bytes)


@requires("viewer")
async def get_openapi(request: web.Request) -> web.Response:
    """Serve the OpenAPI document."""
    body = request.app[OPENAPI_JSON]
    return web.Response(body=body, content_type="application/json", charset="utf-8")
