"""The TOML config file: defaults, parsing, validation and lookup (wahookd.config)."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from pathlib import Path

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from wahookd import config as config_module
from wahookd.config import (
    AuthConfig,
    Config,
    ConfigError,
    DeliveryConfig,
    Listen,
    LogConfig,
    ServerConfig,
    StaticWebhook,
    default_config,
    find_config_path,
    load_config,
    parse_config_text,
    parse_listen,
)
from wahookd.units import format_duration

WEBHOOK = """
[[webhook]]
session = "sales-1"
url = "https://crm.example.com/wa-events"
events = ["message.received"]
"""


def write(tmp_path: Path, text: str, name: str = "wahookd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, *, check_files: bool = True) -> Config:
    return load_config(write(tmp_path, text), check_files=check_files)


def errors(tmp_path: Path, text: str, *, check_files: bool = True) -> list[str]:
    """Load text as a config file that must fail; return its errors."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, check_files=check_files)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def only_error(tmp_path: Path, text: str, key: str, *, check_files: bool = True) -> str:
    """The single error of a config, checked to name the file and key; returns the problem."""
    found = errors(tmp_path, text, check_files=check_files)
    assert len(found) == 1, found
    prefix = f"{tmp_path / 'wahookd.toml'}: {key}: "
    assert found[0].startswith(prefix), found[0]
    return found[0].removeprefix(prefix)


# --- defaults --------------------------------------------------------------------------------


def test_default_config_keeps_data_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = default_config()
    assert config.source is None
    assert config.storage.path == tmp_path / "wahookd-data" / "wahookd.db"
    assert config.storage.path.is_absolute()
    assert str(config.server.listen) == "127.0.0.1:8787"
    assert config.server == ServerConfig(Listen("127.0.0.1", 8787, None), 1048576, 10.0)
    assert config.storage.synchronous == "full"
    assert config.storage.keep_finished_s == 7 * 86400
    assert config.auth == AuthConfig()
    assert config.auth.algorithms == ("HS256",)
    assert config.auth.leeway_s == 30.0
    assert config.delivery == DeliveryConfig()
    assert config.delivery.retry_schedule_s == (30.0, 300.0, 1800.0, 7200.0)
    assert config.delivery.timeout_s == 5.0
    assert config.delivery.concurrency == 256
    assert config.delivery.per_webhook_concurrency == 16
    assert config.delivery.require_https is True
    assert config.delivery.max_response == 65536
    assert config.delivery.disable_after_s == 5 * 86400
    assert config.webhooks == ()
    assert config.log == LogConfig("info", "text")
    assert load_config(None) == config


def test_empty_file_gives_the_defaults_with_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load(tmp_path, "")
    assert config.source == tmp_path / "wahookd.toml"
    assert dataclasses.replace(config, source=None) == default_config()


def test_config_values_are_frozen() -> None:
    config = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.delivery.timeout_s = 1.0  # type: ignore[misc]


# --- every key -------------------------------------------------------------------------------


def test_every_key_is_parsed(tmp_path: Path) -> None:
    (tmp_path / "jwt.secret").write_text("s3cret\n")
    (tmp_path / "hook.secret").write_text("hook-secret\n")
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    config = load(
        tmp_path,
        """
        [server]
        listen = "[::1]:9000"
        max_body = "2MiB"
        shutdown_grace = "30s"
        pin_cpu = 1

        [storage]
        path = "data/w.db"
        synchronous = "normal"
        keep_finished = "1d"

        [auth]
        jwt_secret_file = "jwt.secret"
        algorithms = ["HS512", "HS256", "HS512"]
        issuer = "gateway"
        audience = "wahookd"
        leeway = "1m"

        [delivery]
        timeout = "2.5s"
        retry_schedule = ["0s", "10s", 60]
        retry_jitter = 0.2
        concurrency = 8
        per_webhook_concurrency = 32
        require_https = false
        allow_networks = ["127.0.0.1/8", "fd00::/8"]
        ca_file = "ca.pem"
        max_response = 4096
        disable_after = "2d"

        [[webhook]]
        session = "*"
        url = "http://127.0.0.1:8080/hook"
        events = ["*"]
        secret_file = "hook.secret"
        headers = {X-Api-Key = "k1", Authorization = "Bearer abc"}

        [[webhook]]
        session = "sales-1"
        url = "https://crm.example.com/wa"
        events = ["message.received", "session.connected", "message.received"]
        secret = "inline"

        [log]
        level = "debug"
        format = "json"
        """,
    )
    assert config.server == ServerConfig(Listen("::1", 9000, None), 2 * 1024 * 1024, 30.0, 1)
    assert config.storage.path == tmp_path / "data" / "w.db"
    assert config.storage.synchronous == "normal"
    assert config.storage.keep_finished_s == 86400.0
    assert config.auth == AuthConfig(
        jwt_secret=None,
        jwt_secret_file=tmp_path / "jwt.secret",
        jwt_public_key_file=None,
        algorithms=("HS512", "HS256"),
        issuer="gateway",
        audience="wahookd",
        leeway_s=60.0,
    )
    assert config.delivery == DeliveryConfig(
        timeout_s=2.5,
        retry_schedule_s=(0.0, 10.0, 60.0),
        retry_jitter=0.2,
        concurrency=8,
        per_webhook_concurrency=32,
        require_https=False,
        allow_networks=(
            ipaddress.IPv4Network("127.0.0.0/8"),
            ipaddress.IPv6Network("fd00::/8"),
        ),
        ca_file=tmp_path / "ca.pem",
        max_response=4096,
        disable_after_s=2 * 86400.0,
    )
    assert config.webhooks == (
        StaticWebhook(
            session="*",
            url="http://127.0.0.1:8080/hook",
            events=("*",),
            secret="hook-secret",
            secret_file=tmp_path / "hook.secret",
            headers=(("X-Api-Key", "k1"), ("Authorization", "Bearer abc")),
        ),
        StaticWebhook(
            session="sales-1",
            url="https://crm.example.com/wa",
            events=("message.received", "session.connected"),
            secret="inline",
            secret_file=None,
        ),
    )
    assert config.log == LogConfig("debug", "json")


