"""The registry: a session's default and extra webhooks, static ones, and the chat filter."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wahookd.models import Webhook
from wahookd.registry import Registry


def hook(id_: int, kind: str = "extra", session: str = "s1", **kw: object) -> Webhook:
    base = Webhook(
        id=id_,
        kind=kind,  # type: ignore[arg-type]
        session=session,
        url=f"https://{id_}.example/",
        events=("*",),
        secret=None,
        headers=(),
        is_active=True,
        created_at=0.0,
        updated_at=0.0,
        public_id=f"wh_{id_:016x}",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


GROUP = {"event": "message.received", "sessionId": "s1", "from": "1@g.us", "to": "me"}
DIRECT = {"event": "message.received", "sessionId": "s1", "from": "1@c.us", "to": "me"}
CONNECTED = {"event": "session.connected", "sessionId": "s1", "phoneNumber": "1"}


def ids(hooks: tuple[Webhook, ...]) -> list[int]:
    return [h.id for h in hooks]


def test_match_applies_events_activity_and_the_chat_filter() -> None:
    registry = Registry(
        [
            hook(5, filter_chats=("group",)),
            hook(1, kind="session"),
            hook(7, events=("session.connected",)),
            hook(8, is_active=False),
            hook(9, kind="static", session="*", filter_chats=("direct",)),
            hook(10, session="s2"),
        ]
    )
    assert ids(registry.match(GROUP)) == [1, 5]
    assert ids(registry.match(DIRECT)) == [1, 9]
    assert ids(registry.match(CONNECTED)) == [1, 5, 7, 9]  # no chat: every filter passes
    assert ids(registry.match({"event": 5})) == []


def test_default_extras_and_lookups() -> None:
    registry = Registry([hook(3), hook(1, kind="session"), hook(2)])
    assert [h.id for h in registry.serving("s1")] == [1, 2, 3]  # the default first
    assert [h.id for h in registry.extras("s1")] == [2, 3]
    assert registry.session_webhook("s1") == hook(1, kind="session")
    assert registry.by_public_id("wh_0000000000000002") == hook(2)
    registry.remove(1)
    assert registry.session_webhook("s1") is None and registry.session_ids() == {"s1"}
    registry.put(hook(2, description="moved on"))
    assert registry.by_public_id("wh_0000000000000002").description == "moved on"  # type: ignore[union-attr]
    registry.remove(2)
    registry.remove(3)
    assert registry.session_ids() == set() and registry.all() == []


def test_a_remembered_fan_out_follows_every_change() -> None:
    registry = Registry([hook(1, kind="session"), hook(2, filter_chats=("group",))])
    assert ids(registry.match(GROUP)) == [1, 2]
    assert registry.match(GROUP) is registry.match(GROUP)  # remembered, not recomputed
    registry.put(hook(2, filter_chats=("group",), is_active=False))  # deactivated
    assert ids(registry.match(GROUP)) == [1]
    registry.put(hook(3, kind="static", session="*"))  # a static one appears
    assert ids(registry.match(GROUP)) == [1, 3]
    registry.remove(1)
    assert ids(registry.match(GROUP)) == [3]
    registry.replace_all([])
    assert ids(registry.match(GROUP)) == []


def test_the_remembered_fan_outs_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("wahookd.registry.MATCHES_KEPT", 8)
    registry = Registry([hook(1, kind="static", session="*")])
    for n in range(50):
        assert ids(registry.match({**CONNECTED, "sessionId": f"s{n}"})) == [1]
    assert len(registry._matches) <= 8


def test_filters_chats_follows_every_change() -> None:
    registry = Registry([hook(1, kind="session"), hook(2, session="s2", filter_chats=("group",))])
    assert not registry.filters_chats("s1") and registry.filters_chats("s2")
    registry.put(hook(3, filter_chats=("direct",), is_active=False))  # inactive counts too
    assert registry.filters_chats("s1")
    registry.remove(3)
    assert not registry.filters_chats("s1")
    registry.put(hook(4, kind="static", session="*", filter_chats=("group",)))
    assert registry.filters_chats("s1") and registry.filters_chats("elsewhere")
    registry.replace_all([hook(1, kind="session")])
    assert not registry.filters_chats("s1") and not registry.filters_chats("s2")
