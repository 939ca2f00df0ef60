"""Input limits: every string the API takes is bounded, and so are batches, bodies and nesting.

Each limit is tested at its edge: the largest allowed value is accepted and one more is a
400 (413 for the body) in the error envelope, naming the field. A walk over the OpenAPI
document checks that every string it accepts declares a bound, so a new field without one
fails here.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import Daemon, make_config, running_daemon

from wahookd.api import openapi
from wahookd.auth import MAX_TOKEN_BYTES
from wahookd.events import MAX_BATCH, MAX_FIELD_CHARS, MAX_FIELD_CHARS_BY_NAME
from wahookd.jsontext import MAX_JSON_DEPTH
from wahookd.rules import (
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    MAX_SECRET_CHARS,
    MAX_URL_CHARS,
)

MAX_BODY = 128 * 1024  # above a largest qrCode and a 1001-event batch, below 1 MiB
EVENT = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}
HOOK = {"url": "https://hooks.example/in", "events": ["*"]}


@pytest.fixture
async def d(tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon with a 128 KiB body limit (the default 1 MiB is tested in test_api.py)."""
    config = make_config(tmp_path)
    config = dataclasses.replace(
        config, server=dataclasses.replace(config.server, max_body=MAX_BODY)
    )
    async with running_daemon(config) as daemon:
        yield daemon