def test_spec_example_parses(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [server]
        listen = "127.0.0.1:8787"
        max_body = "1MiB"
        shutdown_grace = "10s"
        [storage]
        path = "/var/lib/wahookd/wahookd.db"
        synchronous = "full"
        keep_finished = "7d"
        [auth]
        jwt_secret_file = "/etc/wahookd/jwt.secret"
        # jwt_public_key_file = "/etc/wahookd/issuer.pem"
        algorithms = ["HS256"]
        issuer = ""
        audience = ""
        leeway = "30s"
        [delivery]
        timeout = "5s"
        retry_schedule = ["30s", "5m", "30m", "2h"]
        retry_jitter = 0.0
        concurrency = 256
        per_webhook_concurrency = 16
        require_https = true
        allow_networks = []
        ca_file = ""
        max_response = "64KiB"
        [[webhook]]
        session = "*"
        url = "https://crm.example.com/wa-events"
        events = ["message.received"]
        secret_file = "/etc/wahookd/crm.secret"
        [log]
        level = "info"
        format = "text"
        """,
        check_files=False,
    )
    assert config.storage.path == Path("/var/lib/wahookd/wahookd.db")
    assert config.auth.jwt_secret_file == Path("/etc/wahookd/jwt.secret")
    assert config.delivery == DeliveryConfig()
    assert config.delivery.ca_file is None  # "" means no extra CA bundle
    # Not read without check_files: the file need not exist on the machine that checks.
    assert config.webhooks[0].secret is None
    assert config.webhooks[0].secret_file == Path("/etc/wahookd/crm.secret")


def test_empty_retry_schedule_means_one_attempt(tmp_path: Path) -> None:
    assert load(tmp_path, "[delivery]\nretry_schedule = []").delivery.retry_schedule_s == ()


@given(st.floats(min_value=0.001, max_value=1e9, allow_nan=False))
def test_any_formatted_duration_is_read_back(seconds: float) -> None:
    text = f'[delivery]\ntimeout = "{format_duration(seconds)}"'
    config = parse_config_text(text, source=None, base_dir=Path("/"))
    assert config.delivery.timeout_s == seconds


# --- unknown keys, sections and wrong types --------------------------------------------------


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    problem = only_error(tmp_path, "[delivery]\nfoo = 1", "delivery.foo")
    assert problem == (
        "unknown key 'foo' in [delivery]; known: timeout, retry_schedule, retry_jitter, "
        "concurrency, per_webhook_concurrency, require_https, allow_networks, ca_file, "
        "max_response, idle_timeout, disable_after"
    )


def test_unknown_key_in_webhook(tmp_path: Path) -> None:
    problem = only_error(tmp_path, WEBHOOK + 'sesion = "x"', "webhook[0].sesion")
    assert problem.startswith("unknown key 'sesion' in [[webhook]]; known: session, url, events")


def test_unknown_section(tmp_path: Path) -> None:
    problem = only_error(tmp_path, "[metrics]\nport = 1", "metrics")
    assert problem == (
        "unknown section [metrics]; known: server, storage, auth, delivery, webhook, log, cluster"
    )


def test_top_level_key_is_an_unknown_section(tmp_path: Path) -> None:
    assert only_error(tmp_path, "listen = '0.0.0.0:1'", "listen").startswith("unknown section")


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert only_error(tmp_path, "server = 1", "server") == "expected a table, got integer"


def test_single_webhook_table_instead_of_array(tmp_path: Path) -> None:
    text = WEBHOOK.replace("[[webhook]]", "[webhook]")
    assert only_error(tmp_path, text, "webhook") == "expected [[webhook]] tables, got table"


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("server", "listen", "8787", "expected a string, got integer"),
        (
            "server",
            "max_body",
            "1.5",
            'expected a size like "64KiB" or a number of bytes, got float',
        ),
        ("server", "shutdown_grace", "true", "got boolean"),
        ("server", "shutdown_grace", "[1]", "got array"),
        ("storage", "path", "1", "expected a string, got integer"),
        ("storage", "synchronous", "1", "expected a string, got integer"),
        ("auth", "jwt_secret", "{a = 1}", "expected a string, got table"),
        ("auth", "algorithms", '"HS256"', "expected an array, got string"),
        ("auth", "issuer", "1", "expected a string, got integer"),
        ("auth", "leeway", "1979-05-27", "got date"),
        ("delivery", "timeout", "12:00:00", "got time"),
        ("delivery", "retry_schedule", '"30s"', "expected an array, got string"),
        ("delivery", "retry_jitter", '"0.2"', "expected a number, got string"),
        ("delivery", "retry_jitter", "true", "expected a number, got boolean"),
        ("delivery", "concurrency", '"8"', "expected an integer, got string"),
        ("delivery", "concurrency", "8.0", "expected an integer, got float"),
        ("delivery", "per_webhook_concurrency", "true", "expected an integer, got boolean"),
        ("delivery", "require_https", '"yes"', "expected true or false, got string"),
        ("delivery", "require_https", "1", "expected true or false, got integer"),
        ("delivery", "allow_networks", '"10.0.0.0/8"', "expected an array, got string"),
        ("delivery", "ca_file", "false", "expected a string, got boolean"),
        ("delivery", "max_response", "-1", "invalid size -1 (negative)"),
        ("log", "level", "1", "expected a string, got integer"),
        ("log", "format", "[]", "expected a string, got array"),
    ],
)
def test_wrong_types_name_key_and_expected_type(
    tmp_path: Path, section: str, key: str, value: str, problem: str
) -> None:
    found = only_error(tmp_path, f"[{section}]\n{key} = {value}", f"{section}.{key}")
    assert problem in found


# --- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        (
            "delivery",
            "timeout",
            '"abc"',
            'invalid duration \'abc\'; use e.g. "500ms", "30s", "5m", "2h", "7d" '
            "or a number of seconds",
        ),
        ("delivery", "timeout", '"0s"', "must be greater than 0, got '0s'"),
        ("delivery", "timeout", "-1", "invalid duration -1 (negative)"),
        ("delivery", "timeout", "nan", "invalid duration nan (not finite)"),
        ("delivery", "timeout", "inf", "invalid duration inf (not finite)"),
        ("server", "shutdown_grace", '"10 s"', "invalid duration '10 s'"),
        ("storage", "keep_finished", '"1w"', "invalid duration '1w'"),
        ("auth", "leeway", '"30S"', "invalid duration '30S'"),
        ("delivery", "disable_after", '""', "invalid duration ''"),
        ("server", "max_body", '"1 MiB"', "invalid size '1 MiB'; use e.g."),
        ("server", "max_body", '"1mb"', "invalid size '1mb'"),
        ("server", "max_body", "0", "must be greater than 0, got 0"),
        ("delivery", "max_response", '"0.5B"', "not a whole number of bytes"),
        ("delivery", "retry_jitter", "1.0", "must be at least 0 and below 1"),
        ("delivery", "retry_jitter", "-0.1", "must be at least 0 and below 1"),
        ("delivery", "concurrency", "0", "must be greater than 0, got 0"),
        ("delivery", "per_webhook_concurrency", "-3", "must be greater than 0, got -3"),
        ("storage", "synchronous", '"off"', "unknown value 'off'; use one of: full, normal"),
        ("storage", "path", '""', "must not be empty"),
        ("server", "pin_cpu", '"on"', 'expected "auto", "off" or a CPU number (0, 1, ...)'),
        ("server", "pin_cpu", "-1", 'expected "auto", "off" or a CPU number (0, 1, ...)'),
        ("log", "level", '"INFO"', "unknown value 'INFO'; use one of: debug, info, warning, error"),
        ("log", "format", '"xml"', "unknown value 'xml'; use one of: text, json"),
    ],
)
def test_bad_values_name_key_and_allowed_forms(
    tmp_path: Path, section: str, key: str, value: str, problem: str
) -> None:
    assert problem in only_error(tmp_path, f"[{section}]\n{key} = {value}", f"{section}.{key}")


def test_each_bad_array_element_is_named(tmp_path: Path) -> None:
    found = errors(tmp_path, '[delivery]\nretry_schedule = ["30s", "x", -1, "5m"]')
    path = tmp_path / "wahookd.toml"
    assert [e.split(": invalid duration")[0] for e in found] == [
        f"{path}: delivery.retry_schedule[1]",
        f"{path}: delivery.retry_schedule[2]",
    ]


def test_bad_cidr(tmp_path: Path) -> None:
    text = '[delivery]\nallow_networks = ["10.0.0.0/8", "10.0.0.0/33", "localhost"]'
    found = errors(tmp_path, text)
    assert len(found) == 2
    assert found[0].endswith(
        "delivery.allow_networks[1]: invalid CIDR '10.0.0.0/33'; "
        'use e.g. "127.0.0.0/8" or "fd00::/8"'
    )
    assert "delivery.allow_networks[2]: invalid CIDR 'localhost'" in found[1]


def test_cidr_host_bits_are_allowed(tmp_path: Path) -> None:
    config = load(tmp_path, '[delivery]\nallow_networks = ["192.168.1.7/16"]')
    assert config.delivery.allow_networks == (ipaddress.IPv4Network("192.168.0.0/16"),)


def test_per_webhook_concurrency_may_exceed_concurrency(tmp_path: Path) -> None:
    config = load(tmp_path, "[delivery]\nconcurrency = 4\nper_webhook_concurrency = 64")
    assert (config.delivery.concurrency, config.delivery.per_webhook_concurrency) == (4, 64)


def test_config_error_collects_every_problem(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        bogus = 1
        [server]
        listen = "nowhere"
        [delivery]
        timeout = "abc"
        concurrency = 0
        extra = true
        [[webhook]]
        session = "bad session"
        url = "ftp://x"
        events = []
        [log]
        level = "loud"
        """,
    )
    path = tmp_path / "wahookd.toml"
    keys = [e.removeprefix(f"{path}: ").split(": ")[0] for e in found]
    assert keys == [
        "bogus",
        "server.listen",
        "delivery.timeout",
        "delivery.concurrency",
        "delivery.extra",
        "webhook[0].session",
        "webhook[0].url",
        "webhook[0].events",
        "log.level",
    ]


