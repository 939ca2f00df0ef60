"""The TOML config file (SPEC §2) turned into frozen dataclasses, validated once."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar, cast, get_args

from wahookd import config_tables as toml
from wahookd import dsn
from wahookd.cpu import PinCpu, parse_pin_cpu
from wahookd.delivery.netpolicy import Network
from wahookd.events import SESSION_ID_RULE, is_session_id
from wahookd.rules import (
    HEADER_NAME_TEXT,
    RESERVED_HEADERS_TEXT,
    RuleError,
    check_description,
    check_event,
    check_filter,
    check_header,
    check_header_count,
    check_ordering,
    check_rate_limit,
    check_secret,
    check_url,
)

Synchronous = Literal["full", "normal"]
StorageBackend = Literal["sqlite", "postgres"]
STORAGE_BACKENDS: Final[tuple[StorageBackend, ...]] = get_args(StorageBackend)
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
LOG_LEVELS: Final[tuple[LogLevel, ...]] = get_args(LogLevel)
LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)
SYMMETRIC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
ASYMMETRIC_ALGORITHMS: Final = (*RSA_ALGORITHMS, "ES256", "ES384", "ES512", "EdDSA")
JWT_ALGORITHMS: Final = SYMMETRIC_ALGORITHMS + ASYMMETRIC_ALGORITHMS
DEFAULT_CONFIG_PATHS: Final = (Path("wahookd.toml"), Path("/etc/wahookd/wahookd.toml"))

LISTEN_HELP: Final = 'use "HOST:PORT", "[IPv6]:PORT" or "unix:/path/to/socket"'
# after a refused http:// URL: check-config (static webhooks) and `wahookd test-webhook`
REQUIRE_HTTPS_HINT: Final = "set delivery.require_https = false to allow"
_HOSTNAME_RE: Final = re.compile(
    r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?"
)
_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path is 108 bytes including the NUL on Linux

MIN_LEASE_S: Final = 3.0

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)


class ConfigError(Exception):
    """Every problem found in one config, each as "PATH: section.key: problem"."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Listen:
    """Where the API listens: a TCP host and port, or a unix socket path."""

    host: str | None
    port: int | None
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    listen: Listen = Listen("127.0.0.1", 8787)
    max_body: int = 1024 * 1024
    shutdown_grace_s: float = 10.0
    pin_cpu: PinCpu = "auto"  # keep the threads on one CPU (cpu.py)


@dataclass(frozen=True)
class StorageConfig:
    path: Path
    synchronous: Synchronous = "full"
    keep_finished_s: float = 7 * 86400.0
    backend: StorageBackend = "sqlite"
    # the PostgreSQL DSN, inline or read from dsn_file; it may hold a password, so it is
    # kept out of repr() and never logged (dsn.redact)
    dsn: str | None = field(default=None, repr=False)
    dsn_file: Path | None = None


@dataclass(frozen=True)
class ClusterConfig:
    """Several nodes over PostgreSQL (SPEC §10)."""

    lease_s: float = 30.0  # a claimed delivery's lease, renewed by heartbeat every lease/3


@dataclass(frozen=True)
class AuthConfig:
    jwt_secret: str | None = None
    jwt_secret_file: Path | None = None
    jwt_public_key_file: Path | None = None
    algorithms: tuple[str, ...] = ("HS256",)
    issuer: str = ""
    audience: str = ""
    leeway_s: float = 30.0


@dataclass(frozen=True)
class DeliveryConfig:
    timeout_s: float = 5.0
    retry_schedule_s: tuple[float, ...] = (30.0, 300.0, 1800.0, 7200.0)
    retry_jitter: float = 0.0
    concurrency: int = 256
    per_webhook_concurrency: int = 16
    require_https: bool = True
    allow_networks: tuple[Network, ...] = ()
    ca_file: Path | None = None
    max_response: int = 64 * 1024
    # below Node's 5 s keep-alive: we close an idle connection before the receiver does
    idle_timeout_s: float = 4.0
    disable_after_s: float = 5 * 86400.0


