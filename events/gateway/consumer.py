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
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from events import metrics
from events.limits import MAX_EVENT_ID, MAX_LIST_ITEMS
from events.record import LoggedEvent
from events.schemas import CATEGORY_OF, EVENT_CATEGORIES
from runs import access

from . import credentials
from .deadlines import CLOSE_GOING_AWAY, DEADLINES_SLOTS, Deadlines
from .hub import Hub
from .ratelimit import TokenBucket
from .replay import REPLAY_SLOTS, Replay
from .viewer import VIEWER_SLOTS, Viewer
from .writer import SocketWriter
from .writer import control_frame as _now_frame

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "1.0"

CLOSE_POLICY = 1008  # the client ignored WS_RATE_BURST rate-limit errors in a row
CLOSE_TOO_BIG = 1009
CLOSE_TOO_MANY = 4429  # the user already has WS_MAX_SOCKETS_PER_USER sockets open

AUTH_FIELDS = frozenset(
    {"token", "userId", "projectId", "runId", "lastEventId", "eventTypes", "eventCategories"}
)
_NO_LAYER = (
    "researchflow.no-per-socket-channel"  # an alias with no config: get_channel_layer → None
)


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


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
        # callbacks (~1.7 KiB, docs/benchmarks.md). With one message source, awaiting it
        # directly dispatches the same messages in the same order.
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
        self._start_writer(settings.WS_SEND_QUEUE)
        self._start_replay()
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
        if not isinstance(content, dict):
            raise ProtocolError("invalid_message", "a message must be a JSON object")
        msg_type = content.get("type")
        if not isinstance(msg_type, str):
            raise ProtocolError("invalid_message", "a message needs a string 'type'")
        extra = set(content) - {"type", "payload"}
        if extra:
            raise ProtocolError(
                "invalid_message", "unknown top-level fields", fields=sorted(extra)[:10]
            )
        payload = content.get("payload", {})
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ProtocolError("invalid_message", "'payload' must be an object")
        handler = _HANDLERS.get(msg_type)
        metrics.INBOUND.labels(type=msg_type if handler else "unknown").inc()
        if handler is None:
            raise ProtocolError(
                "unknown_type",
                f"unknown message type; expected one of {', '.join(sorted(_HANDLERS))}",
            )
        await handler(self, payload)

    async def _on_ping(self, payload: dict[str, Any]) -> None:
        _only(payload, set())
        self._push(_now_frame("pong", {}))

    async def _on_get_status(self, payload: dict[str, Any]) -> None:
        _only(payload, set())
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

    async def _on_subscribe(self, payload: dict[str, Any]) -> None:
        key, name = _subscription_target(payload)
        self.subscriptions.add(name)
        self._recompute_types()
        self._push(
            _now_frame(
                "subscription.added", {key: name, "subscriptions": sorted(self.subscriptions)}
            )
        )

    async def _on_unsubscribe(self, payload: dict[str, Any]) -> None:
        key, name = _subscription_target(payload)
        if name not in self.subscriptions:
            raise ProtocolError("not_subscribed", f"not subscribed to {name}", **{key: name})
        self.subscriptions.discard(name)
        self._recompute_types()
        self._push(
            _now_frame(
                "subscription.removed", {key: name, "subscriptions": sorted(self.subscriptions)}
            )
        )

    async def _on_auth(self, payload: dict[str, Any]) -> None:
        _only(payload, AUTH_FIELDS)
        for field in ("token", "userId", "projectId", "runId"):
            if payload.get(field) is not None and not isinstance(payload[field], str):
                raise ProtocolError("invalid_message", f"auth.{field} must be a string")
        last_event_id = _optional_event_id(payload.get("lastEventId"), "auth.lastEventId")
        wanted = _subscription_lists(payload)

        credential = self.credential
        token = payload.get("token")
        if token:
            credential = await database_sync_to_async(credentials.resolve_token)(token)
            if credential is None:
                return self._auth_failed("invalid or expired token")
        if credential is None:
            return self._auth_failed("authentication required: send a token or use a session")
        user = credential.user
        if payload.get("userId") is not None and payload["userId"] != user.get_username():
            return self._auth_failed("userId does not match the authenticated user")
        member_of = await database_sync_to_async(access.member_projects)(user)
        project_id = payload.get("projectId")
        run_id = payload.get("runId")
        # One message for "doesn't exist" and "not yours": never confirm a foreign id.
        if project_id is not None and member_of is not None and project_id not in member_of:
            return self._auth_failed("project not found or not accessible")
        if (
            project_id is not None
            and member_of is None
            and not await database_sync_to_async(access.project_exists)(project_id)
        ):
            return self._auth_failed("project not found or not accessible")
        if run_id is not None:
            run_project = await database_sync_to_async(access.run_project)(run_id)
            if (
                run_project is None
                or (member_of is not None and run_project not in member_of)
                or (project_id is not None and run_project != project_id)
            ):
                return self._auth_failed("run not found or not accessible")
            project_id = project_id or run_project

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
            self._held = []  # from here on, live events wait until the replay is done
        await self._set_user(user, member_of)
        self._push(
            _now_frame(
                "auth.success",
                {"userId": user.get_username(), "projectId": project_id, "runId": run_id},
            )
        )
        if last_event_id is not None:
            await self._replay(last_event_id)
        return None

    async def _on_resume(self, payload: dict[str, Any]) -> None:
        _only(payload, {"lastEventId"})
        last_event_id = _optional_event_id(payload.get("lastEventId"), "resume.lastEventId")
        if last_event_id is None:
            raise ProtocolError("invalid_message", "resume.lastEventId is required")
        if self.user is None:
            raise ProtocolError("not_authenticated", "authenticate before resuming")
        self._held = []
        await self._replay(max(last_event_id, self.last_sent_id))

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