def test_defaults_source_is_named_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text("[log]\nlevel = 'x'", source=None, base_dir=Path("/"))
    assert info.value.errors == [
        "<defaults>: log.level: unknown value 'x'; use one of: debug, info, warning, error"
    ]


# --- listen ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "listen"),
    [
        ("127.0.0.1:8787", Listen("127.0.0.1", 8787, None)),
        ("0.0.0.0:80", Listen("0.0.0.0", 80, None)),
        ("localhost:0", Listen("localhost", 0, None)),
        ("api.example.com:65535", Listen("api.example.com", 65535, None)),
        ("[::1]:8787", Listen("::1", 8787, None)),
        ("[::]:8787", Listen("::", 8787, None)),
        ("unix:/run/wahookd/api.sock", Listen(None, None, "/run/wahookd/api.sock")),
    ],
)
def test_parse_listen(text: str, listen: Listen) -> None:
    assert parse_listen(text) == listen
    assert str(listen) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("8787", "invalid listen address '8787'; use"),
        (":8787", "invalid listen address ':8787'; use"),
        ("localhost", "invalid listen address 'localhost'; use"),
        ("::1:8787", "put IPv6 addresses in brackets"),
        ("[::1]", "invalid listen address '[::1]'"),
        ("[nope]:80", "invalid listen address '[nope]:80'"),
        ("[127.0.0.1]:80", "invalid listen address '[127.0.0.1]:80'"),
        ("host:99999", "port must be 0-65535"),
        ("host:", "port must be 0-65535"),
        ("host:http", "port must be 0-65535"),
        ("host:-1", "port must be 0-65535"),
        ("host:٣", "port must be 0-65535"),
        ("bad host:80", "invalid listen address 'bad host:80'"),
        ("-a:80", "invalid listen address '-a:80'"),
        ("unix:", "socket path is empty or has NUL"),
        ("unix:/a\x00b", "socket path is empty or has NUL"),
        ("unix:/" + "x" * 120, "unix socket path longer than 107 bytes"),
    ],
)
def test_parse_listen_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_listen(text)
    assert problem in str(info.value)


