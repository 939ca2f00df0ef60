"""rules.py: the webhook field rules the config file and the API share."""

from __future__ import annotations

from pathlib import Path

import pytest

from wahookd.config import ConfigError, parse_config_text
from wahookd.rules import (
    MAX_HEADER_VALUE_CHARS,
    MAX_HEADERS,
    MAX_URL_CHARS,
    RuleError,
    check_events,
    check_headers,
    check_secret,
    check_session_id,
    check_url,
    keep_masked,
    mask,
)

WEBHOOK = '[[webhook]]\nsession = "s1"\nurl = "https://crm.example.com/in"\nevents = ["*"]\n'


def refused(call: object, field: str, rule: str) -> RuleError:
    assert isinstance(call, RuleError)
    assert (call.field, call.rule) == (field, rule)
    return call


def raises(fn: object, *args: object, **kwargs: object) -> RuleError:
    with pytest.raises(RuleError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value


def test_url() -> None:
    ok = check_url("https://a.example/h", require_https=True, allow_networks=())
    assert ok == "https://a.example/h"
    err = raises(check_url, "http://a.example/h", require_https=True, allow_networks=())
    refused(err, "url", "url_not_https")
    assert str(err) == "url: URL scheme must be https, got 'http'"
    long = "https://a.example/" + "x" * MAX_URL_CHARS
    refused(raises(check_url, long, require_https=True, allow_networks=()), "url", "url")
    err = raises(check_url, "https://127.0.0.1/", require_https=True, allow_networks=())
    assert "is not a public address" in err.message
    refused(raises(check_url, "", require_https=True, allow_networks=()), "url", "url")


def test_events_and_secret() -> None:
    assert check_events(["*", "message.sent", "*"]) == ["*", "message.sent"]
    refused(raises(check_events, []), "events", "events_empty")
    err = refused(raises(check_events, ["*", "foo"]), "events[1]", "events")
    assert err.message.startswith("unknown event type 'foo'; known: message.received, ")
    assert check_secret(None) is None and check_secret("s" * 256) == "s" * 256
    assert str(raises(check_secret, "")) == "secret: must be a string of 1-256 characters, got 0"


def test_headers() -> None:
    assert check_headers({"X-Key": "v"}) == [("X-Key", "v")]
    refused(raises(check_headers, {f"X-{i}": "v" for i in range(17)}), "headers", "headers")
    refused(raises(check_headers, {"X-" + "n" * 63: "v"}), "headers", "header_name")
    refused(raises(check_headers, {"x-webhook-id": "v"}), "headers.x-webhook-id", "header_reserved")
    refused(raises(check_headers, {"TE": "v"}), "headers.TE", "header_connection")
    refused(raises(check_headers, {"A": "1", "a": "2"}), "headers.a", "header_twice")
    too_long = "v" * (MAX_HEADER_VALUE_CHARS + 1)
    refused(raises(check_headers, {"A": too_long}), "headers.A", "header_value")
    refused(raises(check_headers, {"A": "a\r\nB: c"}), "headers.A", "header_value")
    refused(raises(check_headers, {"A": "\u20ac"}), "headers.A", "header_value")
    assert MAX_HEADERS == 16


def test_session_id_and_masking() -> None:
    assert check_session_id("a.b_c:d@e-1") == "a.b_c:d@e-1"
    err = raises(check_session_id, "a b")
    assert str(err) == "sessionId: must be 1-128 characters of A-Z a-z 0-9 . _ : @ -"
    assert mask("abcdefgh") == "abcd****" and mask("ab") == "a****" and mask(None) is None
    assert keep_masked("abcd****", "abcdefgh") == "abcdefgh"
    assert keep_masked("new", "abcdefgh") == "new"


def config_errors(tmp_path: Path, extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(WEBHOOK + extra, source=tmp_path / "w.toml", base_dir=tmp_path)
    return info.value.errors


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        # the API's caps, now the config file's too (issue 11)
        ('{"X-' + "n" * 63 + '" = "v"}', "headers.X-" + "n" * 63),
        ('{X-A = "' + "v" * (MAX_HEADER_VALUE_CHARS + 1) + '"}', "headers.X-A"),
        ('{X-A = "\u20ac"}', "headers.X-A"),
    ],
)
def test_config_headers_have_the_api_caps(tmp_path: Path, headers: str, key: str) -> None:
    found = config_errors(tmp_path, f"headers = {headers}\n")
    assert len(found) == 1 and found[0].startswith(f"{tmp_path / 'w.toml'}: webhook[0].{key}: ")


def test_config_accepts_what_the_api_accepts(tmp_path: Path) -> None:
    headers = '{"X-' + "n" * 62 + '" = "' + "v" * MAX_HEADER_VALUE_CHARS + '"}'
    config = parse_config_text(WEBHOOK + f"headers = {headers}\n", source=None, base_dir=tmp_path)
    assert len(config.webhooks[0].headers) == 1


def test_collection_fields() -> None:
    from wahookd.rules import check_description, check_filter, check_ordering, check_rate_limit

    assert check_description(None) is None and check_description("d" * 256) == "d" * 256
    assert raises(check_description, "d" * 257).rule == "description"
    assert raises(check_description, "two\nlines").rule == "description"
    assert raises(check_description, 5).rule == "description"

    assert check_filter(None) is None
    assert check_filter({"chats": ["group", "direct", "group"]}) == ("group", "direct")
    err = raises(check_filter, {"chats": ["group", "groups"]})
    assert (err.field, err.rule) == ("filter.chats[1]", "filter")
    assert "known: direct, group, status, channel, broadcast" in err.message
    for bad in ({"chats": []}, {"chats": "group"}, {}, {"chats": ["group"], "x": 1}, ["group"]):
        assert raises(check_filter, bad).rule == "filter", bad

    assert [check_ordering(o) for o in ("none", "chat", "session")] == ["none", "chat", "session"]
    err = raises(check_ordering, "fifo")
    assert err.message == "must be one of none, chat, session, got 'fifo'"

    assert check_rate_limit(None) is None
    assert check_rate_limit(1) == 1 and check_rate_limit(10_000) == 10_000
    for bad in (0, 10_001, 1.5, True, "5"):
        assert raises(check_rate_limit, bad).field == "rateLimit", bad
