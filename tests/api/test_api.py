"""The guide's API, route by route, against an in-process daemon on a real socket."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import trustme
from support import ca_file, make_config, running_daemon

# the in-process daemons here run on SQLite and on PostgreSQL (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("daemon_backend")

SESSION = "5bc99cea8975b95fe7077c64a3312145"


def config_for(tmp_path: Path, ca: trustme.CA):
    return make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)))


async def test_put_config_answers_exactly_as_the_guide(tmp_path: Path, ca: trustme.CA) -> None:
    async with running_daemon(config_for(tmp_path, ca)) as d:
        status, body = await d.call(
            "PUT",
            f"/api/webhook/config/{SESSION}",
            {
                "url": "https://your-server.com/webhook",
                "events": ["message.received", "message.sent", "session.connected"],
                "secret": "your_webhook_secret_key",
            },
        )
    assert status == 200
    assert body == {
        "success": True,
        "message": "Webhook configured successfully",
        "config": {
            "url": "https://your-server.com/webhook",
            "events": ["message.received", "message.sent", "session.connected"],
            "secret": "your_webhook_secret_key",
            "isActive": True,
        },
    }


async def test_get_config_masks_the_secret_and_has_times(tmp_path: Path, ca: trustme.CA) -> None:
    async with running_daemon(config_for(tmp_path, ca)) as d:
        await d.call(
            "PUT",
            "/api/webhook/config/s1",
            {"url": "https://a.example/h", "events": ["*"], "secret": "supersecret"},
        )
        status, body = await d.call("GET", "/api/webhook/config/s1")
        assert status == 200
        config = body["config"]
        assert config["secret"] == "supe****"
        assert config["url"] == "https://a.example/h"
        assert config["events"] == ["*"]
        assert config["isActive"] is True
        assert config["createdAt"].endswith("Z") and config["updatedAt"].endswith("Z")
        assert "headers" not in config
        status, body = await d.call("GET", "/api/webhook/config/other")
        assert status == 404
        assert body["error"]["code"] == "not_found"


async def test_put_config_validation_names_the_field(tmp_path: Path, ca: trustme.CA) -> None:
    cases = [
        ({"events": ["*"]}, "url: required"),
        ({"url": "http://plain.example/h", "events": ["*"]}, "url: URL scheme must be https"),
        ({"url": "https://a.example/h", "events": []}, "events: must be a non-empty list"),
        (
            {"url": "https://a.example/h", "events": ["*", "foo"]},
            "events[1]: unknown event type 'foo'",
        ),
        ({"url": "https://a.example/h", "events": ["*"], "secret": ""}, "secret: must be a string"),
        ({"url": "https://a.example/h", "events": ["*"], "isActive": "yes"}, "isActive:"),
        (
            {"url": "https://a.example/h", "events": ["*"], "headers": {"X-Webhook-Id": "x"}},
            "headers.X-Webhook-Id: wahookd sets this header itself",
        ),
        *(
            (
                {"url": "https://a.example/h", "events": ["*"], "headers": {name: "chunked"}},
                f"headers.{name}: a connection header, which wahookd controls",
            )
            for name in ("Transfer-Encoding", "connection", "Expect", "Upgrade", "TE")
        ),
        ({"url": "https://a.example/h", "events": ["*"], "nope": 1}, "nope: unknown field"),
    ]
    async with running_daemon(config_for(tmp_path, ca)) as d:
        for body, message in cases:
            status, answer = await d.call("PUT", "/api/webhook/config/s1", body)
            assert status == 400, body
            assert answer["success"] is False
            assert answer["error"]["code"] == "validation_error"
            assert message in answer["error"]["message"], (body, answer)


async def test_errors_use_the_envelope(tmp_path: Path, ca: trustme.CA) -> None:
    async with running_daemon(config_for(tmp_path, ca)) as d:
        c = d.client
        resp = await c.get("/api/webhook/queue")
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        assert (await resp.json())["error"]["code"] == "unauthorized"
        resp = await c.get("/api/nothing-here", headers=d.headers())
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
        resp = await c.patch("/api/webhook/queue", headers=d.headers())
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"
        resp = await c.post(
            "/api/events", data=b"x", headers={**d.headers(), "Content-Type": "text/plain"}
        )
        assert resp.status == 415
        assert (await resp.json())["error"]["code"] == "unsupported_media_type"
        resp = await c.post(
            "/api/events",
            data=b"{not json",
            headers={**d.headers(), "Content-Type": "application/json"},
        )
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "validation_error"
        resp = await c.post(
            "/api/events", data=b"[1]", headers={**d.headers(), "Content-Type": "application/json"}
        )
        assert (await resp.json())["error"]["message"] == "body: must be a JSON object"
        big = io.BytesIO(b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}')
        resp = await c.post(
            "/api/events", data=big, headers={**d.headers(), "Content-Type": "application/json"}
        )
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"
        status, body = await d.call("GET", "/api/webhook/stats/bad%20id")
        assert status == 400
        assert body["error"]["message"].startswith("sessionId:")


async def test_roles_and_session_scopes(tmp_path: Path, ca: trustme.CA) -> None:
    event = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}
    async with running_daemon(config_for(tmp_path, ca)) as d:
        viewer = d.headers(role="viewer")
        status, body = await d.call("POST", "/api/events", event, headers=viewer)
        assert status == 403 and body["error"]["code"] == "forbidden"
        status, _ = await d.call("GET", "/api/webhook/queue", headers=viewer)
        assert status == 200
        ingest = d.headers(role="ingest", sessions=["s1"])
        status, _ = await d.call("POST", "/api/events", event, headers=ingest)
        assert status == 202
        status, _ = await d.call(
            "POST", "/api/events", {**event, "sessionId": "s2"}, headers=ingest
        )
        assert status == 403
        status, _ = await d.call(
            "PUT",
            "/api/webhook/config/s1",
            {"url": "https://a.example/", "events": ["*"]},
            headers=ingest,
        )
        assert status == 403
        status, _ = await d.call("GET", "/api/webhook/queue?sessionId=s2", headers=ingest)
        assert status == 403
        expired = d.headers(ttl_s=-120)
        status, body = await d.call("GET", "/api/webhook/queue", headers=expired)
        assert status == 401 and body["error"]["message"] == "token expired"


async def test_ingest_validates_and_is_idempotent(tmp_path: Path, ca: trustme.CA) -> None:
    async with running_daemon(config_for(tmp_path, ca)) as d:
        status, body = await d.call(
            "POST",
            "/api/events",
            {
                "events": [
                    {"event": "session.disconnected", "sessionId": "s1", "reason": "x"},
                    {"event": "message.read", "sessionId": "s1", "messageId": "m"},
                ]
            },
        )
        assert status == 400
        assert body["error"]["message"].startswith("events[1].to:")
        event = {"id": "evt-1", "event": "session.disconnected", "sessionId": "s1", "reason": "x"}
        status, first = await d.call("POST", "/api/events", event)
        assert status == 202
        assert first == {"success": True, "accepted": 1, "ids": ["evt-1"], "queued": 0}
        status, again = await d.call("POST", "/api/events", event)
        assert again == {"success": True, "accepted": 1, "ids": ["evt-1"], "queued": 0}
        status, other = await d.call("POST", "/api/events", {**event, "sessionId": "s2"})
        assert other["ids"] == ["evt-1"]
        status, plain = await d.call(
            "POST", "/api/events", {k: v for k, v in event.items() if k != "id"}
        )
        assert plain["ids"][0].startswith("evt_")