def test_bad_listen_in_config_names_file_and_key(tmp_path: Path) -> None:
    problem = only_error(tmp_path, '[server]\nlisten = "::1:8787"', "server.listen")
    assert problem == "invalid listen address '::1:8787': put IPv6 addresses in brackets"
    problem = only_error(tmp_path, '[server]\nlisten = "8787"', "server.listen")
    assert 'use "HOST:PORT", "[IPv6]:PORT" or "unix:/path/to/socket"' in problem


def test_relative_unix_socket_is_beside_the_config(tmp_path: Path) -> None:
    config = load(tmp_path, '[server]\nlisten = "unix:run/api.sock"')
    assert config.server.listen == Listen(None, None, str(tmp_path / "run" / "api.sock"))


# --- auth ------------------------------------------------------------------------------------


def test_inline_secret(tmp_path: Path) -> None:
    assert load(tmp_path, '[auth]\njwt_secret = "k" ').auth.jwt_secret == "k"


def test_secret_and_secret_file_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "jwt.secret").write_text("x")
    text = '[auth]\njwt_secret = "k"\njwt_secret_file = "jwt.secret"'
    assert only_error(tmp_path, text, "auth.jwt_secret") == (
        "set either jwt_secret or jwt_secret_file, not both"
    )


def test_empty_inline_secret(tmp_path: Path) -> None:
    problem = only_error(tmp_path, '[auth]\njwt_secret = ""', "auth.jwt_secret")
    assert problem.startswith("must not be empty")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_algorithm_none_is_always_rejected(tmp_path: Path, alg: str) -> None:
    problem = only_error(tmp_path, f'[auth]\nalgorithms = ["HS256", "{alg}"]', "auth.algorithms[1]")
    assert problem == "algorithm 'none' is never accepted"


