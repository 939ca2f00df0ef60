"""JWT keys, verification, roles and session scopes (SPEC §3), and minting tokens."""

from __future__ import annotations

import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import jwt

from .config import AuthConfig

Role = Literal["viewer", "ingest", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
# what each role may do: a route needing rank r admits every role of rank >= r
ROLE_RANK: Final[dict[str, int]] = {role: rank for rank, role in enumerate(ROLES)}
MAX_TOKEN_BYTES = 8192
VERIFIED_CACHE = 256  # tokens remembered after a full check (Verifier)
SECRET_FILE_NAME = "jwt.secret"
# the claims RFC 7519 §2 types as NumericDate: a JSON number, never a string or a boolean
NUMERIC_DATE_CLAIMS: Final[tuple[str, ...]] = ("exp", "nbf", "iat")

# Why a token was refused, in words fixed here: the log names the reason, and a log line
# must never carry what the client sent (the message may quote the token's header or claims)
Reason = Literal[
    "missing",
    "not_bearer",
    "too_long",
    "malformed",
    "algorithm",
    "no_key",
    "expired",
    "not_yet_valid",
    "missing_claim",
    "issuer",
    "audience",
    "invalid",
    "numeric_date",
    "unknown_role",
    "sessions_claim",
    "role_too_low",
]


class AuthError(Exception):
    """A request is not authenticated (401) or not allowed (403)."""

    def __init__(self, status: Literal[401, 403], message: str, reason: Reason) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason: Reason = reason


class KeyError_(Exception):
    """No usable key: the message says what is missing."""


@dataclass(frozen=True)
class Keys:
    """Verification material: an HMAC secret and/or a public key (PEM)."""

    hmac_secret: str | None
    public_key: str | None
    generated_secret_file: Path | None = None


@dataclass(frozen=True)
class Principal:
    """Who made a request and what it may touch."""

    subject: str | None
    role: Role
    sessions: frozenset[str] | None  # None: every session

    def allows(self, needed: Role) -> bool:
        """True when this role may use a route that needs `needed`."""
        return ROLE_RANK[self.role] >= ROLE_RANK[needed]

    def can_see(self, session_id: str) -> bool:
        """True when the token's session scope includes session_id."""
        return self.sessions is None or session_id in self.sessions


def generated_secret_path(db_path: Path) -> Path:
    """Where the generated HS256 secret lives: beside the database."""
    return db_path.parent / SECRET_FILE_NAME


def load_keys(auth: AuthConfig, db_path: Path, *, generate: bool = True) -> Keys:
    """Read the configured keys, generating jwt.secret beside the database when none is named.

    With generate=False a missing jwt.secret is a KeyError_ (the daemon has not created it).
    """
    public = auth.jwt_public_key_file.read_text() if auth.jwt_public_key_file else None
    if auth.jwt_secret is not None:
        return Keys(auth.jwt_secret, public)
    if auth.jwt_secret_file is not None:
        return Keys(_read_secret(auth.jwt_secret_file), public)
    if public is not None and not any(a.startswith("HS") for a in auth.algorithms):
        return Keys(None, public)
    path = generated_secret_path(db_path)
    if not generate and not path.exists():
        raise KeyError_(f"{path} does not exist: the daemon creates it when it starts")
    return Keys(_ensure_secret_file(path), public, generated_secret_file=path)


def _read_secret(path: Path) -> str:
    text = path.read_text().strip()
    if not text:
        raise KeyError_(f"{path}: the JWT secret file is empty")
    return text


def _ensure_secret_file(path: Path) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return _read_secret(path)


class Verifier:
    """Checks bearer tokens against the configured keys and claims.

    A token that passed is remembered with its `exp` (at most VERIFIED_CACHE tokens):
    the gateway sends the same token with every event, and checking its signature and
    claims again was an eighth of a single-event ingest's CPU. A remembered token is
    still refused once it expires. A reload builds a new Verifier, so a key change
    forgets them all.
    """

    def __init__(
        self, auth: AuthConfig, keys: Keys, clock: Callable[[], float] = time.time
    ) -> None:
        self.auth = auth
        self.keys = keys
        self.clock = clock
        self._verified: dict[str, tuple[Principal, float]] = {}  # token -> (who, exp)

    def verify(self, authorization: str | None) -> Principal:
        """Turn an Authorization header into a Principal, or raise AuthError(401)."""
        if not authorization:
            raise AuthError(401, "missing bearer token", "missing")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "Authorization must be 'Bearer <token>'", "not_bearer")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(401, f"token longer than {MAX_TOKEN_BYTES} bytes", "too_long")
        known = self._verified.get(token)
        if known is not None:
            # pyjwt's rule: expired when exp <= now - leeway
            if known[1] > self.clock() - self.auth.leeway_s:
                return known[0]
            del self._verified[token]
            raise AuthError(401, "token expired", "expired")
        principal, exp = self._check(token)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()
        self._verified[token] = (principal, exp)
        return principal

    def _check(self, token: str) -> tuple[Principal, float]:
        """Verify the token in full: its principal and `exp`, or AuthError(401)."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise AuthError(401, "malformed token", "malformed") from None
        if not isinstance(alg, str) or alg not in self.auth.algorithms or alg == "none":
            raise AuthError(401, f"token algorithm {alg!r} is not accepted", "algorithm")
        key = self.keys.hmac_secret if alg.startswith("HS") else self.keys.public_key
        if key is None:
            raise AuthError(401, f"no key is configured for {alg} tokens", "no_key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.auth.audience or None,
                issuer=self.auth.issuer or None,
                leeway=self.auth.leeway_s,
                options={"require": ["exp"], "verify_aud": bool(self.auth.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired", "expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(
                401, "token not valid yet (nbf/iat in the future)", "not_yet_valid"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, f"token lacks the '{exc.claim}' claim", "missing_claim") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "token issuer is not accepted", "issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "token audience is not accepted", "audience") from None
        except jwt.PyJWTError:
            raise AuthError(401, "invalid token", "invalid") from None
        # pyjwt compares int(claim) with the time, so "exp": "9999999999" or "nbf": false
        # would pass; RFC 7519 §2 NumericDate is a JSON number
        for name in NUMERIC_DATE_CLAIMS:
            if name in claims and not is_numeric_date(claims[name]):
                raise AuthError(
                    401, f"the '{name}' claim must be a number (NumericDate)", "numeric_date"
                )
        return principal_from_claims(claims), float(claims["exp"])


def is_numeric_date(value: object) -> bool:
    """True for a JSON number that is a time: an int or a finite float, not a boolean."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Read role and sessions claims (absent: admin, all sessions)."""
    role = claims.get("role", "admin")
    if role not in ROLES:
        raise AuthError(401, f"unknown role {role!r}; known: {', '.join(ROLES)}", "unknown_role")
    sessions = claims.get("sessions", "*")
    scope: frozenset[str] | None
    if sessions == "*":
        scope = None
    elif isinstance(sessions, list) and all(isinstance(s, str) for s in sessions):
        scope = None if "*" in sessions else frozenset(sessions)
    else:
        raise AuthError(
            401, "the 'sessions' claim must be a list of session ids or '*'", "sessions_claim"
        )
    sub = claims.get("sub")
    return Principal(sub if isinstance(sub, str) else None, role, scope)


def mint_token(
    auth: AuthConfig,
    keys: Keys,
    *,
    subject: str,
    role: Role,
    sessions: Sequence[str] | None,
    ttl_s: float,
    now: float,
) -> str:
    """A signed token for this daemon (HS256 with its secret)."""
    if keys.hmac_secret is None:
        raise KeyError_(
            "cannot mint tokens: no HS256 secret is configured"
            " (tokens come from an external issuer)"
        )
    alg = next((a for a in auth.algorithms if a.startswith("HS")), None)
    if alg is None:
        raise KeyError_("cannot mint tokens: auth.algorithms allows no HS* algorithm")
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "sessions": "*" if sessions is None else list(sessions),
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    if auth.issuer:
        claims["iss"] = auth.issuer
    if auth.audience:
        claims["aud"] = auth.audience
    return jwt.encode(claims, keys.hmac_secret, algorithm=alg)
