"""GET /ui/: the web console's static files (SPEC §9), read from the package.

The files hold no secret (the page asks the JSON API for everything, with the operator's
token), so they need none. They are read through importlib.resources, which works from
the shiv zipapp too, and kept in memory once read.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Final

from aiohttp import web

from .common import ApiError

PACKAGE: Final = "wahookd.ui"
CONTENT_TYPES: Final = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}
# nothing but this origin, no inline script or style, no framing, no form posts elsewhere
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # small files, and an upgraded daemon must not run yesterday's page
    "Cache-Control": "no-cache",
}
_NAME_RE: Final = re.compile(r"(?:[a-z0-9_-]+/)?[a-z0-9_-]+\.(html|js|css|svg)")


@functools.cache
def _read(name: str) -> bytes | None:
    """A file of the console, None when there is no such file."""
    path = resources.files(PACKAGE)
    for part in name.split("/"):
        path = path.joinpath(part)
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


async def ui_redirect(request: web.Request) -> web.StreamResponse:
    """GET /ui: to /ui/ (relative module paths resolve against it)."""
    raise web.HTTPPermanentRedirect("/ui/")


async def ui_file(request: web.Request) -> web.Response:
    """GET /ui/{name}: one static file of the console; /ui/ is index.html."""
    name = request.match_info.get("name") or "index.html"
    match = _NAME_RE.fullmatch(name)
    body = _read(name) if match else None
    if match is None or body is None:
        raise ApiError(404, f"no file {name!r} in the console")
    return web.Response(
        body=body, headers={**HEADERS, "Content-Type": CONTENT_TYPES[match.group(1)]}
    )


def add_console_routes(app: web.Application) -> None:
    """Serve the console at /ui/ (outside the API's route table: no token, not in OpenAPI)."""
    app.router.add_get("/ui", ui_redirect)
    app.router.add_get("/ui/", ui_file)
    app.router.add_get("/ui/{name:.+}", ui_file)