def test_unknown_algorithm(tmp_path: Path) -> None:
    problem = only_error(tmp_path, '[auth]\nalgorithms = ["hs256"]', "auth.algorithms[0]")
    assert problem.startswith("unknown algorithm 'hs256'; known: HS256, HS384, HS512, RS256")


def test_no_algorithms(tmp_path: Path) -> None:
    problem = only_error(tmp_path, "[auth]\nalgorithms = []", "auth.algorithms")
    assert problem.startswith("must name at least one of: HS256")


@pytest.mark.parametrize("alg", ["RS256", "ES384", "PS512", "EdDSA"])
def test_asymmetric_algorithm_needs_a_public_key(tmp_path: Path, alg: str) -> None:
    problem = only_error(tmp_path, f'[auth]\nalgorithms = ["{alg}"]', "auth.jwt_public_key_file")
    assert problem == f"required by algorithms {alg}"


def test_asymmetric_algorithm_with_public_key(tmp_path: Path) -> None:
    (tmp_path / "issuer.pem").write_text("-----BEGIN PUBLIC KEY-----\n")
    text = '[auth]\nalgorithms = ["RS256", "HS256"]\njwt_public_key_file = "issuer.pem"'
    auth = load(tmp_path, text).auth
    assert auth.jwt_public_key_file == tmp_path / "issuer.pem"
    assert auth.algorithms == ("RS256", "HS256")


def test_public_key_without_asymmetric_algorithm(tmp_path: Path) -> None:
    (tmp_path / "issuer.pem").write_text("")
    problem = only_error(tmp_path, '[auth]\njwt_public_key_file = "issuer.pem"', "auth.algorithms")
    assert "jwt_public_key_file is set" in problem


# --- files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"),
    [("auth", "jwt_secret_file"), ("auth", "jwt_public_key_file"), ("delivery", "ca_file")],
)
def test_missing_files_are_errors_with_check_files(tmp_path: Path, section: str, key: str) -> None:
    extra = 'algorithms = ["ES256"]\n' if key == "jwt_public_key_file" else ""
    text = f'[{section}]\n{extra}{key} = "missing/file.pem"'
    problem = only_error(tmp_path, text, f"{section}.{key}")
    assert (
        problem == f"cannot read file '{tmp_path / 'missing/file.pem'}': No such file or directory"
    )
    config = load(tmp_path, text, check_files=False)
    assert tmp_path / "missing" / "file.pem" in (
        config.auth.jwt_secret_file,
        config.auth.jwt_public_key_file,
        config.delivery.ca_file,
    )


def test_directory_is_not_a_readable_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    problem = only_error(tmp_path, '[auth]\njwt_secret_file = "d"', "auth.jwt_secret_file")
    assert problem.startswith(f"cannot read file '{tmp_path / 'd'}': ")


