"""Chat of an event and its kind, on real-world WhatsApp address forms (SPEC §8)."""

from __future__ import annotations

import pytest

from wahookd.chats import chat_kind, chat_of, kind_of, passes


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("5511999998888", "direct"),  # a plain number
        ("+49 151 23456789", "direct"),
        ("5511999998888@c.us", "direct"),
        ("5511999998888@s.whatsapp.net", "direct"),
        ("123456789012345@lid", "direct"),  # a hidden-number (LID) address
        ("5511999998888:12@s.whatsapp.net", "direct"),  # with a device suffix
        ("120363025246125486@g.us", "group"),
        ("5511999998888-1591234567@g.us", "group"),  # an old-style group id
        ("120363025246125486@G.US", "group"),
        ("status@broadcast", "status"),
        ("120363143846321234@newsletter", "channel"),
        ("1591234567@broadcast", "broadcast"),
        ("", "direct"),
    ],
)
def test_the_kind_comes_from_the_suffix(address: str, kind: str) -> None:
    assert chat_kind(address) == kind


def message(event: str = "message.received", **fields: str) -> dict[str, object]:
    return {"event": event, "sessionId": "s1", "messageId": "m1", "type": "text", **fields}


def test_a_received_message_belongs_to_its_sender() -> None:
    event = message(**{"from": "120363025246125486@g.us", "to": "me"})
    assert chat_of(event) == "120363025246125486@g.us"
    assert kind_of(event) == "group"


def test_a_message_from_me_belongs_to_its_recipient() -> None:
    event = message("message.sent", **{"from": "me", "to": "5511999998888@c.us"})
    assert chat_of(event) == "5511999998888@c.us"


def test_receipts_carry_only_to() -> None:
    assert chat_of(message("message.delivered", to="status@broadcast")) == "status@broadcast"
    assert chat_of(message("message.read", to="1203@newsletter")) == "1203@newsletter"


def test_a_contact_update_belongs_to_its_number() -> None:
    event = {"event": "contact.updated", "sessionId": "s1", "phoneNumber": "5511999998888"}
    assert chat_of(event) == "5511999998888"
    assert kind_of(event) == "direct"


@pytest.mark.parametrize(
    "event", ["session.connected", "session.disconnected", "session.qr_generated"]
)
def test_session_events_have_no_chat(event: str) -> None:
    assert chat_of({"event": event, "sessionId": "s1"}) is None


def test_the_filter() -> None:
    group = message(**{"from": "1203@g.us", "to": "me"})
    direct = message(**{"from": "5511999998888@s.whatsapp.net", "to": "me"})
    session = {"event": "session.connected", "sessionId": "s1", "phoneNumber": "1"}
    assert passes(None, group) and passes(None, direct)
    assert passes(["group"], group)
    assert not passes(["group"], direct)
    assert passes(["group"], session)  # events without a chat always pass
    assert passes(["direct", "channel"], direct)