@dataclass(frozen=True)
class StaticWebhook:
    session: str
    url: str
    events: tuple[str, ...]
    secret: str | None
    secret_file: Path | None
    headers: tuple[tuple[str, str], ...] = ()
    # SPEC §8, as for the API's webhooks (rules.py checks both)
    description: str | None = None
    filter_chats: tuple[str, ...] | None = None
    ordering: str = "none"
    rate_limit: int | None = None

    @property
    def key(self) -> str:
        """Stable identity of this config-file webhook across reloads."""
        digest = hashlib.sha256(f"{self.session}\n{self.url}".encode()).hexdigest()
        return "static:" + digest[:16]


@dataclass(frozen=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "text"


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    storage: StorageConfig
    auth: AuthConfig
    delivery: DeliveryConfig
    webhooks: tuple[StaticWebhook, ...]
    log: LogConfig
    source: Path | None
    cluster: ClusterConfig = ClusterConfig()


def default_config() -> Config:
    """The embedded defaults, with data kept under ./wahookd-data/."""
    return parse_config_text("", source=None, base_dir=Path.cwd())


def find_config_path(cli_path: str | None, environ: Mapping[str, str]) -> Path | None:
    """Pick the config file: -c, $WAHOOKD_CONFIG, ./wahookd.toml, /etc/wahookd/wahookd.toml."""
    for explicit, origin in ((cli_path, "-c"), (environ.get("WAHOOKD_CONFIG"), "$WAHOOKD_CONFIG")):
        if explicit:
            if not Path(explicit).exists():
                raise ConfigError([f"{explicit}: cannot read config: no such file (from {origin})"])
            return Path(explicit)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return toml.absolute(candidate)
    return None


def load_config(path: Path | None, *, check_files: bool = True) -> Config:
    """Read and validate a config file (None: the embedded defaults); raise ConfigError."""
    if path is None:
        return default_config()
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: not UTF-8 ({exc.reason})"]) from None
    base_dir = toml.absolute(path).parent
    return parse_config_text(text, source=path, base_dir=base_dir, check_files=check_files)


def parse_config_text(
    text: str, *, source: Path | None, base_dir: Path, check_files: bool = True
) -> Config:
    """Validate TOML text; relative paths resolve against base_dir; raise ConfigError."""
    where = str(source) if source is not None else "<defaults>"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: invalid TOML: {exc}"]) from None
    ctx = toml.Context(where, toml.absolute(base_dir), check_files, [])
    for name in doc:
        if name not in _SECTIONS:
            known = ", ".join(_SECTIONS)
            ctx.errors.append(f"{where}: {name}: unknown section [{name}]; known: {known}")
    # Sections are read in file order so the error list reads top to bottom.
    server = _server(ctx.section(doc, "server"), ctx)
    storage = _storage(ctx.section(doc, "storage"), ctx)
    auth = _auth(ctx.section(doc, "auth"), ctx)
    delivery = _delivery(ctx.section(doc, "delivery"), ctx)
    webhooks = _webhooks(doc.get("webhook", []), ctx, delivery)
    log = _log(ctx.section(doc, "log"))
    cluster = _cluster(ctx.section(doc, "cluster"))
    source = toml.absolute(source) if source is not None else None
    config = Config(server, storage, auth, delivery, webhooks, log, source, cluster)
    if ctx.errors:
        raise ConfigError(ctx.errors)
    return config


def parse_listen(value: str) -> Listen:
    """Parse "HOST:PORT", "[IPv6]:PORT" or "unix:/path"; raise ValueError."""
    if value.startswith("unix:"):
        path = value.removeprefix("unix:")
        if not path or "\x00" in path:
            raise ValueError(f"invalid listen address {value!r}: socket path is empty or has NUL")
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            raise ValueError(f"unix socket path longer than {_SUN_PATH_MAX} bytes: {path!r}")
        return Listen(None, None, path)
    host, _, port_text = value.rpartition(":")
    bad = ValueError(f"invalid listen address {value!r}; {LISTEN_HELP}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad from None
    elif ":" in host:
        raise ValueError(f"invalid listen address {value!r}: put IPv6 addresses in brackets")
    elif not _HOSTNAME_RE.fullmatch(host):
        raise bad
    if not (port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535):
        raise ValueError(f"invalid listen address {value!r}: port must be 0-65535")
    return Listen(host, int(port_text))


# --- reading tables -------------------------------------------------------------------------

_SECTIONS: Final = ("server", "storage", "auth", "delivery", "webhook", "log", "cluster")


def _listen(base_dir: Path) -> Callable[[object], Listen]:
    def convert(value: object) -> Listen:
        listen = parse_listen(toml.string(value))
        if listen.unix_path is None:
            return listen
        return parse_listen(f"unix:{toml.absolute(base_dir / listen.unix_path)}")  # recheck length

    return convert


# --- sections -------------------------------------------------------------------------------


def _server(t: toml.Table, ctx: toml.Context) -> ServerConfig:
    server = ServerConfig(
        listen=t.get("listen", _listen(ctx.base_dir), ServerConfig.listen),
        max_body=t.get("max_body", toml.positive(toml.size), ServerConfig.max_body),
        shutdown_grace_s=t.get("shutdown_grace", toml.duration, ServerConfig.shutdown_grace_s),
        pin_cpu=t.get("pin_cpu", parse_pin_cpu, ServerConfig.pin_cpu),
    )
    t.done()
    return server


def _storage(t: toml.Table, ctx: toml.Context) -> StorageConfig:
    # The default lives under the working directory, not beside the config file (SPEC §1).
    default_path = Path.cwd() / "wahookd-data" / "wahookd.db"
    storage = StorageConfig(
        path=t.get("path", toml.path_of(ctx.base_dir, optional=False), None) or default_path,
        synchronous=cast(
            Synchronous, t.get("synchronous", toml.choice(get_args(Synchronous)), "full")
        ),
        keep_finished_s=t.get("keep_finished", toml.duration, StorageConfig.keep_finished_s),
        backend=cast(StorageBackend, t.get("backend", toml.choice(STORAGE_BACKENDS), "sqlite")),
        dsn=t.get("dsn", lambda value: dsn.check(toml.string(value)), None),
        dsn_file=t.file("dsn_file"),
    )
    _check_dsn(t, ctx, storage)
    t.done()
    return storage


def _check_dsn(t: toml.Table, ctx: toml.Context, storage: StorageConfig) -> None:
    """Exactly one of dsn and dsn_file with backend = "postgres", neither with SQLite."""
    if "dsn" in t.failed or "dsn_file" in t.failed:
        return
    given = [key for key in ("dsn", "dsn_file") if getattr(storage, key) is not None]
    if storage.backend == "postgres":
        if not given:
            t.error("backend", '"postgres" needs storage.dsn or storage.dsn_file')
        elif len(given) == 2:
            t.error("dsn", "set storage.dsn or storage.dsn_file, not both")
        elif storage.dsn_file is not None and ctx.check_files:
            try:
                dsn.read_file(storage.dsn_file)
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                t.error("dsn_file", str(exc))
    else:
        for key in given:
            t.error(
                key, f'only used with storage.backend = "postgres" (backend is "{storage.backend}")'
            )


def _cluster(t: toml.Table) -> ClusterConfig:
    lease_s = t.get("lease", toml.positive(toml.duration), ClusterConfig.lease_s)
    if "lease" not in t.failed and lease_s < MIN_LEASE_S:
        t.error("lease", f"must be at least {MIN_LEASE_S:g}s (heartbeats come every lease/3)")
        lease_s = ClusterConfig.lease_s
    cluster = ClusterConfig(lease_s=lease_s)
    t.done()
    return cluster


def _auth(t: toml.Table, ctx: toml.Context) -> AuthConfig:
    secret = t.get("jwt_secret", toml.string, None)
    secret_file = t.file("jwt_secret_file")
    public_key_file = t.file("jwt_public_key_file")
    algorithms = t.get("algorithms", toml.array(_algorithm), AuthConfig.algorithms)
    auth = AuthConfig(
        jwt_secret=secret,
        jwt_secret_file=secret_file,
        jwt_public_key_file=public_key_file,
        algorithms=tuple(dict.fromkeys(algorithms)),  # drop repeats, keep the operator's order
        issuer=t.get("issuer", toml.string, ""),
        audience=t.get("audience", toml.string, ""),
        leeway_s=t.get("leeway", toml.duration, AuthConfig.leeway_s),
    )
    t.done()
    if secret == "":
        t.error("jwt_secret", "must not be empty (leave it out to use a generated secret)")
    if secret is not None and secret_file is not None:
        t.error("jwt_secret", "set either jwt_secret or jwt_secret_file, not both")
    if not algorithms and "algorithms" in t.data:
        t.error("algorithms", f"must name at least one of: {', '.join(JWT_ALGORITHMS)}")
    asymmetric = [a for a in algorithms if a in ASYMMETRIC_ALGORITHMS]
    if asymmetric and public_key_file is None:
        t.error("jwt_public_key_file", f"required by algorithms {', '.join(asymmetric)}")
    if public_key_file is not None and not asymmetric:
        # Otherwise the key would be silently unused and every external token rejected.
        t.error("algorithms", "jwt_public_key_file is set but no RS*/ES*/PS*/EdDSA algorithm is")
    return auth


def _algorithm(value: object) -> str:
    name = toml.string(value)
    if name.lower() == "none":
        raise ValueError("algorithm 'none' is never accepted")
    if name not in JWT_ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(JWT_ALGORITHMS)}")
    return name


def _jitter(value: object) -> float:
    toml.expect(value, (int, float), "a number")
    if not 0 <= cast(float, value) < 1:
        raise ValueError(f"must be at least 0 and below 1 (0.2 = ±20 %), got {value}")
    return float(cast(float, value))


def _delivery(t: toml.Table, ctx: toml.Context) -> DeliveryConfig:
    d = DeliveryConfig
    delivery = DeliveryConfig(
        timeout_s=t.get("timeout", toml.positive(toml.duration), d.timeout_s),
        retry_schedule_s=t.get("retry_schedule", toml.array(toml.duration), d.retry_schedule_s),
        retry_jitter=t.get("retry_jitter", _jitter, d.retry_jitter),
        concurrency=t.get("concurrency", toml.positive(toml.integer), d.concurrency),
        per_webhook_concurrency=t.get(
            "per_webhook_concurrency", toml.positive(toml.integer), d.per_webhook_concurrency
        ),
        require_https=t.get("require_https", toml.boolean, d.require_https),
        allow_networks=t.get("allow_networks", toml.array(toml.network), d.allow_networks),
        ca_file=t.file("ca_file"),
        max_response=t.get("max_response", toml.size, d.max_response),
        idle_timeout_s=t.get("idle_timeout", toml.positive(toml.duration), d.idle_timeout_s),
        disable_after_s=t.get("disable_after", toml.duration, d.disable_after_s),
    )
    t.done()
    if delivery.ca_file is not None and ctx.check_files and "ca_file" not in t.failed:
        try:
            # A bare context: only the bundle is parsed, the system store is not loaded.
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(delivery.ca_file)
        except ssl.SSLError as exc:
            t.error("ca_file", f"not a PEM CA bundle: {exc.reason or exc}")
    return delivery


def _log(t: toml.Table) -> LogConfig:
    log = LogConfig(
        level=cast(LogLevel, t.get("level", toml.choice(LOG_LEVELS), "info")),
        format=cast(LogFormat, t.get("format", toml.choice(LOG_FORMATS), "text")),
    )
    t.done()
    return log


def _webhooks(
    value: object, ctx: toml.Context, delivery: DeliveryConfig
) -> tuple[StaticWebhook, ...]:
    if not (isinstance(value, list) and all(isinstance(item, dict) for item in value)):
        got = toml.toml_type(value)
        ctx.errors.append(f"{ctx.where}: webhook: expected [[webhook]] tables, got {got}")
        return ()
    hooks: list[StaticWebhook] = []
    first_index: dict[str, int] = {}
    for index, data in enumerate(value):
        t = toml.Table(ctx, f"webhook[{index}]", "[[webhook]]", data)
        hook = _webhook(t, ctx, delivery)
        if hook is None:
            continue
        if hook.key in first_index:  # the key is the webhook's identity, so it must be unique
            t.error("url", f"same session and url as webhook[{first_index[hook.key]}]")
            continue
        first_index[hook.key] = index
        hooks.append(hook)
    return tuple(hooks)


def _webhook(t: toml.Table, ctx: toml.Context, delivery: DeliveryConfig) -> StaticWebhook | None:
    session = t.get("session", _session, None)
    url = t.get("url", _url(delivery), None)
    events = t.get("events", _events, None)
    secret = t.get("secret", _secret, None)
    secret_file = t.file("secret_file")
    headers: tuple[tuple[str, str], ...] = t.get("headers", _headers, ())
    description = t.get("description", _rule(check_description), None)
    filter_chats = t.get("filter", _rule(check_filter), None)
    ordering = t.get("ordering", _rule(check_ordering), "none")
    rate_limit = t.get("rate_limit", _rule(check_rate_limit), None)
    t.done()
    for key in ("session", "url", "events"):
        if key not in t.data:
            t.error(key, "required in every [[webhook]]")
    if secret is not None and secret_file is not None:
        t.error("secret", "set either secret or secret_file, not both")
    elif secret_file is not None and ctx.check_files and "secret_file" not in t.failed:
        try:
            secret = _secret(_read_secret_file(secret_file))
        except ValueError as exc:
            t.error("secret_file", f"'{secret_file}': {exc}")
    if t.failed or session is None or url is None or events is None:
        return None
    return StaticWebhook(
        session,
        url,
        events,
        secret,
        secret_file,
        headers,
        description,
        filter_chats,
        ordering,
        rate_limit,
    )


def _rule(check: Callable[[object], _T]) -> Callable[[object], _T]:
    """A rules.py check as a config converter: its message without the API's field name."""

    def convert(value: object) -> _T:
        try:
            return check(value)
        except RuleError as exc:
            raise ValueError(exc.message) from None

    return convert


def _read_secret_file(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("secret is not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"cannot read file: {exc.strerror or exc}") from None
    # Editors and `echo > file` add one newline that is not part of the secret.
    return text.removesuffix("\n").removesuffix("\r")


def _session(value: object) -> str:
    if (session := toml.string(value)) != "*" and not is_session_id(session):
        raise ValueError(f'invalid session id {value!r}; use "*" or {SESSION_ID_RULE}')
    return session


def _secret(value: object) -> str:
    secret = toml.string(value)
    try:
        check_secret(secret)
    except RuleError:
        raise ValueError(f"secret must be 1-256 characters, got {len(secret)}") from None
    return secret


def _event(value: object) -> str:
    try:
        return check_event(toml.string(value), "")
    except RuleError as exc:
        raise ValueError(exc.message) from None


def _events(value: object) -> tuple[str, ...]:
    events = toml.array(_event)(value)
    if not events:
        raise ValueError('must name at least one event type, or ["*"] for all')
    return tuple(dict.fromkeys(events))


def _url(delivery: DeliveryConfig) -> Callable[[object], str]:
    def convert(value: object) -> str:
        # The same rules as PUT /api/webhook/config, so static and API webhooks are alike.
        url = toml.string(value)
        try:
            check_url(
                url, require_https=delivery.require_https, allow_networks=delivery.allow_networks
            )
        except RuleError as exc:
            if exc.rule == "url_not_https":  # the https rule names its config key
                raise ValueError(f"{url!r} is not https; {REQUIRE_HTTPS_HINT}") from None
            raise ValueError(f"{exc.message}: {url!r}") from None
        return url

    return convert


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    toml.expect(value, dict, 'a table like {X-Api-Key = "..."}')
    headers = cast(dict[str, object], value)
    try:
        check_header_count(len(headers))
    except RuleError as exc:
        raise ValueError(exc.message) from None
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, header_value in headers.items():
        if problem := _header_problem(name, header_value, seen):
            problems.append((f".{name}", problem))
        seen.add(name.lower())
    if problems:
        raise toml.PartError(problems)
    return tuple(cast(dict[str, str], headers).items())


# the config file's wording of the header rules (rules.py words them for the API)
_OWNED_BY_WAHOOKD: Final = (
    f"set or controlled by wahookd itself; not allowed: {RESERVED_HEADERS_TEXT}"
)
_HEADER_WORDING: Final[dict[str, str]] = {
    "header_name": f"invalid header name: use {HEADER_NAME_TEXT}",
    "header_reserved": _OWNED_BY_WAHOOKD,
    "header_connection": _OWNED_BY_WAHOOKD,
}


def _header_problem(name: str, value: object, seen: set[str]) -> str | None:
    try:
        check_header(name, value, seen)
    except RuleError as exc:
        if exc.rule == "header_value" and not isinstance(value, str):
            return f"expected a string, got {toml.toml_type(value)}"
        return _HEADER_WORDING.get(exc.rule, exc.message)
    return None
