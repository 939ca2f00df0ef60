"""The ordering key a delivery is stored with (SPEC §8 "Ordering")."""

from __future__ import annotations

import pytest

from wahookd.delivery.ordering import ordering_key

GROUP_MESSAGE = {
    "event": "message.received",
    "sessionId": "s1",
    "from": "1203@g.us",
    "to": "me",
}
MY_MESSAGE = {"event": "message.sent", "sessionId": "s1", "from": "me", "to": "5511@c.us"}
CONNECTED = {"event": "session.connected", "sessionId": "s1", "phoneNumber": "5511"}


def test_none_orders_nothing() -> None:
    assert ordering_key("none", GROUP_MESSAGE) is None
    assert ordering_key("none", CONNECTED) is None


def test_chat_orders_by_the_chat_address() -> None:
    assert ordering_key("chat", GROUP_MESSAGE) == "1203@g.us"
    assert ordering_key("chat", MY_MESSAGE) == "5511@c.us"


def test_chat_orders_events_without_a_chat_per_session() -> None:
    assert ordering_key("chat", CONNECTED) == "s1"


def test_session_orders_everything_of_the_session() -> None:
    for event in (GROUP_MESSAGE, MY_MESSAGE, CONNECTED):
        assert ordering_key("session", event) == "s1"


def test_an_unknown_ordering_is_a_bug() -> None:
    with pytest.raises(ValueError, match="known: none, chat, session"):
        ordering_key("fifo", CONNECTED)
