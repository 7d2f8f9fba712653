"""The `/ws` consumer: the seed's manager.ts protocol on an AsyncJsonWebsocketConsumer.

Here: connect and disconnect, the inbound frame checks (size, rate, JSON), dispatch to one
handler per message type and the replies, subscriptions, and which events the socket is
offered. Its parts, each a module with one job:

- `writer.py` (SocketWriter): the outbound path — send at once or queue, progress coalescing,
  the send-queue limit, close after flush;
- `viewer.py` (Viewer): who is on the socket and what it may see, kept current by re-checks;
- `replay.py` (Replay): resume from the log, holding live events meanwhile;
- `deadlines.py` (Deadlines): the auth timeout and the heartbeat;
- `ratelimit.py` (TokenBucket): the inbound rate limit.

The first four are base classes, not objects of their own: their state lives in the consumer's
`__slots__` (memory per socket), and the fan-out path (`offer` → `_enqueue` → `_send_now`)
pays no extra look-up or call per socket per event. ORM access in `runs/access.py`,
`events/log.py` and `credentials.py` through `database_sync_to_async`, fan-out in `hub.py`.
Events never pass through the consumer's dispatch: the hub calls `offer()` with a frame
encoded once for every socket.

The consumer opts out of a per-socket channel-layer channel (see `channel_layer_alias`): the
hub is the only layer listener in the process.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from events import metrics, protocol
from events.protocol import PROTOCOL_VERSION, ProtocolError
from events.record import LoggedEvent
from events.schemas import EVENT_CATEGORIES

from . import credentials
from .deadlines import CLOSE_GOING_AWAY, DEADLINES_SLOTS, Deadlines
from .hub import Hub
from .ratelimit import TokenBucket
from .replay import REPLAY_SLOTS, Replay
from .viewer import VIEWER_SLOTS, ScopeRefused, Viewer, authorised_scope
from .writer import CLOSE_SLOW_CONSUMER, SocketWriter
from .writer import control_frame as _now_frame

logger = logging.getLogger(__name__)

CLOSE_POLICY = 1008  # the client ignored WS_RATE_BURST rate-limit errors in a row
CLOSE_TOO_BIG = 1009
CLOSE_TOO_MANY = 4429  # the user already has WS_MAX_SOCKETS_PER_USER sockets open

_NO_LAYER = (
    "researchflow.no-per-socket-channel"  # an alias with no config: get_channel_layer → None
)


class RunEventsConsumer(SocketWriter, Viewer, Replay, Deadlines, AsyncJsonWebsocketConsumer):
    channel_layer_alias = _NO_LAYER
    groups: tuple[str, ...] = ()  # channels' default gives each instance its own empty list

    # Slots, not a __dict__: with more than 30 attributes an instance dict stops sharing its
    # keys and costs ~1.6 KiB per socket; slots cost 8 bytes each. channels' base classes have
    # no __slots__, so an attribute missing here (or in SocketWriter's) still works but lands
    # in a per-instance dict (tests/test_ws_memory.py fails then: add it here).
    __slots__ = (  # scope, channel_layer, base_send: set by channels' AsyncConsumer (base_send
        # and hub are SocketWriter's)
        *VIEWER_SLOTS,
        *REPLAY_SLOTS,
        *DEADLINES_SLOTS,
        "_cursor",
        "_going_away",
        "_rate",
        "_types",
        "channel_layer",
        "client_id",
        "scope",
        "subscriptions",
    )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # channels' AsyncConsumer.__call__, for a consumer with no channel layer. Its
        # await_many_dispatch() wraps every receive() in a task and waits on it with
        # asyncio.wait(), so each idle socket held an extra task, coroutine, waiter future and
        # callbacks for as long as it lives. With one message source, awaiting it directly
        # dispatches the same messages in the same order, with none of that per socket.
        self.scope = scope
        self.channel_layer = None  # channel_layer_alias names no layer (see _NO_LAYER)
        self.base_send = send
        try:  # not contextlib.suppress: its object would stay alive for the socket's lifetime
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    # --- connection ----------------------------------------------------------------------

    async def connect(self) -> None:
        self.client_id = uuid.uuid4().hex
        self.hub = Hub.for_loop()
        self._start_viewer()
        self.subscriptions: set[str] = set()
        self._types: frozenset[str] = frozenset()
        self._start_writer(settings.WS_SEND_QUEUE, settings.WS_SEND_BUFFER_BYTES)
        self._start_replay()
        # The socket's resume point once a client gave one (auth.lastEventId or resume): a
        # subscription made later resumes from max(_cursor, the last id queued), so a cursor
        # given before any subscription is not lost (docs/protocol.md, "Resume").
        self._cursor: int | None = None
        self._going_away = False
        self._rate = TokenBucket(settings.WS_RATE_LIMIT, settings.WS_RATE_BURST, time.monotonic())
        self._start_deadlines()

        # The hub's baseline (the log head) must be set before this socket can expect live events.
        await self.hub.ready()
        await self.accept()
        metrics.CONNECTS.inc()
        metrics.SOCKETS_OPEN.inc()
        self.hub.add(self)
        self._arm_timer()

        session_user = self.scope.get("user")
        # The session ref is what lets the hub end this socket with its session (logout,
        # expiry, password change); a session user without one is not trusted.
        session_ref = self.scope.get("session_ref")
        if (
            session_user is not None
            and session_user.is_authenticated
            and session_user.is_active
            and isinstance(session_ref, credentials.SessionRef)
            and session_ref.user_id == session_user.pk
        ):
            if not self._claim_slot(session_user.pk):
                self._push(_now_frame("connection.established", self._established()))
                self._error("too_many_connections", "too many open connections for this user")
                self._close_after_flush(CLOSE_TOO_MANY)
                return
            self.credential = credentials.Credential(session_user, "session", session=session_ref)
            await self._set_user(session_user)
        self._push(_now_frame("connection.established", self._established()))

    def _established(self) -> dict[str, Any]:
        return {
            "clientId": self.client_id,
            "version": PROTOCOL_VERSION,
            "authenticated": self.user is not None,
            "userId": self.user.get_username() if self.user is not None else None,
        }

    async def disconnect(self, code: int) -> None:
        self._stop_writer()
        self._stop_deadlines()
        self.hub.remove(self)
        self._release_slot()
        metrics.SOCKETS_OPEN.dec()
        if code == CLOSE_SLOW_CONSUMER and self._close_code is None:
            # Closed as a slow consumer by the server itself: a keepalive pong stuck behind
            # unread frames (servers/uvicorn_stalled_peer.py).
            metrics.SLOW_CONSUMER_CLOSES.inc()
        metrics.CLOSES.labels(code=str(self._close_code or code)).inc()

    def go_away(self) -> None:
        """Server shutdown (`Hub.drain`): send what is queued, then close 1001 (going away),
        so the client reconnects to another process and resumes from the last id it got."""
        if not self._closing and not self._going_away:
            self._going_away = True
            self._close_after_flush(CLOSE_GOING_AWAY)

    # --- inbound -------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self._heard_from_client()
        size = len(text_data) if text_data is not None else len(bytes_data or b"")
        if size > settings.WS_MAX_FRAME_BYTES or (
            text_data is not None
            and size * 4 > settings.WS_MAX_FRAME_BYTES
            and len(text_data.encode()) > settings.WS_MAX_FRAME_BYTES
        ):
            await self._close(
                CLOSE_TOO_BIG, f"message too big: at most {settings.WS_MAX_FRAME_BYTES} bytes"
            )
            return
        rate = self._rate
        if not rate.take(time.monotonic()):
            metrics.INBOUND.labels(type="rate_limited").inc()
            if rate.exhausted:
                await self._close(CLOSE_POLICY)
                return
            self._error(
                "rate_limited",
                f"too many messages: at most {rate.rate:g}/s "
                f"(bursts of {rate.burst}); this message was ignored",
            )
            return
        if text_data is None:
            self._error("binary_not_supported", "binary frames are not supported; send JSON text")
            return
        try:
            content = orjson.loads(text_data)
        except orjson.JSONDecodeError as exc:
            self._error("invalid_json", "the frame is not valid JSON", position=exc.pos)
            return
        try:
            await self.receive_json(content)
        except ProtocolError as exc:
            self._error(exc.code, str(exc), **exc.details)
        except Exception:
            # Never let a client message take the socket down; never log its content.
            logger.exception("ws: unexpected error handling a %s message", _type_label(content))
            self._error("internal_error", "the server could not handle this message")

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # Validation is events/protocol.py's, all of it: a handler gets a valid payload model.
        msg_type, payload = protocol.envelope(content)
        handler = _HANDLERS.get(msg_type)
        metrics.INBOUND.labels(type=msg_type if handler else "unknown").inc()
        if handler is None:
            raise protocol.unknown_type()
        await handler(self, protocol.client_payload(msg_type, payload))

    async def _on_ping(self, payload: protocol.NoPayload) -> None:
        self._push(_now_frame("pong", {}))

    async def _on_get_status(self, payload: protocol.NoPayload) -> None:
        self._push(
            _now_frame(
                "status",
                {
                    "clientId": self.client_id,
                    "userId": self.user.get_username() if self.user is not None else None,
                    "projectId": self.scope_project,
                    "runId": self.scope_run,
                    "subscriptions": sorted(self.subscriptions),
                    "messageCount": self.message_count,
                    "lastEventId": self.last_sent_id or None,
                },
            )
        )

    async def _on_subscribe(self, payload: protocol.SubscriptionTarget) -> None:
        key, name = payload.target()
        before = self._types
        self.subscriptions.add(name)
        self._recompute_types()
        self._push(
            _now_frame(
                "subscription.added", {key: name, "subscriptions": sorted(self.subscriptions)}
            )
        )
        if self._cursor is not None and self.user is not None and self._types != before:
            # Resume from the socket's position: every type it now has, from the log, above
            # the last id it was given (the writer's stream only goes up, so nothing earlier
            # could reach the client in order). Until the socket has been given anything past
            # the cursor that position is the cursor itself: auth(lastEventId) → subscribe →
            # subscribe loses nothing of either subscription.
            self._held = []
            await self._replay(max(self._cursor, self._last_queued_id))

    async def _on_unsubscribe(self, payload: protocol.SubscriptionTarget) -> None:
        key, name = payload.target()
        if name not in self.subscriptions:
            raise ProtocolError("not_subscribed", f"not subscribed to {name}", **{key: name})
        self.subscriptions.discard(name)
        self._recompute_types()
        self._push(
            _now_frame(
                "subscription.removed", {key: name, "subscriptions": sorted(self.subscriptions)}
            )
        )

    async def _on_auth(self, payload: protocol.Auth) -> None:
        last_event_id = payload.last_event_id
        wanted = payload.subscriptions()

        credential = self.credential
        token = payload.token
        if token:
            credential = await database_sync_to_async(credentials.resolve_token)(token)
            if credential is None:
                return self._auth_failed("invalid or expired token")
        if credential is None:
            return self._auth_failed("authentication required: send a token or use a session")
        user = credential.user
        if payload.user_id is not None and payload.user_id != user.get_username():
            return self._auth_failed("userId does not match the authenticated user")
        run_id = payload.run_id
        try:
            # One message for "doesn't exist" and "not yours": never confirm a foreign id.
            project_id, member_of = await authorised_scope(user, payload.project_id, run_id)
        except ScopeRefused as exc:
            return self._auth_failed(str(exc))

        if self.user_id != user.pk:
            self._release_slot()
            if not self._claim_slot(user.pk):
                self._auth_failed("too many open connections for this user")
                self._close_after_flush(CLOSE_TOO_MANY)
                return None
        self.credential = credential
        self.scope_project = project_id
        self.scope_run = run_id
        if wanted is not None:
            self.subscriptions = wanted
            self._recompute_types()
        if last_event_id is not None:
            self._cursor = last_event_id
            if self._types:
                self._held = []  # from here on, live events wait until the replay is done
        await self._set_user(user, member_of)
        self._push(
            _now_frame(
                "auth.success",
                {"userId": user.get_username(), "projectId": project_id, "runId": run_id},
            )
        )
        if last_event_id is not None and self._held is not None:
            await self._replay(last_event_id)
        # With no subscriptions yet the cursor waits for the first one (_on_subscribe).
        return None

    async def _on_resume(self, payload: protocol.Resume) -> None:
        if self.user is None:
            raise ProtocolError("not_authenticated", "authenticate before resuming")
        after = max(payload.last_event_id, self.last_sent_id)
        self._cursor = after
        if not self._types:
            return  # nothing to replay yet: the first subscription resumes from the cursor
        self._held = []
        await self._replay(after)

    def _auth_failed(self, message: str) -> None:
        self._push(_now_frame("auth.failed", {"message": message}))

    # --- outbound ------------------------------------------------------------------------

    def offer(self, event: LoggedEvent, message: dict[str, Any] | None = None) -> None:
        """From the hub: send or queue the event if this socket may see it and subscribed to
        it. `message` is the event's ASGI send message, built once for every socket."""
        if self._closing or event.type not in self._types or self.user is None:
            return
        if self.scope_run is not None and event.run_id != self.scope_run:
            return
        projects = self.visible_projects
        if projects is not None and event.project_id not in projects:
            return
        if self._held is not None:
            self._held.append(event)
            return
        self._enqueue(event, message=message)

    def _error(self, code: str, message: str, **details: Any) -> None:
        self._push(_now_frame("error", {"message": message, "details": {"code": code, **details}}))

    # --- helpers -------------------------------------------------------------------------

    def _recompute_types(self) -> None:
        key = frozenset(self.subscriptions)
        types = _TYPES_OF.get(key)
        if types is None:
            types = frozenset(t for name in key for t in EVENT_CATEGORIES.get(name, (name,)))
            if len(_TYPES_OF) < _SHARED_MAX:  # the key space is finite, but stay bounded
                _TYPES_OF[key] = types
        self._types = types

    def stats_snapshot(self) -> tuple[bool, frozenset[str]]:
        return self.user is not None, frozenset(self.subscriptions)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return orjson.dumps(content).decode()


_HANDLERS: dict[str, Callable[[RunEventsConsumer, Any], Awaitable[None]]] = {
    "ping": RunEventsConsumer._on_ping,
    "auth": RunEventsConsumer._on_auth,
    "subscribe": RunEventsConsumer._on_subscribe,
    "unsubscribe": RunEventsConsumer._on_unsubscribe,
    "resume": RunEventsConsumer._on_resume,
    "get_status": RunEventsConsumer._on_get_status,
}


# Per-socket state that many sockets have in common is shared, not copied per socket: the set
# of event types a subscription maps to. It is immutable, so sharing changes nothing but
# memory. (Visible projects are shared the same way, viewer.py; the names a client subscribes
# with are the catalogue's own strings, events/protocol.py swaps them in.)
_SHARED_MAX = 4096
_TYPES_OF: dict[frozenset[str], frozenset[str]] = {}


def _type_label(content: Any) -> str:
    if isinstance(content, dict) and content.get("type") in _HANDLERS:
        return str(content["type"])
    return "unrecognised"
