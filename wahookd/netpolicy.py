"""Which webhook URLs wahookd may send to.

For now this checks the URL's form and scheme; resolving host names and
refusing private, loopback and link-local targets at connect time is the
network policy of SPEC §5 and lives here too once built.
"""

from __future__ import annotations

from urllib.parse import urlsplit


class RefusedTarget(Exception):
    """The target URL is not allowed; the message says why."""


def check_url(url: str, *, require_https: bool) -> None:
    """Raise RefusedTarget unless url is an absolute http(s) URL wahookd may POST to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedTarget(f"invalid URL: {exc}") from None
    allowed = ("https",) if require_https else ("https", "http")
    if parts.scheme not in allowed:
        need = "https" if require_https else "http or https"
        raise RefusedTarget(f"URL scheme must be {need}, got '{parts.scheme or '(none)'}'")
    if not parts.hostname:
        raise RefusedTarget("URL has no host")
    if port == 0:
        raise RefusedTarget("URL port must be 1-65535")
    if parts.username is not None or parts.password is not None:
        raise RefusedTarget("URL must not carry credentials; use webhook headers instead")
