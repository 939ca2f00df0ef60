"""The overview's part of the OpenAPI document: sessions and recent activity.

`openapi/__init__.py` merges these into the document it builds from the route table.
"""

from __future__ import annotations

from typing import Final

from ..activity import DEFAULT_MINUTES, MAX_MINUTES
from .schema import TIMESTAMP_PATTERN, Operation, Schema, _answer, _count, _error, _object, ref

_MINUTE: Final = {
    "type": "string",
    "format": "date-time",
    "pattern": TIMESTAMP_PATTERN,
    "description": "The start of a minute, UTC.",
}


def schemas() -> dict[str, Schema]:
    """The sessions overview's component schemas."""
    return {
        "SessionWebhook": _object(
            {
                "kind": {
                    "type": "string",
                    "enum": ["session", "extra", "static"],
                    "description": (
                        "The session's default webhook, one of its extra ones "
                        "(/api/webhooks), or a `[[webhook]]` entry."
                    ),
                },
                "url": {"type": "string"},
                "isActive": {"type": "boolean"},
            }
        ),
        "SessionOverview": _object(
            {
                "sessionId": ref("SessionId"),
                "webhooks": {
                    "type": "array",
                    "items": ref("SessionWebhook"),
                    "description": "Every webhook serving the session, active or not.",
                },
                "queue": ref("QueueCounts"),
                "stats": ref("Stats"),
            }
        ),
        "SessionsResponse": _object(
            {
                "success": {"const": True},
                "sessions": {"type": "array", "items": ref("SessionOverview")},
            }
        ),
        "ActivityMinute": _object(
            {
                "at": _MINUTE,
                "delivered": _count("Deliveries that ended delivered in this minute."),
                "failed": _count("Deliveries that ended failed in this minute."),
            }
        ),
        "ActivityResponse": _object(
            {
                "success": {"const": True},
                "since": _MINUTE,
                "minutes": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_MINUTES,
                    "items": ref("ActivityMinute"),
                    "description": "Each minute of the window, oldest first, the current last.",
                },
                "delivered": _count("Delivered over the window."),
                "failed": _count("Failed over the window."),
            }
        ),
    }


OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("GET", "/api/webhook/sessions"): {
        "operationId": "listSessions",
        "tags": ["queue"],
        "summary": "Each session with a webhook or queued deliveries: webhooks, queue, stats",
        "description": (
            "The sessions that have a webhook of their own, are named by a static webhook, or "
            "have queued deliveries, sorted by id; a scoped token sees only its sessions."
        ),
        "responses": {
            "200": _answer("The sessions.", ref("SessionsResponse")),
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/api/webhook/activity"): {
        "operationId": "getActivity",
        "tags": ["queue"],
        "summary": "Deliveries finished per minute over the last minutes (delivered, failed)",
        "description": (
            "Counted from the finish time of each delivery, one index range scan: cheap "
            "enough to poll. A scoped token counts only its sessions."
        ),
        "parameters": [
            {
                "name": "minutes",
                "in": "query",
                "description": "How many minutes back, the current one included.",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_MINUTES,
                    "default": DEFAULT_MINUTES,
                },
            },
            {
                "name": "sessionId",
                "in": "query",
                "required": False,
                "description": "Count only this session's deliveries.",
                "schema": ref("SessionId"),
            },
        ],
        "responses": {
            "200": _answer("Counts per minute.", ref("ActivityResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "503": _error("Unavailable"),
        },
    },
}

__all__ = ["OPERATIONS", "schemas"]
