"""The webhook collection's part of the OpenAPI document (SPEC §8): W, its writes, and
the operations of /api/webhooks.

`openapi/__init__.py` merges these into the document it builds from the route table.
"""

from __future__ import annotations

from typing import Any, Final

from ...chats import CHAT_KINDS
from ...delivery.ordering import ORDERINGS
from ...rules import MAX_DESCRIPTION_CHARS, MAX_RATE_LIMIT, WEBHOOK_ID_RE
from ...store import MAX_EXTRA_WEBHOOKS
from .schema import (
    MASKED_SECRET_PATTERN,
    Operation,
    Schema,
    _answer,
    _error,
    _nullable,
    _object,
    ref,
)

_BODY_ERRORS: Final = {"413": _error("PayloadTooLarge"), "415": _error("UnsupportedMediaType")}
_ID_PATH: Final = [{"$ref": "#/components/parameters/WebhookIdPath"}]


def _writable(**overrides: Schema) -> dict[str, Schema]:
    fields: dict[str, Schema] = {
        "sessionId": ref("SessionId"),
        "url": ref("WebhookUrl"),
        "events": ref("WebhookEvents"),
        "secret": _nullable(ref("WebhookSecret")),
        "isActive": {"type": "boolean", "default": True},
        "headers": _nullable(ref("WebhookHeaders")),
        "description": _nullable(ref("WebhookDescription")),
        "filter": _nullable(ref("WebhookFilter")),
        "ordering": ref("WebhookOrdering"),
        "rateLimit": _nullable(ref("WebhookRateLimit")),
    }
    fields.update(overrides)
    return fields


def schemas() -> dict[str, Schema]:
    """The collection's component schemas."""
    optional = ("secret", "isActive", "headers", "description", "filter", "ordering", "rateLimit")
    return {
        "WebhookId": {
            "type": "string",
            "pattern": f"^{WEBHOOK_ID_RE.pattern}$",
            "description": "A webhook's public id; it never changes.",
            "examples": ["wh_3f9a1c0d5e7b2a46"],
        },
        "WebhookDescription": {
            "type": "string",
            "maxLength": MAX_DESCRIPTION_CHARS,
            "pattern": r"^[^\x00-\x08\x0a-\x1f\x7f]*$",
            "description": "A note for people; no control characters but tab.",
        },
        "WebhookFilter": _object(
            {
                "chats": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string", "enum": list(CHAT_KINDS)},
                    "description": (
                        "The kinds of chat wanted, from the chat address's suffix: `@g.us` "
                        "group, `status@broadcast` status, `@newsletter` channel, other "
                        "`@broadcast` broadcast, anything else direct. Events without a chat "
                        "(`session.*`) always pass."
                    ),
                }
            },
            description="Which events the webhook wants besides `events`; absent: every chat.",
        ),
        "WebhookOrdering": {
            "type": "string",
            "enum": list(ORDERINGS),
            "default": "none",
            "description": (
                "`chat`: the deliveries of one chat are attempted one at a time, in ingest "
                "order (events without a chat: per session); `session`: the same per session."
            ),
        },
        "WebhookRateLimit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_RATE_LIMIT,
            "description": "At most this many attempts per second (bursts as large); null: none.",
        },
        "WebhookHealth": _object(
            {
                "state": {"type": "string", "enum": ["healthy", "failing", "disabled"]},
                "failingSince": _nullable(ref("Timestamp")),
                "lastStatus": _nullable({"type": "integer"}),
                "lastAttemptAt": _nullable(ref("Timestamp")),
            },
            description=(
                "`disabled`: inactive; `failing`: attempts have failed since `failingSince` "
                "with nothing delivered; `lastStatus` is null when the last attempt got no "
                "answer (or none was made)."
            ),
        ),
        "Webhook": _object(
            {
                "id": ref("WebhookId"),
                "sessionId": {"type": "string", "description": 'A session id, or "*" (static).'},
                "url": {"type": "string"},
                "events": ref("WebhookEvents"),
                "secret": _nullable({"type": "string", "pattern": MASKED_SECRET_PATTERN}),
                "isActive": {"type": "boolean"},
                "headers": ref("WebhookHeaders"),
                "description": {"type": "string"},
                "filter": ref("WebhookFilter"),
                "ordering": ref("WebhookOrdering"),
                "rateLimit": _nullable({"type": "integer", "minimum": 1}),
                "default": {
                    "type": "boolean",
                    "description": "The session's default webhook (/api/webhook/config).",
                },
                "static": {
                    "type": "boolean",
                    "description": "From the config file's `[[webhook]]`: read-only here.",
                },
                "createdAt": ref("Timestamp"),
                "updatedAt": ref("Timestamp"),
                "health": ref("WebhookHealth"),
            },
            "headers",
            "description",
            "filter",
            description=(
                "A webhook, its secret masked; `headers`, `description` and `filter` only "
                "when set. A static webhook's URL query and header values are hidden."
            ),
        ),
        "WebhookCreate": _object(
            _writable(),
            *optional,
            description=(
                f"A new webhook for the session, besides its default one (at most "
                f"{MAX_EXTRA_WEBHOOKS})."
            ),
            examples=[
                {
                    "sessionId": "my-session",
                    "url": "https://groups.example.com/hook",
                    "events": ["message.received"],
                    "secret": "another_secret",
                    "filter": {"chats": ["group"]},
                }
            ],
        ),
        "WebhookPatch": _object(
            _writable(isActive={"type": "boolean"}),
            "sessionId",
            "url",
            "events",
            *optional,
            description=(
                "The fields to change; omitted ones keep their value. `secret: null` removes "
                "the secret (a new one keeps the previous one signing for 24 h; the masked "
                "form of the current one keeps it); `sessionId`, if given, must be the "
                "webhook's own."
            ),
            examples=[{"isActive": False}],
        ),
        "WebhookResponse": _object({"success": {"const": True}, "webhook": ref("Webhook")}),
        "WebhookListResponse": _object(
            {"success": {"const": True}, "webhooks": {"type": "array", "items": ref("Webhook")}}
        ),
        "DeleteWebhookResponse": _object(
            {"success": {"const": True}, "message": {"const": "Webhook deleted successfully"}}
        ),
    }