def test_ca_file_must_be_a_pem_bundle(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    problem = only_error(tmp_path, '[delivery]\nca_file = "ca.pem"', "delivery.ca_file")
    assert problem.startswith("not a PEM CA bundle: ")
    assert load(tmp_path, '[delivery]\nca_file = "ca.pem"', check_files=False).delivery.ca_file


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (conf_dir / "jwt.secret").write_text("k")
    path = write(
        conf_dir,
        '[storage]\npath = "../var/w.db"\n[auth]\njwt_secret_file = "jwt.secret"\n'
        '[delivery]\nca_file = "/abs/ca.pem"',
    )
    config = load_config(Path("../etc/wahookd.toml"), check_files=False)
    assert config.source == path
    assert config.storage.path == tmp_path / "var" / "w.db"
    assert config.auth.jwt_secret_file == conf_dir / "jwt.secret"
    assert config.delivery.ca_file == Path("/abs/ca.pem")


def test_storage_default_stays_under_cwd_for_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    monkeypatch.chdir(tmp_path)
    config = load(conf_dir, "[log]\nlevel = 'info'")
    assert config.storage.path == tmp_path / "wahookd-data" / "wahookd.db"


# --- static webhooks -------------------------------------------------------------------------


def test_minimal_webhook(tmp_path: Path) -> None:
    (hook,) = load(tmp_path, WEBHOOK).webhooks
    assert hook == StaticWebhook(
        "sales-1", "https://crm.example.com/wa-events", ("message.received",), None, None, ()
    )
    digest = hashlib.sha256(b"sales-1\nhttps://crm.example.com/wa-events").hexdigest()
    assert hook.key == "static:" + digest[:16]
    assert len(hook.key) == len("static:") + 16


@pytest.mark.parametrize("missing", ["session", "url", "events"])
def test_webhook_required_keys(tmp_path: Path, missing: str) -> None:
    text = "\n".join(line for line in WEBHOOK.splitlines() if not line.startswith(missing))
    assert only_error(tmp_path, text, f"webhook[0].{missing}") == "required in every [[webhook]]"


@pytest.mark.parametrize("session", ["bad id", "", "x" * 129, "a/b", "**"])
def test_webhook_bad_session(tmp_path: Path, session: str) -> None:
    text = WEBHOOK.replace('"sales-1"', f'"{session}"')
    problem = only_error(tmp_path, text, "webhook[0].session")
    assert problem.startswith(f'invalid session id {session!r}; use "*" or 1-128 characters')


def test_webhook_session_charset(tmp_path: Path) -> None:
    text = WEBHOOK.replace('"sales-1"', '"A-z_0.9:x@y"')
    assert load(tmp_path, text).webhooks[0].session == "A-z_0.9:x@y"


def test_webhook_bad_event(tmp_path: Path) -> None:
    text = WEBHOOK.replace('["message.received"]', '["message.received", "message.foo"]')
    problem = only_error(tmp_path, text, "webhook[0].events[1]")
    assert problem.startswith("unknown event type 'message.foo'; known: message.received, ")
    assert problem.endswith('contact.updated, or "*" for all')


def test_webhook_events_must_not_be_empty(tmp_path: Path) -> None:
    text = WEBHOOK.replace('["message.received"]', "[]")
    assert only_error(tmp_path, text, "webhook[0].events").startswith("must name at least one")


def test_webhook_http_url_needs_require_https_false(tmp_path: Path) -> None:
    text = WEBHOOK.replace("https://", "http://")
    problem = only_error(tmp_path, text, "webhook[0].url")
    assert problem == (
        "'http://crm.example.com/wa-events' is not https; "
        "set delivery.require_https = false to allow"
    )
    config = load(tmp_path, "[delivery]\nrequire_https = false\n" + text)
    assert config.webhooks[0].url == "http://crm.example.com/wa-events"


@pytest.mark.parametrize(
    "url",
    [
        "crm.example.com/hook",
        "/hook",
        "ftp://crm.example.com/hook",
        "https://",
        "https:///path",
        "https://crm.example.com:99999/",
        "https://[::1/",
        "https://crm.example.com/a b",
        "",
    ],
)
def test_webhook_bad_url(tmp_path: Path, url: str) -> None:
    text = WEBHOOK.replace("https://crm.example.com/wa-events", url)
    assert url in only_error(tmp_path, text, "webhook[0].url")


@pytest.mark.parametrize(
    "host",
    [
        *("127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1"),
        *("[::1]", "[::ffff:127.0.0.1]", "[fe80::1]", "[fd00::1]"),
    ],
)
def test_webhook_literal_private_address_needs_allow_networks(tmp_path: Path, host: str) -> None:
    text = WEBHOOK.replace("crm.example.com", host)
    problem = only_error(tmp_path, text, "webhook[0].url")
    assert "is not a public address" in problem
    assert "delivery.allow_networks" in problem
    network = "0.0.0.0/0" if "." in host else "::/0"
    config = load(tmp_path, f'[delivery]\nallow_networks = ["{network}"]\n{text}')
    assert host in config.webhooks[0].url


def test_webhook_public_literal_address_is_fine(tmp_path: Path) -> None:
    text = WEBHOOK.replace("crm.example.com", "93.184.216.34")
    assert load(tmp_path, text).webhooks[0].url == "https://93.184.216.34/wa-events"


def test_webhook_inline_secret_length(tmp_path: Path) -> None:
    assert load(tmp_path, WEBHOOK + 'secret = "' + "s" * 256 + '"').webhooks[0].secret == "s" * 256
    problem = only_error(tmp_path, WEBHOOK + 'secret = "' + "s" * 257 + '"', "webhook[0].secret")
    assert problem == "secret must be 1-256 characters, got 257"
    problem = only_error(tmp_path, WEBHOOK + 'secret = ""', "webhook[0].secret")
    assert problem == "secret must be 1-256 characters, got 0"


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (b"whsec_abc\n", "whsec_abc"),
        (b"abc\r\n", "abc"),
        (b"abc", "abc"),
        (b"abc\n\n", "abc\n"),  # only the one newline an editor adds is dropped
        (b" abc \n", " abc "),
    ],
)
def test_webhook_secret_file_is_read(tmp_path: Path, content: bytes, secret: str) -> None:
    (tmp_path / "hook.secret").write_bytes(content)
    (hook,) = load(tmp_path, WEBHOOK + 'secret_file = "hook.secret"').webhooks
    assert hook.secret == secret
    assert hook.secret_file == tmp_path / "hook.secret"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\n", "secret must be 1-256 characters, got 0"),
        (b"x" * 300, "secret must be 1-256 characters, got 300"),
        (b"\xff\xfe", "secret is not UTF-8 text"),
    ],
)
def test_webhook_bad_secret_file(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / "hook.secret").write_bytes(content)
    text = WEBHOOK + 'secret_file = "hook.secret"'
    assert only_error(tmp_path, text, "webhook[0].secret_file") == (
        f"'{tmp_path / 'hook.secret'}': {problem}"
    )


