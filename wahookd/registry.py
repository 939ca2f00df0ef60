"""The in-memory copy of every webhook, and which ones an event fans out to."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .chats import ChatKind, kind_of, passes_kind
from .events import webhook_matches
from .models import Webhook

# (session, event type, kind of chat) fan-outs remembered between changes; a table that
# grows past this starts over
MATCHES_KEPT = 4096


class Registry:
    """Webhooks by id, by public id and by session; the store is the source of truth,
    this mirrors it."""

    def __init__(self, hooks: Iterable[Webhook] = ()) -> None:
        self._by_id: dict[int, Webhook] = {}
        self._by_public: dict[str, int] = {}
        # a session's default and extra webhooks (listed by id: ids grow, creation order)
        self._by_session: dict[str, dict[int, None]] = {}
        self._default: dict[str, int] = {}
        # static webhooks apart, so matching an event costs its session's own webhooks
        # and the statics, not every webhook of every session
        self._statics: dict[int, None] = {}
        # counts every put and remove: a reader of the store that saw it move while its
        # read ran knows the read may predate a change this node made (listener.py)
        self.version = 0
        # match_kind's answers since the last change (webhooks are frozen: only put,
        # remove and replace_all change what an event fans out to, and they clear it)
        self._matches: dict[tuple[str, str, ChatKind | None], tuple[Webhook, ...]] = {}
        self._filtering: dict[str, bool] = {}  # filters_chats()'s answers, the same way
        self.replace_all(hooks)

    def replace_all(self, hooks: Iterable[Webhook]) -> None:
        """Forget everything and mirror these webhooks."""
        self._forget_matches()
        self._by_id.clear()
        self._by_public.clear()
        self._by_session.clear()
        self._default.clear()
        self._statics.clear()
        for hook in hooks:
            self.put(hook)

    def put(self, hook: Webhook) -> None:
        """Add or replace one webhook."""
        self.remove(hook.id)  # counts the change and forgets the remembered fan-outs
        self._by_id[hook.id] = hook
        if hook.public_id:
            self._by_public[hook.public_id] = hook.id
        if hook.kind == "static":
            self._statics[hook.id] = None
        else:
            self._by_session.setdefault(hook.session, {})[hook.id] = None
        if hook.kind == "session":
            self._default[hook.session] = hook.id

    def remove(self, webhook_id: int) -> None:
        """Forget one webhook."""
        self.version += 1
        self._forget_matches()
        hook = self._by_id.pop(webhook_id, None)
        if hook is None:
            return
        self._by_public.pop(hook.public_id, None)
        self._statics.pop(hook.id, None)
        own = self._by_session.get(hook.session)
        if own is not None:
            own.pop(hook.id, None)
            if not own:
                del self._by_session[hook.session]
        if self._default.get(hook.session) == hook.id:
            del self._default[hook.session]

    def get(self, webhook_id: int) -> Webhook | None:
        """The webhook with this id, if it still exists."""
        return self._by_id.get(webhook_id)

    def by_public_id(self, public_id: str) -> Webhook | None:
        """The webhook with this `wh_...` id, if it exists."""
        webhook_id = self._by_public.get(public_id)
        return None if webhook_id is None else self._by_id[webhook_id]

    def all(self) -> list[Webhook]:
        """Every webhook: by session, each session's default first, then the static ones."""
        own = [self._by_id[i] for s in sorted(self._by_session) for i in self._own_ids(s)]
        return own + self.statics()

    def session_webhook(self, session_id: str) -> Webhook | None:
        """The session's default webhook (the guide's /api/webhook/config)."""
        webhook_id = self._default.get(session_id)
        return None if webhook_id is None else self._by_id[webhook_id]

    def extras(self, session_id: str) -> list[Webhook]:
        """The session's extra webhooks (/api/webhooks), oldest first."""
        ids = sorted(self._by_session.get(session_id, {}))
        return [self._by_id[i] for i in ids if self._by_id[i].kind == "extra"]

    def statics(self) -> list[Webhook]:
        """The static webhooks of the config file."""
        return [self._by_id[i] for i in self._statics]

    def match(self, event: Mapping[str, object]) -> tuple[Webhook, ...]:
        """The active webhooks an event object goes to: session, event type and chat filter."""
        session_id, event_type = event.get("sessionId"), event.get("event")
        if not isinstance(session_id, str) or not isinstance(event_type, str):
            return ()
        return self.match_kind(session_id, event_type, kind_of(event))

    def match_kind(
        self, session_id: str, event_type: str, chat: ChatKind | None
    ) -> tuple[Webhook, ...]:
        """`match` for an event already reduced to its session, type and kind of chat."""
        key = (session_id, event_type, chat)
        found = self._matches.get(key)
        if found is None:
            found = tuple(
                hook
                for hook in self._candidates(session_id)
                if hook.is_active
                and webhook_matches(hook.events, event_type)
                and passes_kind(hook.filter_chats, chat)
            )
            if len(self._matches) >= MATCHES_KEPT:
                self._matches.clear()
            self._matches[key] = found
        return found

    def filters_chats(self, session_id: str) -> bool:
        """True when a webhook covering this session has a chat filter, active or not.

        When none has, an event's kind of chat changes nothing in its fan-out, and
        ingest need not work it out.
        """
        found = self._filtering.get(session_id)
        if found is None:
            found = any(hook.filter_chats is not None for hook in self._candidates(session_id))
            if len(self._filtering) >= MATCHES_KEPT:
                self._filtering.clear()
            self._filtering[session_id] = found
        return found

    def _forget_matches(self) -> None:
        self._matches.clear()
        self._filtering.clear()

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

    def _own_ids(self, session_id: str) -> list[int]:
        """The session's default webhook first, then its extra ones by id."""
        ids = sorted(self._by_session.get(session_id, {}))
        default = self._default.get(session_id)
        return ([default] if default is not None else []) + [i for i in ids if i != default]

    def _candidates(self, session_id: str) -> Iterable[Webhook]:
        for webhook_id in self._own_ids(session_id):
            yield self._by_id[webhook_id]
        for webhook_id in self._statics:
            hook = self._by_id[webhook_id]
            if hook.session in ("*", session_id):
                yield hook