PARAMETERS: Final[dict[str, Any]] = {
    "WebhookIdPath": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "A webhook id (`wh_...`); anything else than the pattern is 400.",
        "schema": ref("WebhookId"),
    },
}

_BOOLEAN_QUERY: Final = {"type": "string", "enum": ["true", "false"]}

OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("GET", "/api/webhooks"): {
        "operationId": "listWebhooks",
        "tags": ["webhook"],
        "summary": "Every webhook the token may see: default, extra and static ones",
        "description": (
            "Without `sessionId`, every session's webhooks (a scoped token sees only its "
            "sessions', and the static ones serving every session); `failing=true` lists "
            "only the failing ones (the cross-session view of what needs attention)."
        ),
        "parameters": [
            {
                "name": "sessionId",
                "in": "query",
                "description": "Only the webhooks serving this session.",
                "schema": ref("SessionId"),
            },
            {"name": "active", "in": "query", "schema": _BOOLEAN_QUERY},
            {"name": "failing", "in": "query", "schema": _BOOLEAN_QUERY},
        ],
        "responses": {
            "200": _answer("The webhooks.", ref("WebhookListResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "503": _error("Unavailable"),
        },
    },
    ("POST", "/api/webhooks"): {
        "operationId": "createWebhook",
        "tags": ["webhook"],
        "summary": "Add a webhook to a session",
        "description": (
            f"409 when the session has {MAX_EXTRA_WEBHOOKS} webhooks besides its default "
            "one already."
        ),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("WebhookCreate")}},
        },
        "responses": {
            "201": _answer("The new webhook.", ref("WebhookResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "409": _error("Conflict"),
            **_BODY_ERRORS,
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/api/webhooks/{id}"): {
        "operationId": "getWebhook",
        "tags": ["webhook"],
        "summary": "One webhook, secret masked",
        "parameters": _ID_PATH,
        "responses": {
            "200": _answer("The webhook.", ref("WebhookResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            "503": _error("Unavailable"),
        },
    },
    ("PATCH", "/api/webhooks/{id}"): {
        "operationId": "patchWebhook",
        "tags": ["webhook"],
        "summary": "Change some fields of a webhook; 409 for a static one",
        "parameters": _ID_PATH,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref("WebhookPatch")}},
        },
        "responses": {
            "200": _answer("The webhook as changed.", ref("WebhookResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            "409": _error("Conflict"),
            **_BODY_ERRORS,
            "503": _error("Unavailable"),
        },
    },
    ("DELETE", "/api/webhooks/{id}"): {
        "operationId": "deleteWebhook",
        "tags": ["webhook"],
        "summary": "Remove a webhook and drop its queued deliveries; 409 for a static one",
        "parameters": _ID_PATH,
        "responses": {
            "200": _answer("Removed.", ref("DeleteWebhookResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            "409": _error("Conflict"),
            "503": _error("Unavailable"),
        },
    },
}

__all__ = ["OPERATIONS", "PARAMETERS", "schemas"]