def test_webhook_missing_secret_file(tmp_path: Path) -> None:
    text = WEBHOOK + 'secret_file = "nope.secret"'
    problem = only_error(tmp_path, text, "webhook[0].secret_file")
    assert problem == f"cannot read file '{tmp_path / 'nope.secret'}': No such file or directory"
    (hook,) = load(tmp_path, text, check_files=False).webhooks
    assert (hook.secret, hook.secret_file) == (None, tmp_path / "nope.secret")


def test_webhook_secret_and_secret_file_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "hook.secret").write_text("x")
    text = WEBHOOK + 'secret = "a"\nsecret_file = "hook.secret"'
    assert only_error(tmp_path, text, "webhook[0].secret") == (
        "set either secret or secret_file, not both"
    )


def test_webhook_headers_keep_their_order(tmp_path: Path) -> None:
    text = WEBHOOK + 'headers = {X-Api-Key = "k", "X-Tenant" = "t  t", Accept = ""}'
    headers = load(tmp_path, text).webhooks[0].headers
    assert headers == (("X-Api-Key", "k"), ("X-Tenant", "t  t"), ("Accept", ""))


@pytest.mark.parametrize(
    "name",
    [
        *("Content-Type", "content-type", "User-Agent", "HOST", "Content-Length"),
        *("X-Webhook-Signature", "x-webhook-anything", "webhook-id", "Webhook-Signature"),
        # connection and framing: Transfer-Encoding beside our Content-Length, say,
        # would make every request one the receiver must refuse
        *("Transfer-Encoding", "connection", "Keep-Alive", "Upgrade", "Expect", "TE"),
        *("Trailer", "Proxy-Connection"),
    ],
)
def test_webhook_headers_owned_by_wahookd_are_refused(tmp_path: Path, name: str) -> None:
    problem = only_error(
        tmp_path, WEBHOOK + f'headers = {{"{name}" = "x"}}', f"webhook[0].headers.{name}"
    )
    assert problem.startswith(
        "set or controlled by wahookd itself; not allowed: Content-Type, User-Agent"
    )
    assert "Transfer-Encoding" in problem


@pytest.mark.parametrize(
    ("headers", "key", "problem"),
    [
        ('{"X Key" = "v"}', "headers.X Key", "invalid header name: use letters, digits"),
        ('{"X:Key" = "v"}', "headers.X:Key", "invalid header name"),
        ('{"" = "v"}', "headers.", "invalid header name"),
        ('{X-Key = "a\\r\\nInjected: 1"}', "headers.X-Key", "value contains CR, LF"),
        ('{X-Key = "a\\u0000"}', "headers.X-Key", "value contains CR, LF or another control"),
        ("{X-Key = 1}", "headers.X-Key", "expected a string, got integer"),
        ('{X-Key = "a", x-key = "b"}', "headers.x-key", "given twice (header names ignore case)"),
        ('"X-Key: v"', "headers", 'expected a table like {X-Api-Key = "..."}, got string'),
    ],
)
def test_webhook_bad_headers(tmp_path: Path, headers: str, key: str, problem: str) -> None:
    found = only_error(tmp_path, WEBHOOK + f"headers = {headers}", f"webhook[0].{key}")
    assert found.startswith(problem)


def test_webhook_at_most_16_headers(tmp_path: Path) -> None:
    sixteen = ", ".join(f'X-H{i} = "v"' for i in range(16))
    assert len(load(tmp_path, WEBHOOK + f"headers = {{{sixteen}}}").webhooks[0].headers) == 16
    seventeen = sixteen + ', X-H16 = "v"'
    problem = only_error(tmp_path, WEBHOOK + f"headers = {{{seventeen}}}", "webhook[0].headers")
    assert problem == "at most 16 headers, got 17"


