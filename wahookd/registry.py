"""The in-memory copy of every webhook, and which ones an event fans out to."""

from __future__ import annotations

from collections.abc import Iterable

from .events import webhook_matches
from .models import Webhook


class Registry:
    """Webhooks by id and by session; the store is the source of truth, this mirrors it."""

    def __init__(self, hooks: Iterable[Webhook] = ()) -> None:
        self._by_id: dict[int, Webhook] = {}
        self._by_session: dict[str, int] = {}
        self.replace_all(hooks)

    def replace_all(self, hooks: Iterable[Webhook]) -> None:
        """Forget everything and mirror these webhooks."""
        self._by_id.clear()
        self._by_session.clear()
        for hook in hooks:
            self.put(hook)

    def put(self, hook: Webhook) -> None:
        """Add or replace one webhook."""
        old = self._by_id.get(hook.id)
        if old is not None and old.kind == "session":
            self._by_session.pop(old.session, None)
        self._by_id[hook.id] = hook
        if hook.kind == "session":
            self._by_session[hook.session] = hook.id

    def remove(self, webhook_id: int) -> None:
        """Forget one webhook."""
        hook = self._by_id.pop(webhook_id, None)
        if hook is not None and hook.kind == "session":
            self._by_session.pop(hook.session, None)

    def get(self, webhook_id: int) -> Webhook | None:
        """The webhook with this id, if it still exists."""
        return self._by_id.get(webhook_id)

    def session_webhook(self, session_id: str) -> Webhook | None:
        """The session's own webhook (configured through the API)."""
        webhook_id = self._by_session.get(session_id)
        return None if webhook_id is None else self._by_id[webhook_id]

    def statics(self) -> list[Webhook]:
        """The static webhooks of the config file."""
        return [h for h in self._by_id.values() if h.kind == "static"]

    def match(self, session_id: str, event_type: str) -> tuple[int, ...]:
        """Ids of the active webhooks an event of this session and type goes to."""
        ids = [
            hook.id
            for hook in self._candidates(session_id)
            if hook.is_active and webhook_matches(hook.events, event_type)
        ]
        return tuple(ids)

    def session_ids(self) -> set[str]:
        """Sessions a webhook names: their own, or a static one's (not "*")."""
        return set(self._by_session) | {
            hook.session for hook in self.statics() if hook.session != "*"
        }

    def serving(self, session_id: str) -> list[Webhook]:
        """Every webhook that covers this session, active or not; its own first."""
        return list(self._candidates(session_id))

    def serves(self, session_id: str) -> bool:
        """True when some webhook, active or not, covers this session."""
        return any(True for _ in self._candidates(session_id))

    def _candidates(self, session_id: str) -> Iterable[Webhook]:
        own = self.session_webhook(session_id)
        if own is not None:
            yield own
        for hook in self._by_id.values():
            if hook.kind == "static" and hook.session in ("*", session_id):
                yield hook
