"""Plain-text rendering of the operator commands' answers: aligned columns, no colours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NONE = "-"
ERROR_CHARS = 60  # a long attempt error would push every other row's columns apart


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns separated by two spaces; numbers aligned right, text left; no trailing blanks."""
    right = [
        bool(rows) and all(isinstance(row[i], int) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(headers))
    ]
    cells = [[NONE if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str], align: Sequence[bool]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers, [False] * len(headers)), *(line(row, right) for row in cells)])


def when(timestamp: str | None) -> str:
    """An API timestamp (2024-01-01T12:00:00.000Z) to the second: 2024-01-01T12:00:00Z."""
    if not timestamp:
        return NONE
    return timestamp.split(".")[0] + "Z" if "." in timestamp else timestamp


def clip(text: str, limit: int = ERROR_CHARS) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def queue_line(queue: dict[str, int]) -> str:
    """pending, processing, retrying and failed counts in one line."""
    order = ("pending", "processing", "retrying", "failed")
    return ", ".join(f"{queue.get(state, 0)} {state}" for state in order)


def status_text(
    where: str,
    health: str,
    ready: str,
    queue: dict[str, int] | None,
    sessions: list[dict[str, Any]] | None,
) -> str:
    """The `wahookd status` report: health, queue totals, one row per session."""
    out = [f"wahookd at {where}: {health}, {ready}"]
    if queue is not None:
        out.append(f"queue: {queue_line(queue)}")
    if sessions is not None:
        out.append("")
        if not sessions:
            out.append("no sessions with a webhook or queued deliveries")
        else:
            out.append(
                table(
                    (
                        "SESSION",
                        "WEBHOOK",
                        "ACTIVE",
                        "PENDING",
                        "PROCESSING",
                        "RETRYING",
                        "FAILED",
                        "DELIVERED",
                        "AVERAGE RESPONSE",
                        "LAST DELIVERY",
                    ),
                    [_session_row(s) for s in sessions],
                )
            )
    return "\n".join(out)


def _session_row(session: dict[str, Any]) -> list[object]:
    hooks = session["webhooks"]
    if not hooks:
        webhook, active = NONE, NONE
    else:
        first = hooks[0]
        webhook = ("static " if first["kind"] == "static" else "") + first["url"]
        if len(hooks) > 1:
            webhook += f" (+{len(hooks) - 1})"
        active = "/".join("yes" if h["isActive"] else "no" for h in hooks)
    queue, stats = session["queue"], session["stats"]
    return [
        session["sessionId"],
        webhook,
        active,
        queue["pending"],
        queue["processing"],
        queue["retrying"],
        queue["failed"],
        stats["successful"],
        stats["averageResponseTime"],
        when(stats["lastDelivery"]),
    ]


def deliveries_text(deliveries: list[dict[str, Any]], more: bool) -> str:
    """The `wahookd deliveries` table, newest first."""
    if not deliveries:
        return "no deliveries"
    rows: list[list[object]] = []
    for d in deliveries:
        rows.append(
            [
                d["id"],
                d["event"],
                d["status"],
                d["attemptCount"],
                when(d["createdAt"]),
                when(d["nextAttemptAt"] or d["finishedAt"]),
                last_result(d["lastStatusCode"], d["lastError"]),
            ]
        )
    text = table(
        ("ID", "EVENT", "STATUS", "ATTEMPTS", "CREATED", "NEXT/FINISHED", "LAST RESULT"), rows
    )
    if more:
        text += "\n(older deliveries not shown: raise --limit, up to 500, or use --json)"
    return text


def last_result(status_code: int | None, error: str | None) -> str:
    """One format for LAST RESULT: `HTTP 200`, `HTTP 503`, `HTTP 503; <error>`, `<error>`, `-`.

    A status code always reads `HTTP <code>`; an error that is not just that code (no answer:
    a timeout, a refused address; or a reason such as a removed static webhook) follows it.
    """
    parts = [] if status_code is None else [f"HTTP {status_code}"]
    if error and error not in parts:
        parts.append(error)
    return clip("; ".join(parts)) if parts else NONE


def test_webhook_text(answer: dict[str, Any]) -> str:
    """The `wahookd test-webhook` report: status and time, then the body or the error."""
    status = answer.get("statusCode")
    head = f"{status if status is not None else 'no answer'} in {answer['responseTime']}"
    lines = [("ok: " if answer["success"] else "failed: ") + head]
    if answer.get("error"):
        lines.append(f"error: {answer['error']}")
    if answer.get("responseBody"):
        lines.append(answer["responseBody"])
    return "\n".join(lines)


def webhooks_text(webhooks: list[dict[str, Any]]) -> str:
    """One row per webhook: id, session, kind, state, filter, ordering, rate, URL."""
    if not webhooks:
        return "no webhooks"
    rows = []
    for w in webhooks:
        kind = "default" if w["default"] else "static" if w["static"] else "extra"
        health = w["health"]
        state = health["state"]
        if state == "failing":
            state += f" since {when(health['failingSince'])}"
        chats = ",".join(w["filter"]["chats"]) if "filter" in w else "all"
        rate = f"{w['rateLimit']}/s" if w["rateLimit"] is not None else NONE
        rows.append(
            [
                w["id"],
                w["sessionId"],
                kind,
                state,
                last_result(health["lastStatus"], None if health["lastStatus"] else "no answer")
                if health["lastAttemptAt"]
                else NONE,
                chats,
                w["ordering"],
                rate,
                clip(w["url"]),
                clip(w.get("description", ""), 40) or NONE,
            ]
        )
    headers = ["ID", "SESSION", "KIND", "HEALTH", "LAST", "CHATS", "ORDER", "RATE", "URL", "NOTE"]
    return table(headers, rows)