_HANDLERS = {
    "ping": RunEventsConsumer._on_ping,
    "auth": RunEventsConsumer._on_auth,
    "subscribe": RunEventsConsumer._on_subscribe,
    "unsubscribe": RunEventsConsumer._on_unsubscribe,
    "resume": RunEventsConsumer._on_resume,
    "get_status": RunEventsConsumer._on_get_status,
}


# Per-socket state that many sockets have in common is shared, not copied per socket: the set
# of event types a subscription maps to (~0.7 KiB each) and the names a client subscribes with
# (strings parsed from its frames would otherwise be kept per socket). Both are immutable, so
# sharing changes nothing but memory. (Visible projects are shared the same way: viewer.py.)
_SHARED_MAX = 4096
_TYPES_OF: dict[frozenset[str], frozenset[str]] = {}
_NAMES = {name: name for name in (*CATEGORY_OF, *EVENT_CATEGORIES)}


def _type_label(content: Any) -> str:
    if isinstance(content, dict) and content.get("type") in _HANDLERS:
        return str(content["type"])
    return "unrecognised"


def _only(payload: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
    extra = set(payload) - set(allowed)
    if extra:
        raise ProtocolError(
            "invalid_message",
            "unknown payload fields"
            + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else ""),
            fields=sorted(str(f)[:40] for f in extra)[:10],
        )


def _subscription_target(payload: dict[str, Any]) -> tuple[str, str]:
    _only(payload, {"eventType", "eventCategory"})
    if ("eventType" in payload) == ("eventCategory" in payload):
        raise ProtocolError("invalid_message", "give exactly one of eventType or eventCategory")
    if "eventType" in payload:
        name = payload["eventType"]
        if not isinstance(name, str) or name not in CATEGORY_OF:
            raise ProtocolError(
                "unknown_event_type",
                "unknown event type",
                allowed=sorted(CATEGORY_OF),
            )
        return "eventType", _NAMES[name]
    name = payload["eventCategory"]
    if not isinstance(name, str) or name not in EVENT_CATEGORIES:
        raise ProtocolError(
            "unknown_category", "unknown event category", allowed=sorted(EVENT_CATEGORIES)
        )
    return "eventCategory", _NAMES[name]


def _subscription_lists(payload: dict[str, Any]) -> set[str] | None:
    types = payload.get("eventTypes")
    categories = payload.get("eventCategories")
    if types is None and categories is None:
        return None
    wanted: set[str] = set()
    for field, value, known, code in (
        ("eventTypes", types, CATEGORY_OF, "unknown_event_type"),
        ("eventCategories", categories, EVENT_CATEGORIES, "unknown_category"),
    ):
        if value is None:
            continue
        if not isinstance(value, list):
            raise ProtocolError("invalid_message", f"auth.{field} must be a list of names")
        if len(value) > MAX_LIST_ITEMS:
            raise ProtocolError(
                "invalid_message",
                f"auth.{field}: at most {MAX_LIST_ITEMS} items",
                field=f"auth.{field}",
                maxItems=MAX_LIST_ITEMS,
            )
        for name in value:
            if not isinstance(name, str) or name not in known:
                raise ProtocolError(code, f"auth.{field}: unknown name", allowed=sorted(known))
            wanted.add(_NAMES[name])
    return wanted


def _optional_event_id(value: Any, field: str) -> int | None:
    """A JSON integer in 0..MAX_EVENT_ID, or None. Nothing else: not a float even if whole
    (`1.0`, `1e19`), not a bool, not a numeric string. The JSON parser already tells integers
    from floats (`1` vs `1.0`), so the rule is the same whatever the number's size."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            "invalid_message",
            f"{field} must be an integer between 0 and {MAX_EVENT_ID} (got {_json_kind(value)})",
            field=field,
        )
    if not 0 <= value <= MAX_EVENT_ID:
        raise ProtocolError(
            "invalid_message",
            f"{field} must be an integer between 0 and {MAX_EVENT_ID}",
            field=field,
        )
    return value


def _json_kind(value: Any) -> str:
    """The JSON type of a parsed value, for error messages (never the value itself)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "another type"
