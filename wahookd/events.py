"""Event types, session ids and ingest validation (SPEC §4)."""

from __future__ import annotations

import re
from typing import Final

# The eight event types and the fields each must carry (besides `event` and `sessionId`).
EVENT_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "message.received": ("messageId", "from", "to", "type"),
    "message.sent": ("messageId", "from", "to", "type"),
    "message.delivered": ("messageId", "to"),
    "message.read": ("messageId", "to"),
    "session.connected": ("phoneNumber",),
    "session.disconnected": ("reason",),
    "session.qr_generated": ("qrCode", "expiresAt"),
    "contact.updated": ("phoneNumber", "contact"),
}

SESSION_ID_RE: Final = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


def is_session_id(value: object) -> bool:
    """True when value is a valid session id (1-128 of A-Z a-z 0-9 . _ : @ -)."""
    return isinstance(value, str) and SESSION_ID_RE.fullmatch(value) is not None
