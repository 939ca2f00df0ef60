"""The operations of the webhook, queue, ingest, meta and probe routes (the delivery log's
and the sessions overview's are in their own modules)."""

from __future__ import annotations

from typing import Final

from .schema import METRICS_MEDIA_TYPE, Operation, _answer, _error, _json, ref

_SESSION_PATH: Final = [{"$ref": "#/components/parameters/SessionIdPath"}]
_BODY_ERRORS: Final = {"413": _error("PayloadTooLarge"), "415": _error("UnsupportedMediaType")}

# One entry per route of routes.ROUTES; `security`, `x-wahookd-role`, 401 and 500 are added
# from the route when the document is built.
OPERATIONS: Final[dict[tuple[str, str], Operation]] = {
    ("PUT", "/api/webhook/config/{sessionId}"): {
        "operationId": "putWebhookConfig",
        "tags": ["webhook"],
        "summary": "Create or replace the session's webhook",
        "parameters": _SESSION_PATH,
        "requestBody": {"required": True, "content": _json(ref("WebhookConfigRequest"))},
        "responses": {
            "200": _answer("The stored configuration.", ref("PutWebhookConfigResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            **_BODY_ERRORS,
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/api/webhook/config/{sessionId}"): {
        "operationId": "getWebhookConfig",
        "tags": ["webhook"],
        "summary": "The session's webhook, secret masked",
        "parameters": _SESSION_PATH,
        "responses": {
            "200": _answer("The configuration.", ref("GetWebhookConfigResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
        },
    },
    ("PATCH", "/api/webhook/config/{sessionId}"): {
        "operationId": "patchWebhookConfig",
        "tags": ["webhook"],
        "summary": "Change some fields of the session's webhook, e.g. enable or disable it",
        "parameters": _SESSION_PATH,
        "requestBody": {"required": True, "content": _json(ref("WebhookConfigPatch"))},
        "responses": {
            "200": _answer("The configuration, secret masked.", ref("GetWebhookConfigResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            **_BODY_ERRORS,
            "503": _error("Unavailable"),
        },
    },
    ("DELETE", "/api/webhook/config/{sessionId}"): {
        "operationId": "deleteWebhookConfig",
        "tags": ["webhook"],
        "summary": "Remove the session's webhook and drop its queued deliveries",
        "parameters": _SESSION_PATH,
        "responses": {
            "200": _answer("Removed.", ref("DeleteWebhookConfigResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            "503": _error("Unavailable"),
        },
    },
    ("POST", "/api/webhook/test"): {
        "operationId": "testWebhook",
        "tags": ["webhook"],
        "summary": "Send one signed POST now (no retry) and report what came back",
        "description": (
            "A URL refused by validation is 400; a network failure (including a host name "
            "that resolves into refused space) is 200 with `success: false` and `error`."
        ),
        "requestBody": {"required": True, "content": _json(ref("TestWebhookRequest"))},
        "responses": {
            "200": _answer("The attempt's outcome.", ref("TestWebhookResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            **_BODY_ERRORS,
        },
    },
    ("GET", "/api/webhook/queue"): {
        "operationId": "getQueue",
        "tags": ["queue"],
        "summary": "Queued deliveries by state",
        "description": "Over every session the token covers, or the one of `sessionId`.",
        "parameters": [{"$ref": "#/components/parameters/SessionIdQuery"}],
        "responses": {
            "200": _answer("Counts by state.", ref("QueueResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "503": _error("Unavailable"),
        },
    },
    ("DELETE", "/api/webhook/queue/{sessionId}"): {
        "operationId": "clearQueue",
        "tags": ["queue"],
        "summary": "Remove the session's queued deliveries (never those in flight)",
        "parameters": [*_SESSION_PATH, {"$ref": "#/components/parameters/QueueStatus"}],
        "responses": {
            "200": _answer(
                "How many were removed, by state (0 for states not asked for).",
                ref("ClearQueueResponse"),
            ),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/api/webhook/stats/{sessionId}"): {
        "operationId": "getStats",
        "tags": ["queue"],
        "summary": "All-time delivery statistics of the session",
        "parameters": _SESSION_PATH,
        "responses": {
            "200": _answer("The statistics.", ref("StatsResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            "404": _error("NotFound"),
            "503": _error("Unavailable"),
        },
    },
    ("POST", "/api/events"): {
        "operationId": "postEvents",
        "tags": ["events"],
        "summary": "Ingest one event or a batch; 202 once committed to disk",
        "description": (
            "Each event fans out to the matching webhooks (one delivery each). A batch with "
            "any invalid event is rejected whole."
        ),
        "requestBody": {"required": True, "content": _json(ref("IngestRequest"))},
        "responses": {
            "202": _answer("Committed.", ref("IngestResponse")),
            "400": _error("BadRequest"),
            "403": _error("Forbidden"),
            **_BODY_ERRORS,
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/api/openapi.json"): {
        "operationId": "getOpenApi",
        "tags": ["meta"],
        "summary": "This document",
        "responses": {"200": _answer("The OpenAPI 3.1 document.", ref("OpenApiDocument"))},
    },
    ("GET", "/healthz"): {
        "operationId": "healthz",
        "tags": ["probes"],
        "summary": "Liveness: 200 while the process runs",
        "responses": {"200": _answer("Alive.", ref("Health"))},
    },
    ("GET", "/readyz"): {
        "operationId": "readyz",
        "tags": ["probes"],
        "summary": "Readiness: the database answers and the scheduler runs",
        "responses": {
            "200": _answer("Ready.", ref("Ready")),
            "503": _error("Unavailable"),
        },
    },
    ("GET", "/metrics"): {
        "operationId": "metrics",
        "tags": ["probes"],
        "summary": "Prometheus metrics (text exposition format 0.0.4)",
        "description": (
            "Always 200 while the process runs. When the database does not answer, the queue "
            "gauges are left out and `wahookd_storage_up` is 0. The README lists the metrics."
        ),
        "responses": {
            "200": {
                "description": "The metrics; no series carries a session id.",
                "content": {METRICS_MEDIA_TYPE: {"schema": {"type": "string"}}},
            }
        },
    },
}