async def send(d: Daemon, method: str, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    """A JSON call whose answer must be JSON; returns (status, answer)."""
    resp = await d.client.request(method, path, json=body, headers=d.headers())
    assert resp.content_type == "application/json", (method, path, resp.status)
    return resp.status, await resp.json()


async def raw(
    d: Daemon, method: str, path: str, data: bytes | AsyncIterator[bytes]
) -> tuple[int, dict[str, Any]]:
    """Send bytes as application/json; returns (status, answer)."""
    headers = {**d.headers(), "Content-Type": "application/json"}
    payload: Any = io.BytesIO(data) if isinstance(data, bytes) else data
    resp = await d.client.request(method, path, data=payload, headers=headers)
    assert resp.content_type == "application/json", (method, path, resp.status)
    return resp.status, await resp.json()


def refused(answer: tuple[int, dict[str, Any]], field: str, status: int = 400) -> None:
    """The answer is the error envelope for `field`."""
    code, body = answer
    assert code == status, body
    assert body["success"] is False
    assert body["error"]["code"] == {400: "validation_error", 413: "payload_too_large"}[status]
    assert body["error"]["message"].startswith(field), body["error"]["message"]


def url_of_length(length: int) -> str:
    head = "https://hooks.example/"
    return head + "p" * (length - len(head))


# ----------------------------------------------------------------- the webhook config


async def test_url_length(d: Daemon) -> None:
    config = "/api/webhook/config/s1"
    status, _ = await send(d, "PUT", config, {**HOOK, "url": url_of_length(MAX_URL_CHARS)})
    assert status == 200
    too_long = url_of_length(MAX_URL_CHARS + 1)
    refused(await send(d, "PUT", config, {**HOOK, "url": too_long}), "url:")
    # refused before anything is sent
    refused(await send(d, "POST", "/api/webhook/test", {"url": too_long}), "url:")


async def test_secret_length(d: Daemon) -> None:
    config = "/api/webhook/config/s1"
    status, _ = await send(d, "PUT", config, {**HOOK, "secret": "s" * MAX_SECRET_CHARS})
    assert status == 200
    too_long = "s" * (MAX_SECRET_CHARS + 1)
    refused(await send(d, "PUT", config, {**HOOK, "secret": too_long}), "secret:")
    test = {"url": url_of_length(40), "secret": too_long}
    refused(await send(d, "POST", "/api/webhook/test", test), "secret:")


async def test_header_count_names_and_values(d: Daemon) -> None:
    config = "/api/webhook/config/s1"
    most = {f"X-H{i}": "v" for i in range(MAX_HEADERS)}
    assert (await send(d, "PUT", config, {**HOOK, "headers": most}))[0] == 200
    more = {**most, "X-One-More": "v"}
    refused(await send(d, "PUT", config, {**HOOK, "headers": more}), "headers:")
    longest = {"X-" + "n" * 62: "v" * MAX_HEADER_VALUE_CHARS}
    answer = await send(d, "PUT", config, {**HOOK, "headers": longest})
    assert answer[0] == 200 and answer[1]["config"]["headers"] == longest
    refused(await send(d, "PUT", config, {**HOOK, "headers": {"X-" + "n" * 63: "v"}}), "headers:")
    value = "v" * (MAX_HEADER_VALUE_CHARS + 1)
    refused(await send(d, "PUT", config, {**HOOK, "headers": {"X-A": value}}), "headers.X-A:")


async def test_strings_that_utf8_cannot_carry_are_refused(d: Daemon) -> None:
    """A lone surrogate escape is valid JSON syntax but no UTF-8 string: 400, not 500."""
    config = "/api/webhook/config/s1"
    secret = b'{"url": "https://hooks.example/in", "events": ["*"], "secret": "\\udc80"}'
    refused(await raw(d, "PUT", config, secret), "secret: string is not valid Unicode")
    payload = b'{"url": "https://hooks.example/in", "payload": {"a": ["\\ud800"]}}'
    refused(await raw(d, "POST", "/api/webhook/test", payload), "payload.a[0]: string is not")
    # a proper surrogate pair is one character and fine
    pair = b'{"url": "https://hooks.example/in", "events": ["*"], "secret": "\\ud83d\\ude00"}'
    status, body = await raw(d, "PUT", config, pair)
    assert status == 200 and body["config"]["secret"] == "\U0001f600"
    refused(await raw(d, "POST", "/api/events", b'{"reason": "\xff"}'), "body: invalid JSON")


async def test_numbers_that_json_cannot_carry_are_refused(d: Daemon) -> None:
    """NaN, Infinity and 1e400 would go out as invalid JSON; they are refused, field named."""
    for number in (b"NaN", b"-Infinity", b"1e400"):
        body = b'{"url": "https://hooks.example/in", "payload": {"n": %s}}' % number
        refused(await raw(d, "POST", "/api/webhook/test", body), "payload.n: must be a finite")
        event = b'{"events": [{"event": "session.disconnected", "sessionId": "s1", '
        event += b'"reason": "x", "n": %s}]}' % number
        refused(await raw(d, "POST", "/api/events", event), "events[0].n: must be a finite")


# ----------------------------------------------------------------- events


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"event": "message.read", "sessionId": "s1", "to": "1"}, "messageId"),
        ({"event": "session.qr_generated", "sessionId": "s1", "expiresAt": "x"}, "qrCode"),
        ({"event": "session.connected", "sessionId": "s1"}, "phoneNumber"),
    ],
)
async def test_event_field_lengths(d: Daemon, event: dict[str, Any], field: str) -> None:
    limit = MAX_FIELD_CHARS_BY_NAME.get(field, MAX_FIELD_CHARS)
    status, _ = await send(d, "POST", "/api/events", {**event, field: "f" * limit})
    assert status == 202
    answer = await send(d, "POST", "/api/events", {**event, field: "f" * (limit + 1)})
    refused(answer, f"{field}: at most {limit} characters")


async def test_session_id_length_everywhere(d: Daemon) -> None:
    longest, too_long = "s" * 128, "s" * 129
    assert (await send(d, "POST", "/api/events", {**EVENT, "sessionId": longest}))[0] == 202
    refused(await send(d, "POST", "/api/events", {**EVENT, "sessionId": too_long}), "sessionId:")
    batch = {"events": [EVENT, {**EVENT, "sessionId": too_long}]}
    refused(await send(d, "POST", "/api/events", batch), "events[1].sessionId:")
    assert (await send(d, "GET", f"/api/webhook/queue?sessionId={longest}", None))[0] == 200
    refused(await send(d, "GET", f"/api/webhook/queue?sessionId={too_long}", None), "sessionId:")
    for path in ("config", "stats", "queue"):
        method = "DELETE" if path == "queue" else "GET"
        status, _ = await send(d, method, f"/api/webhook/{path}/{longest}", None)
        assert status in (200, 404)
        refused(await send(d, method, f"/api/webhook/{path}/{too_long}", None), "sessionId:")
    answer = await send(d, "PUT", f"/api/webhook/config/{too_long}", HOOK)
    refused(answer, "sessionId:")