def test_every_bad_header_is_reported(tmp_path: Path) -> None:
    found = errors(tmp_path, WEBHOOK + 'headers = {Host = "h", "a b" = "c", X-Ok = "ok"}')
    assert [e.split(": ")[1] for e in found] == [
        "webhook[0].headers.Host",
        "webhook[0].headers.a b",
    ]


def test_duplicate_static_webhooks_are_refused(tmp_path: Path) -> None:
    second = WEBHOOK.replace('["message.received"]', '["*"]')
    problem = only_error(tmp_path, WEBHOOK + second, "webhook[1].url")
    assert problem == "same session and url as webhook[0]"


def test_errors_in_second_webhook_are_indexed(tmp_path: Path) -> None:
    second = WEBHOOK.replace('"sales-1"', '"sales 2"')
    assert "invalid session id" in only_error(tmp_path, WEBHOOK + second, "webhook[1].session")


# --- reading the file ------------------------------------------------------------------------


def test_invalid_toml(tmp_path: Path) -> None:
    found = errors(tmp_path, "[server\nlisten = 1")
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'wahookd.toml'}: invalid TOML: ")
    assert "line 1" in found[0]


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "wahookd.toml"
    path.write_bytes(b"[log]\nlevel = '\xff'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors[0].startswith(f"{path}: invalid TOML: not UTF-8")


def test_unreadable_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.errors == [
        f"{tmp_path / 'absent.toml'}: cannot read config: No such file or directory"
    ]
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.errors == [f"{tmp_path}: cannot read config: Is a directory"]


# --- finding the file ------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A working directory and a stand-in for /etc/wahookd/wahookd.toml, both empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    etc = tmp_path / "etc" / "wahookd.toml"
    etc.parent.mkdir()
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATHS", (Path("wahookd.toml"), etc))
    cli = write(tmp_path, "", "cli.toml")
    env = write(tmp_path, "", "env.toml")
    return {"cwd": cwd / "wahookd.toml", "etc": etc, "cli": cli, "env": env}


def test_find_config_path_order(places: dict[str, Path]) -> None:
    environ = {"WAHOOKD_CONFIG": str(places["env"])}
    assert find_config_path(None, {}) is None
    places["etc"].write_text("")
    assert find_config_path(None, {}) == places["etc"]
    places["cwd"].write_text("")
    assert find_config_path(None, {}) == places["cwd"]
    assert find_config_path(None, {}).is_absolute()  # type: ignore[union-attr]
    assert find_config_path(None, environ) == places["env"]
    assert find_config_path(str(places["cli"]), environ) == places["cli"]


def test_empty_environment_variable_is_ignored(places: dict[str, Path]) -> None:
    assert find_config_path(None, {"WAHOOKD_CONFIG": ""}) is None


def test_explicit_paths_must_exist(places: dict[str, Path], tmp_path: Path) -> None:
    places["cwd"].write_text("")  # present, but an explicit path wins and is missing
    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as info:
        find_config_path(missing, {})
    assert info.value.errors == [f"{missing}: cannot read config: no such file (from -c)"]
    with pytest.raises(ConfigError) as info:
        find_config_path(None, {"WAHOOKD_CONFIG": missing})
    assert info.value.errors == [
        f"{missing}: cannot read config: no such file (from $WAHOOKD_CONFIG)"
    ]


def test_found_file_loads(places: dict[str, Path]) -> None:
    places["cwd"].write_text("[log]\nformat = 'json'\n")
    config = load_config(find_config_path(None, {}))
    assert config.log.format == "json"
    assert config.source == places["cwd"]


def test_a_static_webhook_takes_the_collections_fields(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        WEBHOOK + 'description = "CRM"\nordering = "chat"\nrate_limit = 20\n'
        'filter = { chats = ["group", "direct"] }\n',
    )
    (hook,) = config.webhooks
    assert (hook.description, hook.ordering, hook.rate_limit) == ("CRM", "chat", 20)
    assert hook.filter_chats == ("group", "direct")
    (plain,) = load(tmp_path, WEBHOOK).webhooks
    assert (plain.ordering, plain.rate_limit, plain.filter_chats) == ("none", None, None)


@pytest.mark.parametrize(
    ("line", "key", "says"),
    [
        ('ordering = "fifo"', "ordering", "must be one of none, chat, session, got 'fifo'"),
        ("rate_limit = 0", "rate_limit", "must be null or an integer from 1 to 10000"),
        ('filter = { chats = ["groups"] }', "filter", "unknown chat kind 'groups'"),
        ('description = "a\\nb"', "description", "at most 256 characters, no CR/LF"),
    ],
)
def test_a_static_webhooks_bad_field_is_named(
    tmp_path: Path, line: str, key: str, says: str
) -> None:
    assert says in only_error(tmp_path, WEBHOOK + line, f"webhook[0].{key}")
