"""The sessions overview's part of the OpenAPI document: its schemas and operation.

`openapi/__init__.py` merges these into the document it builds from the route table.
"""

from __future__ import annotations

from typing import Final

from .schema import Operation, Schema, _answer, _error, _object, ref


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
}

__all__ = ["OPERATIONS", "schemas"]