async def test_event_id_length(d: Daemon) -> None:
    status, body = await send(d, "POST", "/api/events", {**EVENT, "id": "i" * 128})
    assert status == 202 and body["ids"] == ["i" * 128]
    refused(await send(d, "POST", "/api/events", {**EVENT, "id": "i" * 129}), "id:")


async def test_batch_size(d: Daemon) -> None:
    # 1001 small events fit in the body, so the batch rule is what refuses
    small = {"event": "session.disconnected", "sessionId": "b", "reason": "x"}
    status, body = await send(d, "POST", "/api/events", {"events": [small] * MAX_BATCH})
    assert status == 202 and body["accepted"] == MAX_BATCH
    answer = await send(d, "POST", "/api/events", {"events": [small] * (MAX_BATCH + 1)})
    refused(answer, f"events: must hold 1 to {MAX_BATCH} events")


# ----------------------------------------------------------------- bodies


def padded(size: int) -> bytes:
    """A valid event body of exactly `size` bytes (an extra field takes the padding)."""
    head = json.dumps({**EVENT, "pad": ""}).encode()
    return head[:-2] + b"p" * (size - len(head)) + head[-2:]


@pytest.mark.parametrize("path", ["/api/events", "/api/webhook/config/s1", "/api/webhook/test"])
async def test_body_larger_than_max_body_is_413(d: Daemon, path: str) -> None:
    method = "PUT" if "config" in path else "POST"
    refused(await raw(d, method, path, padded(MAX_BODY + 1)), "request body larger", 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        body = padded(MAX_BODY + 1)
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    refused(await raw(d, method, path, chunks()), "request body larger", 413)


async def test_body_of_exactly_max_body_is_read(d: Daemon) -> None:
    body = padded(MAX_BODY)
    assert len(body) == MAX_BODY
    status, answer = await raw(d, "POST", "/api/events", body)
    assert status == 202, answer


async def test_an_extra_event_field_is_bounded_by_the_body(d: Daemon) -> None:
    # fields a type does not name are free-form: max_body is their bound
    big = {**EVENT, "text": "t" * MAX_BODY}
    refused(await send(d, "POST", "/api/events", big), "request body larger", 413)
    refused(await send(d, "POST", "/api/events", {**EVENT, "c": {"k": ["v"] * 40000}}), "r", 413)


def nested(levels: int, inner: Any = 1) -> Any:
    """`levels` arrays and objects, alternating, around `inner`."""
    value = inner
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    ("method", "path", "wrap"),
    [
        ("POST", "/api/events", lambda deep: {**EVENT, "deep": deep}),
        ("PUT", "/api/webhook/config/s1", lambda deep: {**HOOK, "deep": deep}),
        ("POST", "/api/webhook/test", lambda deep: {"url": "https://h.example/", "payload": deep}),
    ],
)
async def test_nesting_deeper_than_max_json_depth_is_400(
    d: Daemon, method: str, path: str, wrap: Any
) -> None:
    # the body's own object is the first level
    too_deep = wrap(nested(MAX_JSON_DEPTH))
    refused(
        await send(d, method, path, too_deep), f"body: JSON nested deeper than {MAX_JSON_DEPTH}"
    )
    hostile = b"[" * 100_000  # never reaches the parser's recursion
    refused(await raw(d, method, path, hostile), "body: JSON nested deeper")


async def test_nesting_up_to_max_json_depth_is_accepted(d: Daemon) -> None:
    status, _ = await send(d, "POST", "/api/events", {**EVENT, "deep": nested(MAX_JSON_DEPTH - 1)})
    assert status == 202


async def test_brackets_inside_strings_are_not_nesting(d: Daemon) -> None:
    """A message text full of brackets is plain text, not a deep body."""
    text = '[{"\\' * 100 + "]}" * 100
    status, _ = await send(d, "POST", "/api/events", {**EVENT, "text": text, "k": [[["x"]]]})
    assert status == 202


