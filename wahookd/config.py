"""The TOML config file (SPEC §2) turned into frozen dataclasses, validated once."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit

from wahookd.delivery.netpolicy import Network, RefusedTarget, check_url
from wahookd.events import EVENT_TYPES, is_session_id
from wahookd.units import parse_duration, parse_size

Synchronous = Literal["full", "normal"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
LOG_LEVELS: Final[tuple[LogLevel, ...]] = get_args(LogLevel)
LOG_FORMATS: Final[tuple[LogFormat, ...]] = get_args(LogFormat)
SYMMETRIC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
ASYMMETRIC_ALGORITHMS: Final = (*RSA_ALGORITHMS, "ES256", "ES384", "ES512", "EdDSA")
JWT_ALGORITHMS: Final = SYMMETRIC_ALGORITHMS + ASYMMETRIC_ALGORITHMS
MAX_WEBHOOK_HEADERS: Final = 16
DEFAULT_CONFIG_PATHS: Final = (Path("wahookd.toml"), Path("/etc/wahookd/wahookd.toml"))

LISTEN_HELP: Final = 'use "HOST:PORT", "[IPv6]:PORT" or "unix:/path/to/socket"'
# after a refused http:// URL: check-config (static webhooks) and `wahookd test-webhook`
REQUIRE_HTTPS_HINT: Final = "set delivery.require_https = false to allow"
_HOSTNAME_RE: Final = re.compile(
    r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?"
)
_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE_BAD_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers wahookd sets itself: letting a webhook override them would break signing or framing.
SET_BY_WAHOOKD: Final = frozenset({"content-type", "user-agent", "host", "content-length"})
RESERVED_HEADER_PREFIXES: Final = ("x-webhook-", "webhook-")
# Headers that control the connection or the message framing (RFC 9110 7.6.1, RFC 9112):
# a webhook's `Transfer-Encoding: chunked` next to our Content-Length, say, makes every
# request one the receiver must refuse.
CONNECTION_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
RESERVED_HEADERS_TEXT: Final = (
    "Content-Type, User-Agent, Host, Content-Length, X-Webhook-*, webhook-*, and the"
    " connection headers Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, TE,"
    " Trailer, Upgrade, Expect"
)


def reserved_header(name: str) -> bool:
    """True when a webhook may not set this header (any case): see RESERVED_HEADERS_TEXT."""
    lower = name.lower()
    return (
        lower in SET_BY_WAHOOKD
        or lower in CONNECTION_HEADERS
        or lower.startswith(RESERVED_HEADER_PREFIXES)
    )


_SUN_PATH_MAX: Final = 107  # sockaddr_un.sun_path is 108 bytes including the NUL on Linux

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


@dataclass(frozen=True)
class StorageConfig:
    path: Path
    synchronous: Synchronous = "full"
    keep_finished_s: float = 7 * 86400.0


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
    disable_after_s: float = 5 * 86400.0


@dataclass(frozen=True)
class StaticWebhook:
    session: str
    url: str
    events: tuple[str, ...]
    secret: str | None
    secret_file: Path | None
    headers: tuple[tuple[str, str], ...] = ()

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
            return _absolute(candidate)
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
    base_dir = _absolute(path).parent
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
    ctx = _Context(where, _absolute(base_dir), check_files, [])
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
    source = _absolute(source) if source is not None else None
    config = Config(server, storage, auth, delivery, webhooks, log, source)
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

_SECTIONS: Final = ("server", "storage", "auth", "delivery", "webhook", "log")
_TOML_TYPES: Final = {"bool": "boolean", "int": "integer", "str": "string", "list": "array"}


def _toml_type(value: object) -> str:
    name = type(value).__name__
    return "table" if isinstance(value, dict) else _TOML_TYPES.get(name, name)


@dataclass
class _Context:
    where: str
    base_dir: Path
    check_files: bool
    errors: list[str]

    def section(self, doc: Mapping[str, object], name: str) -> _Table:
        data = doc.get(name, {})
        if not isinstance(data, dict):
            self.errors.append(f"{self.where}: {name}: expected a table, got {_toml_type(data)}")
            data = {}
        return _Table(self, name, f"[{name}]", data)


class _Table:
    """One TOML table being read; problems are recorded, not raised, so all get reported."""

    def __init__(self, ctx: _Context, name: str, header: str, data: Mapping[str, object]) -> None:
        self.ctx, self.name, self.header, self.data = ctx, name, header, data
        self.known: list[str] = []
        self.failed: set[str] = set()

    def error(self, key: str, problem: str) -> None:
        self.failed.add(key)
        self.ctx.errors.append(f"{self.ctx.where}: {self.name}.{key}: {problem}")

    def get(self, key: str, convert: Callable[[object], _T], default: _T) -> _T:
        self.known.append(key)
        if key not in self.data:
            return default
        try:
            return convert(self.data[key])
        except _PartError as exc:
            for suffix, problem in exc.parts:
                self.error(key + suffix, problem)
        except ValueError as exc:
            self.error(key, str(exc))
        return default

    def done(self) -> None:
        """Report keys nobody asked for; the known list comes from the keys actually read."""
        for key in self.data:
            if key not in self.known:
                known = ", ".join(self.known)
                self.error(key, f"unknown key {key!r} in {self.header}; known: {known}")

    def file(self, key: str) -> Path | None:
        """An optional file ("" = unset), resolved and, with check_files, proven readable."""
        path = self.get(key, _path(self.ctx.base_dir, optional=True), None)
        if path is not None and self.ctx.check_files:
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                self.error(key, f"cannot read file '{path}': {exc.strerror or exc}")
        return path


class _PartError(ValueError):
    """Bad array elements or table entries: each reported as key[1] or key.Name."""

    def __init__(self, parts: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(problem for _, problem in parts))
        self.parts = parts


def _expect(value: object, types: type | tuple[type, ...], expected: str) -> None:
    # bool is an int subclass in Python, but `true` is never a number in TOML and vice versa.
    if not isinstance(value, types) or isinstance(value, bool) != (types is bool):
        raise ValueError(f"expected {expected}, got {_toml_type(value)}")


def _absolute(path: Path) -> Path:
    # Lexical, unlike Path.resolve(): "../x" is tidied but symlinks stay as the operator wrote.
    return Path(os.path.abspath(path))


def _string(value: object) -> str:
    _expect(value, str, "a string")
    return cast(str, value)


def _boolean(value: object) -> bool:
    _expect(value, bool, "true or false")
    return cast(bool, value)


def _integer(value: object) -> int:
    _expect(value, int, "an integer")
    return cast(int, value)


def _duration(value: object) -> float:
    _expect(value, (str, int, float), 'a duration like "30s" or a number of seconds')
    return parse_duration(value)


def _size(value: object) -> int:
    _expect(value, (str, int), 'a size like "64KiB" or a number of bytes')
    return parse_size(value)


def _positive(convert: Callable[[object], _N]) -> Callable[[object], _N]:
    def check(value: object) -> _N:
        result = convert(value)
        if result <= 0:
            raise ValueError(f"must be greater than 0, got {value!r}")
        return result

    return check


def _path(base_dir: Path, *, optional: bool) -> Callable[[object], Path | None]:
    def convert(value: object) -> Path | None:
        if (text := _string(value)) == "" and optional:
            return None
        if text == "":
            raise ValueError("must not be empty")
        return _absolute(base_dir / text)  # an absolute text replaces base_dir

    return convert


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if (text := _string(value)) not in options:
            raise ValueError(f"unknown value {text!r}; use one of: {', '.join(options)}")
        return text

    return convert


def _array(item: Callable[[object], _T]) -> Callable[[object], tuple[_T, ...]]:
    def convert(value: object) -> tuple[_T, ...]:
        _expect(value, list, "an array")
        items, problems = [], []
        for index, element in enumerate(cast(list[object], value)):
            try:
                items.append(item(element))
            except ValueError as exc:
                problems.append((f"[{index}]", str(exc)))
        if problems:
            raise _PartError(problems)
        return tuple(items)

    return convert


def _network(value: object) -> Network:
    try:
        return ipaddress.ip_network(_string(value), strict=False)
    except ValueError:
        raise ValueError(f'invalid CIDR {value!r}; use e.g. "127.0.0.0/8" or "fd00::/8"') from None


def _listen(base_dir: Path) -> Callable[[object], Listen]:
    def convert(value: object) -> Listen:
        listen = parse_listen(_string(value))
        if listen.unix_path is None:
            return listen
        return parse_listen(f"unix:{_absolute(base_dir / listen.unix_path)}")  # recheck length

    return convert


# --- sections -------------------------------------------------------------------------------


def _server(t: _Table, ctx: _Context) -> ServerConfig:
    server = ServerConfig(
        listen=t.get("listen", _listen(ctx.base_dir), ServerConfig.listen),
        max_body=t.get("max_body", _positive(_size), ServerConfig.max_body),
        shutdown_grace_s=t.get("shutdown_grace", _duration, ServerConfig.shutdown_grace_s),
    )
    t.done()
    return server


def _storage(t: _Table, ctx: _Context) -> StorageConfig:
    # The default lives under the working directory, not beside the config file (SPEC §1).
    default_path = Path.cwd() / "wahookd-data" / "wahookd.db"
    storage = StorageConfig(
        path=t.get("path", _path(ctx.base_dir, optional=False), None) or default_path,
        synchronous=cast(Synchronous, t.get("synchronous", _choice(get_args(Synchronous)), "full")),
        keep_finished_s=t.get("keep_finished", _duration, StorageConfig.keep_finished_s),
    )
    t.done()
    return storage


def _auth(t: _Table, ctx: _Context) -> AuthConfig:
    secret = t.get("jwt_secret", _string, None)
    secret_file = t.file("jwt_secret_file")
    public_key_file = t.file("jwt_public_key_file")
    algorithms = t.get("algorithms", _array(_algorithm), AuthConfig.algorithms)
    auth = AuthConfig(
        jwt_secret=secret,
        jwt_secret_file=secret_file,
        jwt_public_key_file=public_key_file,
        algorithms=tuple(dict.fromkeys(algorithms)),  # drop repeats, keep the operator's order
        issuer=t.get("issuer", _string, ""),
        audience=t.get("audience", _string, ""),
        leeway_s=t.get("leeway", _duration, AuthConfig.leeway_s),
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
    name = _string(value)
    if name.lower() == "none":
        raise ValueError("algorithm 'none' is never accepted")
    if name not in JWT_ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(JWT_ALGORITHMS)}")
    return name


def _jitter(value: object) -> float:
    _expect(value, (int, float), "a number")
    if not 0 <= cast(float, value) < 1:
        raise ValueError(f"must be at least 0 and below 1 (0.2 = ±20 %), got {value}")
    return float(cast(float, value))


def _delivery(t: _Table, ctx: _Context) -> DeliveryConfig:
    d = DeliveryConfig
    delivery = DeliveryConfig(
        timeout_s=t.get("timeout", _positive(_duration), d.timeout_s),
        retry_schedule_s=t.get("retry_schedule", _array(_duration), d.retry_schedule_s),
        retry_jitter=t.get("retry_jitter", _jitter, d.retry_jitter),
        concurrency=t.get("concurrency", _positive(_integer), d.concurrency),
        per_webhook_concurrency=t.get(
            "per_webhook_concurrency", _positive(_integer), d.per_webhook_concurrency
        ),
        require_https=t.get("require_https", _boolean, d.require_https),
        allow_networks=t.get("allow_networks", _array(_network), d.allow_networks),
        ca_file=t.file("ca_file"),
        max_response=t.get("max_response", _size, d.max_response),
        disable_after_s=t.get("disable_after", _duration, d.disable_after_s),
    )
    t.done()
    if delivery.ca_file is not None and ctx.check_files and "ca_file" not in t.failed:
        try:
            # A bare context: only the bundle is parsed, the system store is not loaded.
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(delivery.ca_file)
        except ssl.SSLError as exc:
            t.error("ca_file", f"not a PEM CA bundle: {exc.reason or exc}")
    return delivery


def _log(t: _Table) -> LogConfig:
    log = LogConfig(
        level=cast(LogLevel, t.get("level", _choice(LOG_LEVELS), "info")),
        format=cast(LogFormat, t.get("format", _choice(LOG_FORMATS), "text")),
    )
    t.done()
    return log


def _webhooks(value: object, ctx: _Context, delivery: DeliveryConfig) -> tuple[StaticWebhook, ...]:
    if not (isinstance(value, list) and all(isinstance(item, dict) for item in value)):
        got = _toml_type(value)
        ctx.errors.append(f"{ctx.where}: webhook: expected [[webhook]] tables, got {got}")
        return ()
    hooks: list[StaticWebhook] = []
    first_index: dict[str, int] = {}
    for index, data in enumerate(value):
        t = _Table(ctx, f"webhook[{index}]", "[[webhook]]", data)
        hook = _webhook(t, ctx, delivery)
        if hook is None:
            continue
        if hook.key in first_index:  # the key is the webhook's identity, so it must be unique
            t.error("url", f"same session and url as webhook[{first_index[hook.key]}]")
            continue
        first_index[hook.key] = index
        hooks.append(hook)
    return tuple(hooks)


def _webhook(t: _Table, ctx: _Context, delivery: DeliveryConfig) -> StaticWebhook | None:
    session = t.get("session", _session, None)
    url = t.get("url", _url(delivery), None)
    events = t.get("events", _events, None)
    secret = t.get("secret", _secret, None)
    secret_file = t.file("secret_file")
    headers: tuple[tuple[str, str], ...] = t.get("headers", _headers, ())
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
    return StaticWebhook(session, url, events, secret, secret_file, headers)


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
    if (session := _string(value)) != "*" and not is_session_id(session):
        raise ValueError(
            f'invalid session id {value!r}; use "*" or 1-128 characters of A-Z a-z 0-9 . _ : @ -'
        )
    return session


def _secret(value: object) -> str:
    if not 1 <= len(secret := _string(value)) <= 256:
        raise ValueError(f"secret must be 1-256 characters, got {len(secret)}")
    return secret


def _event(value: object) -> str:
    if (event := _string(value)) != "*" and event not in EVENT_TYPES:
        known = ", ".join(EVENT_TYPES)
        raise ValueError(f'unknown event type {event!r}; known: {known}, or "*" for all')
    return event


def _events(value: object) -> tuple[str, ...]:
    events = _array(_event)(value)
    if not events:
        raise ValueError('must name at least one event type, or ["*"] for all')
    return tuple(dict.fromkeys(events))


def _url(delivery: DeliveryConfig) -> Callable[[object], str]:
    def convert(value: object) -> str:
        # The same rules as PUT /api/webhook/config, so static and API webhooks are alike.
        url = _string(value)
        try:
            # the https rule below names its config key
            check_url(url, require_https=False, allow_networks=delivery.allow_networks)
        except RefusedTarget as exc:
            raise ValueError(f"{exc}: {url!r}") from None
        if delivery.require_https and urlsplit(url).scheme != "https":
            raise ValueError(f"{url!r} is not https; {REQUIRE_HTTPS_HINT}")
        return url

    return convert


def _headers(value: object) -> tuple[tuple[str, str], ...]:
    _expect(value, dict, 'a table like {X-Api-Key = "..."}')
    headers = cast(dict[str, object], value)
    if len(headers) > MAX_WEBHOOK_HEADERS:
        raise ValueError(f"at most {MAX_WEBHOOK_HEADERS} headers, got {len(headers)}")
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, header_value in headers.items():
        if problem := _header_problem(name, header_value, seen):
            problems.append((f".{name}", problem))
        seen.add(name.lower())
    if problems:
        raise _PartError(problems)
    return tuple(cast(dict[str, str], headers).items())


def _header_problem(name: str, value: object, seen: set[str]) -> str | None:
    lower = name.lower()
    if not _HEADER_NAME_RE.fullmatch(name):
        return "invalid header name: use letters, digits and !#$%&'*+-.^_`|~"
    if reserved_header(name):
        return f"set or controlled by wahookd itself; not allowed: {RESERVED_HEADERS_TEXT}"
    if lower in seen:
        return "given twice (header names ignore case)"
    if not isinstance(value, str):
        return f"expected a string, got {_toml_type(value)}"
    if _HEADER_VALUE_BAD_RE.search(value):
        return "value contains CR, LF or another control character"
    return None
