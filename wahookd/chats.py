"""The chat an event belongs to, and its kind (SPEC §8 "Chat filter"); pure.

A WhatsApp address names its kind by its suffix: `@g.us` a group, `status@broadcast`
the status feed, `@newsletter` a channel, any other `@broadcast` a broadcast list;
everything else (a plain number, `@c.us`, `@s.whatsapp.net`, `@lid`) is one person.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final, Literal, get_args

ChatKind = Literal["direct", "group", "status", "channel", "broadcast"]
CHAT_KINDS: Final[tuple[ChatKind, ...]] = get_args(ChatKind)

# the counterpart of a message we sent ourselves is its recipient
_ME: Final = "me"


def chat_of(event: Mapping[str, object]) -> str | None:
    """The chat address of an event: a message's counterpart, a contact's number; else None.

    `message.*`: `from`, unless that is `me`, then `to`. `contact.updated`:
    `phoneNumber`. Other events (`session.*`) have no chat.
    """
    event_type = event.get("event")
    if not isinstance(event_type, str):
        return None
    if event_type.startswith("message."):
        sender = event.get("from")
        if isinstance(sender, str) and sender and sender != _ME:
            return sender
        recipient = event.get("to")
        return recipient if isinstance(recipient, str) and recipient else None
    if event_type == "contact.updated":
        number = event.get("phoneNumber")
        return number if isinstance(number, str) and number else None
    return None


def chat_kind(address: str) -> ChatKind:
    """The kind of chat an address names, from its suffix (case does not matter)."""
    lower = address.strip().lower()
    if lower.endswith("@g.us"):
        return "group"
    if lower == "status@broadcast":
        return "status"
    if lower.endswith("@newsletter"):
        return "channel"
    if lower.endswith("@broadcast"):
        return "broadcast"
    return "direct"


def kind_of(event: Mapping[str, object]) -> ChatKind | None:
    """The kind of the event's chat; None for an event without a chat."""
    chat = chat_of(event)
    return None if chat is None else chat_kind(chat)


def passes_kind(filter_chats: Collection[str] | None, kind: ChatKind | None) -> bool:
    """True when a webhook with this chat filter wants an event whose chat is of `kind`."""
    return filter_chats is None or kind is None or kind in filter_chats


def passes(filter_chats: Collection[str] | None, event: Mapping[str, object]) -> bool:
    """True when a webhook with this chat filter (None: every chat) wants this event.

    Events without a chat (`session.*`) always pass.
    """
    return passes_kind(filter_chats, kind_of(event))