async def test_overlong_token_is_401_in_the_envelope(d: Daemon) -> None:
    token = "a" * (MAX_TOKEN_BYTES + 1)
    resp = await d.client.get("/api/webhook/queue", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    body = await resp.json()
    assert body["error"]["code"] == "unauthorized" and "longer than" in body["error"]["message"]


# ----------------------------------------------------------------- the document


def _schemas_in(
    node: Any, seen: set[tuple[str, bool]], above: bool = False
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every subschema of a request schema, $refs followed once, each with whether a schema
    it is combined with (allOf, anyOf, oneOf) already bounds the length."""
    if isinstance(node, list):
        for item in node:
            yield from _schemas_in(item, seen, above)
        return
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        ref = node["$ref"]
        if (ref, above) not in seen:
            seen.add((ref, above))
            target: Any = DOC
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            yield from _schemas_in(target, seen, above)
        return
    yield node, above
    for key in ("allOf", "anyOf", "oneOf"):
        yield from _schemas_in(node.get(key, []), seen, above or _bounded(node))
    # (not "not": what it matches is refused)
    for key in ("prefixItems", "items", "additionalProperties", "propertyNames", "contains"):
        yield from _schemas_in(node.get(key), seen)
    yield from _schemas_in(list(node.get("properties", {}).values()), seen)


DOC = openapi.document()
# A pattern bounds the length when it is anchored and repeats nothing without a limit.
# Escapes and character classes go first, so `[*+]` is no repetition.
_ESCAPE_OR_CLASS = re.compile(r"\\.|\[(?:\\.|[^\]])*\]")
_UNBOUNDED = re.compile(r"[*+]|\{\d+,\}")


def _bounded(schema: dict[str, Any]) -> bool:
    if "maxLength" in schema or "enum" in schema or "const" in schema:
        return True
    pattern = schema.get("pattern", "")
    skeleton = _ESCAPE_OR_CLASS.sub("x", pattern)
    anchored = pattern.startswith("^") and pattern.endswith("$")
    return anchored and not _UNBOUNDED.search(skeleton)


def accepted_strings() -> Iterator[tuple[str, dict[str, Any]]]:
    """(operation, schema) of every string schema in a request body or parameter, except
    those another schema of the same value bounds."""
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            label = f"{method.upper()} {path}"
            roots: list[Any] = [op.get("requestBody", {}).get("content", {})]
            roots += [
                p.get("schema")
                or DOC["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]["schema"]
                for p in op.get("parameters", [])
            ]
            for root in roots:
                media = (
                    [m["schema"] for m in root.values()] if "application/json" in root else [root]
                )
                for schema, above in _schemas_in(media, set()):
                    if (schema.get("type") == "string" or "pattern" in schema) and not above:
                        yield label, schema


def test_every_string_the_api_accepts_is_bounded() -> None:
    found = list(accepted_strings())
    assert len(found) > 20  # the walk reaches the event and webhook fields
    unbounded = [(label, schema.get("pattern")) for label, schema in found if not _bounded(schema)]
    assert not unbounded, unbounded


def test_the_document_states_the_limits() -> None:
    schemas = DOC["components"]["schemas"]
    assert schemas["WebhookUrl"]["maxLength"] == MAX_URL_CHARS
    assert schemas["WebhookSecret"]["maxLength"] == MAX_SECRET_CHARS
    assert schemas["WebhookHeaders"]["maxProperties"] == MAX_HEADERS
    headers = schemas["WebhookHeaders"]["additionalProperties"]
    assert headers["maxLength"] == MAX_HEADER_VALUE_CHARS
    assert schemas["SessionId"]["maxLength"] == 128 and schemas["EventId"]["maxLength"] == 128
    assert schemas["EventBatch"]["properties"]["events"]["maxItems"] == MAX_BATCH
    assert schemas["SessionQrGeneratedEvent"]["properties"]["qrCode"]["maxLength"] == 65536
    assert schemas["MessageReadEvent"]["properties"]["messageId"]["maxLength"] == MAX_FIELD_CHARS
