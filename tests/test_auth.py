"""Token verification, roles and scopes (SPEC §3)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import jwt
import pytest

from wahookd.auth import (
    VERIFIED_CACHE,
    AuthError,
    Keys,
    Verifier,
    load_keys,
    mint_token,
    principal_from_claims,
)
from wahookd.config import AuthConfig

SECRET = "x" * 64


def verifier(**auth: object) -> Verifier:
    return Verifier(replace(AuthConfig(), **auth), Keys(SECRET, None))  # type: ignore[arg-type]


def bearer(claims: dict[str, object], key: str = SECRET, alg: str = "HS256") -> str:
    return "Bearer " + jwt.encode(claims, key, algorithm=alg)


def exp(seconds: float = 600) -> int:
    return int(time.time() + seconds)


def claim_types(claims: dict[str, object]) -> str:
    """A test id naming each claim's type: exp=str-nbf=int."""
    return "-".join(f"{name}={type(value).__name__}" for name, value in claims.items())


def test_absent_claims_mean_admin_of_every_session() -> None:
    who = verifier().verify(bearer({"exp": exp()}))
    assert who.role == "admin" and who.sessions is None
    assert who.allows("admin") and who.can_see("anything")


def test_roles_rank_viewer_ingest_admin() -> None:
    viewer = principal_from_claims({"role": "viewer"})
    ingest = principal_from_claims({"role": "ingest", "sessions": ["a"]})
    assert viewer.allows("viewer") and not viewer.allows("ingest")
    assert ingest.allows("ingest") and ingest.allows("viewer") and not ingest.allows("admin")
    assert ingest.can_see("a") and not ingest.can_see("b")
    assert principal_from_claims({"sessions": ["*"]}).sessions is None


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing bearer token"),
        ("Basic abc", "Authorization must be 'Bearer <token>'"),
        ("Bearer not.a.jwt", "malformed token"),
        (bearer({"exp": exp(-120)}), "token expired"),
        (bearer({"role": "admin"}), "token lacks the 'exp' claim"),
        (bearer({"exp": exp()}, key="y" * 64), "invalid token"),
        (bearer({"exp": exp()}, alg="HS512"), "token algorithm 'HS512' is not accepted"),
        (bearer({"exp": exp(), "role": "root"}), "unknown role 'root'"),
        (bearer({"exp": exp(), "sessions": "a,b"}), "the 'sessions' claim must be a list"),
        (bearer({"exp": exp(), "nbf": exp(3600)}), "token not valid yet"),
        ("Bearer " + "a" * 9000, "token longer than 8192 bytes"),
    ],
)
def test_refused_tokens(header: str | None, message: str) -> None:
    with pytest.raises(AuthError) as exc:
        verifier().verify(header)
    assert exc.value.status == 401
    assert exc.value.message.startswith(message)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999"},
        {"exp": str(exp())},
        {"exp": exp(), "nbf": "0"},
        {"exp": exp(), "nbf": False},
        {"exp": exp(), "iat": "0"},
        {"exp": exp(), "iat": True},
    ],
    ids=claim_types,
)
def test_numeric_dates_must_be_json_numbers(claims: dict[str, object]) -> None:
    """RFC 7519 NumericDate is a JSON number: a string or a boolean is refused, signed or not."""
    with pytest.raises(AuthError) as exc:
        verifier().verify(bearer(claims))
    assert exc.value.status == 401
    assert exc.value.message.endswith("must be a number (NumericDate)")
    assert exc.value.reason == "numeric_date"


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": True},  # int(True) == 1: long expired
        {"exp": "soon"},
        {"exp": exp(), "iat": "99999999999"},  # a string in the future
        {"exp": 1e400},  # JSON's Infinity: not a time
        {"exp": exp(), "nbf": float("nan")},
        {"exp": exp(), "nbf": None},
        {"exp": exp(), "iat": [0]},
    ],
    ids=claim_types,
)
def test_numeric_dates_pyjwt_refuses_by_itself_stay_refused(claims: dict[str, object]) -> None:
    with pytest.raises(AuthError) as exc:
        verifier().verify(bearer(claims))
    assert exc.value.status == 401


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": exp() + 0.5},
        {"exp": exp(), "nbf": time.time() - 1.5, "iat": time.time() - 1.5},
        {"exp": 10**30},  # far future, still a number
        {"exp": exp(), "nbf": -(10**30), "iat": 0},
    ],
    ids=claim_types,
)
def test_numeric_dates_may_be_any_json_number(claims: dict[str, object]) -> None:
    assert verifier().verify(bearer(claims)).role == "admin"


def test_alg_none_is_refused_even_if_configured_loosely() -> None:
    token = jwt.encode({"exp": exp()}, None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(AuthError, match="not accepted"):
        verifier().verify(f"Bearer {token}")


def test_issuer_and_audience_when_configured() -> None:
    v = verifier(issuer="gateway", audience="wahookd")
    assert v.verify(bearer({"exp": exp(), "iss": "gateway", "aud": "wahookd"})).role == "admin"
    with pytest.raises(AuthError, match="issuer"):
        v.verify(bearer({"exp": exp(), "iss": "other", "aud": "wahookd"}))
    with pytest.raises(AuthError, match="audience"):
        v.verify(bearer({"exp": exp(), "iss": "gateway", "aud": "other"}))
    with pytest.raises(AuthError, match="lacks the 'iss'"):
        v.verify(bearer({"exp": exp(), "aud": "wahookd"}))


def test_minted_tokens_verify(tmp_path: Path) -> None:
    auth = AuthConfig(issuer="i", audience="a")
    keys = load_keys(auth, tmp_path / "db" / "wahookd.db")
    assert keys.generated_secret_file == tmp_path / "db" / "jwt.secret"
    token = mint_token(
        auth, keys, subject="s", role="ingest", sessions=["x"], ttl_s=60, now=time.time()
    )
    who = Verifier(auth, keys).verify(f"Bearer {token}")
    assert (who.subject, who.role, who.sessions) == ("s", "ingest", frozenset({"x"}))


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    now = [time.time()]
    check = Verifier(replace(AuthConfig(), leeway_s=5), Keys(SECRET, None), lambda: now[0])
    header = bearer({"exp": int(now[0]) + 60, "role": "ingest", "sessions": ["s1"]})
    first = check.verify(header)
    assert first.role == "ingest" and first.sessions == frozenset({"s1"})
    now[0] += 60  # past exp, within the leeway
    assert check.verify(header) == first
    now[0] += 5  # past the leeway: remembered, but expired all the same
    with pytest.raises(AuthError) as raised:
        check.verify(header)
    assert (raised.value.status, str(raised.value)) == (401, "token expired")


def test_only_tokens_that_passed_are_remembered_and_no_more_than_the_cache_holds() -> None:
    check = verifier()
    good = jwt.encode({"exp": exp()}, SECRET, algorithm="HS256")
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    check.verify(f"Bearer {good}")
    for _ in range(2):  # a refused token stays refused: it was never remembered
        with pytest.raises(AuthError):
            check.verify(f"Bearer {forged}")
    for n in range(VERIFIED_CACHE + 10):
        check.verify(bearer({"exp": exp(), "sub": f"u{n}"}))
    assert len(check._verified) <= VERIFIED_CACHE
