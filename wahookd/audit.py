"""Audit lines: one log line for every change of a webhook's config or state.

They go to the `wahookd.audit` logger at info level, in text as
`audit <action> session=<id> webhook=<id> by=<who>: <details>` and in JSON with the same
fields. `by` is the token's `sub` (or `-` when it has none), or `wahookd` for changes the
daemon makes itself (a 410, an auto-disable) and `config` for a config reload. A line
never carries a secret, a token or a header value: callers pass only names and reasons.
"""

from __future__ import annotations

import logging

log = logging.getLogger("wahookd.audit")

SYSTEM = "wahookd"  # the daemon itself: a 410 answer, an auto-disable
CONFIG = "config"  # the config file: startup and SIGHUP reload


def audit(
    action: str,
    *,
    by: str | None,
    session: str | None = None,
    webhook: int | str | None = None,
    details: str = "",
) -> None:
    """Log one change: what was done, to which session and webhook, by whom, and why."""
    who = by if by else "-"
    where = f" session={session}" if session is not None else ""
    if webhook is not None:
        where += f" webhook={webhook}"
    log.info(
        "audit %s%s by=%s%s",
        action,
        where,
        who,
        f": {details}" if details else "",
        extra={
            "audit": action,
            "session": session,
            "webhook": webhook,
            "by": who,
            "details": details,
        },
    )
