"""Role x session-scope over every route of the route table, and hostile tokens (SPEC §3).

The matrix is generated from `ROUTES`: a route added without a sample request here
fails `test_every_route_has_a_sample`, so no route can skip the permission check.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support import Receiver, ca_file, make_config, running_daemon

from wahookd.api.routes import ROUTES
from wahookd.auth import ROLE_RANK, AuthError, Keys, Verifier
from wahookd.config import AuthConfig

ROLES = ("viewer", "ingest", "admin")


@dataclass(frozen=True)
class Sample:
    """A request to a route on behalf of session `s` (None: the route names no session)."""

    path: str
    body: Any = None
    names_session: bool = True


NO_WEBHOOK = "wh_0123456789abcdef"


def sample(
    method: str,
    path: str,
    session: str,
    receiver_url: str,
    extras: dict[str, str] | None = None,
    statics: dict[str, str] | None = None,
) -> Sample:
    """A well-formed request for each route of the table.

    `extras` and `statics`: the ids of an extra and of a static webhook of each session.
    """
    extra = (extras or {}).get(session, NO_WEBHOOK)
    # DELETE a static webhook (409 when allowed): deleting a real one would turn the later
    # calls of the matrix into 404s, whatever the token
    static = (statics or {}).get(session, NO_WEBHOOK)
    event = {"event": "session.disconnected", "sessionId": session, "reason": "x"}
    config = {"url": receiver_url, "events": ["*"], "secret": "k" * 16}
    samples = {
        ("PUT", "/api/webhook/config/{sessionId}"): Sample(
            f"/api/webhook/config/{session}", config
        ),
        ("PATCH", "/api/webhook/config/{sessionId}"): Sample(
            f"/api/webhook/config/{session}", {"isActive": True}
        ),
        ("GET", "/api/webhook/config/{sessionId}"): Sample(f"/api/webhook/config/{session}"),
        ("DELETE", "/api/webhook/config/{sessionId}"): Sample(f"/api/webhook/config/{session}"),
        ("POST", "/api/webhook/test"): Sample(
            "/api/webhook/test", {"url": receiver_url}, names_session=False
        ),
        ("GET", "/api/webhook/queue"): Sample(f"/api/webhook/queue?sessionId={session}"),
        ("DELETE", "/api/webhook/queue/{sessionId}"): Sample(f"/api/webhook/queue/{session}"),
        ("GET", "/api/webhook/stats/{sessionId}"): Sample(f"/api/webhook/stats/{session}"),
        # a scoped token is not refused here: it sees only its own sessions
        ("GET", "/api/webhook/sessions"): Sample("/api/webhook/sessions", names_session=False),
        ("GET", "/api/webhook/activity"): Sample(f"/api/webhook/activity?sessionId={session}"),
        ("GET", "/api/webhook/deliveries/{sessionId}"): Sample(
            f"/api/webhook/deliveries/{session}?limit=5"
        ),
        ("GET", "/api/webhook/deliveries/{sessionId}/{deliveryId}"): Sample(
            f"/api/webhook/deliveries/{session}/dlv_0123456789abcdef"
        ),
        ("POST", "/api/webhook/deliveries/{sessionId}/{deliveryId}/retry"): Sample(
            f"/api/webhook/deliveries/{session}/dlv_0123456789abcdef/retry"
        ),
        ("POST", "/api/webhook/queue/{sessionId}/retry-failed"): Sample(
            f"/api/webhook/queue/{session}/retry-failed?since=1h"
        ),
        ("POST", "/api/events"): Sample("/api/events", event),
        # a scoped token is not refused here: it sees only its own sessions' webhooks
        ("GET", "/api/webhooks"): Sample("/api/webhooks", names_session=False),
        ("POST", "/api/webhooks"): Sample(
            "/api/webhooks", {"sessionId": session, "url": receiver_url, "events": ["*"]}
        ),
        ("GET", "/api/webhooks/{id}"): Sample(f"/api/webhooks/{extra}"),
        ("PATCH", "/api/webhooks/{id}"): Sample(f"/api/webhooks/{extra}", {"isActive": True}),
        ("DELETE", "/api/webhooks/{id}"): Sample(f"/api/webhooks/{static}"),
        ("GET", "/api/openapi.json"): Sample("/api/openapi.json", names_session=False),
        ("GET", "/api/cluster"): Sample("/api/cluster", names_session=False),
        ("GET", "/healthz"): Sample("/healthz", names_session=False),
        ("GET", "/readyz"): Sample("/readyz", names_session=False),
        ("GET", "/metrics"): Sample("/metrics", names_session=False),
    }
    return samples[(method, path)]


# the only routes anyone may call without a token: the probes and the Prometheus scrape
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}


def test_every_route_has_a_sample_and_only_probes_are_public() -> None:
    for route in ROUTES:
        sample(route.method, route.path, "a", "https://127.0.0.1:1/")  # KeyError if missing
        assert (route.role is None) == ((route.method, route.path) in PUBLIC), route.path


async def test_role_and_scope_matrix_over_every_route(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    statics = "".join(
        f'[[webhook]]\nsession = "{s}"\nurl = "https://static.example/{s}"\nevents = ["*"]\n'
        for s in ("a", "b")
    )
    config = make_config(tmp_path, statics, ca_file=str(ca_file(ca, tmp_path)))
    checked = 0
    async with running_daemon(config) as d:
        extras = {}
        for target in ("a", "b"):
            body = {"sessionId": target, "url": receiver.url, "events": ["*"]}
            resp = await d.client.post("/api/webhooks", json=body, headers=d.headers())
            extras[target] = (await resp.json())["webhook"]["id"]
        static_ids = {hook.session: hook.public_id for hook in d.state.registry.statics()}
        for route in ROUTES:
            for target in ("a", "b"):
                s = sample(route.method, route.path, target, receiver.url, extras, static_ids)

                async def call(headers: dict[str, str], s: Sample = s, r: Any = route) -> int:
                    resp = await d.client.request(r.method, s.path, json=s.body, headers=headers)
                    # JSON, but for the metrics' text, which is public and so always a 200
                    is_json = resp.content_type == "application/json" or resp.status != 200
                    body = await resp.json() if is_json else await resp.text()
                    assert resp.status < 500, (r.method, s.path, body)
                    if resp.status >= 400:  # every refusal is the error envelope
                        assert body["success"] is False and body["error"]["message"]
                    return resp.status

                if route.role is None:
                    assert await call({}) == 200, route.path
                    checked += 1
                    continue
                assert await call({}) == 401, route.path
                for role in ROLES:
                    for scope in (None, ["a"]):
                        status = await call(d.headers(role=role, sessions=scope))
                        allowed = ROLE_RANK[role] >= ROLE_RANK[route.role] and (
                            scope is None or not s.names_session or target in scope
                        )
                        where = (route.method, s.path, role, scope, status)
                        if allowed:
                            assert status not in (401, 403), where
                        else:
                            assert status == 403, where
                        checked += 1
    assert checked >= len(ROUTES) * 2


# ------------------------------------------------------------------ hostile tokens
SECRET = "z" * 64


def _rsa() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _exp() -> int:
    return int(time.time()) + 600


def test_rs256_tokens_verify_with_the_public_key() -> None:
    private, public = _rsa()
    verifier = Verifier(AuthConfig(algorithms=("RS256",)), Keys(None, public))
    token = jwt.encode({"exp": _exp(), "role": "viewer"}, private, algorithm="RS256")
    assert verifier.verify(f"Bearer {token}").role == "viewer"


@pytest.mark.parametrize("algorithms", [("RS256",), ("RS256", "HS256")])
def test_hs256_signed_with_the_public_key_is_refused(algorithms: tuple[str, ...]) -> None:
    """Algorithm confusion: the RSA public key used as an HMAC secret."""
    _, public = _rsa()
    verifier = Verifier(AuthConfig(algorithms=algorithms), Keys(SECRET, public))
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps({"exp": _exp(), "role": "admin"}).encode())
    import hashlib
    import hmac

    mac = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(AuthError) as exc:
        verifier.verify(f"Bearer {header}.{payload}.{_b64(mac)}")
    assert exc.value.status == 401


def _garbled() -> list[tuple[str, str]]:
    good = jwt.encode({"exp": _exp()}, SECRET, algorithm="HS256")
    head, body, sig = good.split(".")
    forged = _b64(json.dumps({"exp": _exp(), "role": "admin", "sessions": ["*"]}).encode())
    return [
        ("two-parts", f"{head}.{body}"),
        ("four-parts", f"{good}.x"),
        ("bad-base64-header", f"!!!.{body}.{sig}"),
        ("header-not-json", f"{_b64(b'not json')}.{body}.{sig}"),
        ("header-is-a-list", f"{_b64(b'[1,2]')}.{body}.{sig}"),
        ("payload-not-json", f"{head}.{_b64(b'{')}.{sig}"),
        ("payload-swapped", f"{head}.{forged}.{sig}"),
        ("signature-truncated", f"{head}.{body}.{sig[:10]}"),
        ("signature-empty", f"{head}.{body}."),
        ("alg-missing", f"{_b64(b'{}')}.{body}.{sig}"),
        ("alg-not-a-string", f"{_b64(json.dumps({'alg': 5}).encode())}.{body}.{sig}"),
        ("alg-none-lowercase", f"{_b64(json.dumps({'alg': 'none'}).encode())}.{body}."),
        ("alg-None-mixed-case", f"{_b64(json.dumps({'alg': 'None'}).encode())}.{body}."),
        ("unicode", "ü.ö.ä"),
        ("whitespace-inside", f"{head}. {body}.{sig}"),
        ("oversized", "a" * 9000),
    ]


@pytest.mark.parametrize(("token"), [t for _, t in _garbled()], ids=[n for n, _ in _garbled()])
def test_garbled_tokens_are_401(token: str) -> None:
    verifier = Verifier(AuthConfig(), Keys(SECRET, None))
    with pytest.raises(AuthError) as exc:
        verifier.verify(f"Bearer {token}")
    assert exc.value.status == 401
    assert SECRET not in exc.value.message


def test_missing_audience_is_refused_when_one_is_configured() -> None:
    verifier = Verifier(AuthConfig(audience="wahookd"), Keys(SECRET, None))
    token = jwt.encode({"exp": _exp()}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="'aud'"):
        verifier.verify(f"Bearer {token}")


async def test_hostile_tokens_get_the_envelope_over_http(tmp_path: Path) -> None:
    async with running_daemon(make_config(tmp_path)) as d:
        for name, token in _garbled():
            resp = await d.client.get(
                "/api/webhook/queue", headers={"Authorization": f"Bearer {token}"}
            )
            body = await resp.json()
            assert resp.status == 401, name
            assert body["success"] is False and body["error"]["code"] == "unauthorized", name
        # a header beyond what the HTTP parser takes is refused before any handler runs
        resp = await d.client.get(
            "/api/webhook/queue", headers={"Authorization": "Bearer " + "a" * 100_000}
        )
        assert resp.status == 400
        assert (await d.client.get("/healthz")).status == 200


async def test_numeric_dates_as_strings_get_the_401_envelope_over_http(tmp_path: Path) -> None:
    """ "exp": "9999999999" once passed pyjwt: a NumericDate is a JSON number (RFC 7519 §2)."""
    secret = "s" * 64  # make_config's jwt_secret
    now = int(time.time())
    tokens = {
        "exp-string": {"exp": "9999999999"},
        "nbf-string": {"exp": now + 600, "nbf": "0"},
        "iat-boolean": {"exp": now + 600, "iat": True},
    }
    async with running_daemon(make_config(tmp_path)) as d:
        for name, claims in tokens.items():
            token = jwt.encode(claims, secret, algorithm="HS256")
            resp = await d.client.get(
                "/api/webhook/queue", headers={"Authorization": f"Bearer {token}"}
            )
            body = await resp.json()
            assert resp.status == 401, name
            assert resp.headers["WWW-Authenticate"] == "Bearer", name
            assert body["success"] is False and body["error"]["code"] == "unauthorized", name
            assert "NumericDate" in body["error"]["message"], name
        # the same claims as numbers pass
        token = jwt.encode({"exp": now + 600, "nbf": 0, "iat": now}, secret, algorithm="HS256")
        resp = await d.client.get(
            "/api/webhook/queue", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200


async def test_an_unmarked_api_route_fails_closed(tmp_path: Path) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from wahookd.app import build_app

    async def forgot_requires(request: web.Request) -> web.Response:
        return web.json_response({"secret": "data"})

    app = build_app(make_config(tmp_path))
    app.router.add_get("/api/forgotten", forgot_requires)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/api/forgotten")).status == 401
        # unknown /api paths stay 404 for anyone
        assert (await client.get("/api/no-such-route")).status == 404
