"""The ordering key of a delivery (SPEC §8 "Ordering"); pure.

Deliveries of one webhook that share a key are attempted one at a time, in ingest
order; None means no ordering. The key is computed at ingest from the webhook's
`ordering` and stored with the delivery (`deliveries.order_key`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

from ..chats import chat_of

Ordering = Literal["none", "chat", "session"]
ORDERINGS: Final[tuple[Ordering, ...]] = get_args(Ordering)


def ordering_key(webhook_ordering: str, event: Mapping[str, object]) -> str | None:
    """The key this event's delivery is ordered by under the webhook's `ordering`.

    "chat": the chat's address, or the session for an event without a chat;
    "session": the session; "none": None.
    """
    if webhook_ordering == "none":
        return None
    session = event.get("sessionId")
    session_id = session if isinstance(session, str) else None
    if webhook_ordering == "session":
        return session_id
    if webhook_ordering == "chat":
        chat = chat_of(event)
        return chat if chat is not None else session_id
    raise ValueError(f"unknown ordering {webhook_ordering!r}; known: {', '.join(ORDERINGS)}")
