"""The `/ws` consumer: the seed's manager.ts protocol on an AsyncJsonWebsocketConsumer.

Parsing and replies here; ORM access in `runs/access.py`, `events/log.py` and
`credentials.py` through `database_sync_to_async`, fan-out in `hub.py`. Events never pass
through the consumer's dispatch: the hub calls `offer()` with a frame encoded once for every
socket. A socket with nothing queued sends at once, without a task (`_send_now`); under
back-pressure a per-socket writer task drains a bounded queue, so a slow client only ever
delays itself.

The consumer opts out of a per-socket channel-layer channel (see `channel_layer_alias`): the
hub is the only layer listener in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from events import log, metrics, protocol
from events.protocol import PROTOCOL_VERSION, ProtocolError
from events.record import LoggedEvent
from events.schemas import EVENT_CATEGORIES, iso_timestamp
from runs import access

from . import credentials
from .hub import Hub

logger = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SLOW_CONSUMER = 4008
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429

_NO_LAYER = (
    "researchflow.no-per-socket-channel"  # an alias with no config: get_channel_layer → None
)


def _now_frame(msg_type: str, payload: dict[str, Any]) -> str:
    return orjson.dumps(
        {"type": msg_type, "timestamp": iso_timestamp(), "payload": payload}
    ).decode()


class RunEventsConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = _NO_LAYER
    groups: tuple[str, ...] = ()  # channels' default gives each instance its own empty list

    # Slots, not a __dict__: with more than 30 attributes an instance dict stops sharing its
    # keys and costs ~1.6 KiB per socket; slots cost 8 bytes each. The base classes have no
    # __slots__, so an attribute missing here still works but lands in a per-instance dict
    # (tests/test_ws_memory.py fails then: add it here).
    __slots__ = (  # scope, channel_layer, base_send: set by channels' AsyncConsumer
        "_close_code",
        "_closing",
        "_connected_at",
        "_going_away",
        "_held",
        "_last_inbound",
        "_last_queued_id",
        "_member_of",
        "_progress_slots",
        "_queue",
        "_queue_limit",
        "_queued",
        "_rejected_streak",
        "_replay_queued",
        "_slot_claimed",
        "_timer",
        "_tokens",
        "_tokens_at",
        "_types",
        "_writer",
        "base_send",
        "channel_layer",
        "client_id",
        "credential",
        "hub",
        "last_sent_id",
        "message_count",
        "scope",
        "scope_project",
        "scope_run",
        "subscriptions",
        "user",
        "user_id",
        "visible_projects",
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
        self.user: Any = None
        self.credential: credentials.Credential | None = None
        self.user_id: int | None = None
        self.visible_projects: frozenset[str] | None = frozenset()
        self.scope_project: str | None = None
        self.scope_run: str | None = None
        self._member_of: frozenset[str] | None = frozenset()
        self.subscriptions: set[str] = set()
        self._types: frozenset[str] = frozenset()
        self.message_count = 0
        self.last_sent_id = 0
        self._last_queued_id = 0
        # Read once: Django's settings is a LazyObject, and _enqueue runs once per delivery.
        self._queue_limit: int = settings.WS_SEND_QUEUE
        # Built on first use: frames queue only behind a send that suspended (back-pressure),
        # so most sockets never need one (~0.7 KiB each, docs/benchmarks.md section 3).
        self._queue: deque[list[Any]] | None = None
        self._queued = 0
        self._replay_queued = 0  # of _queued: replayed events (not held to WS_SEND_QUEUE)
        self._progress_slots: dict[str, list[Any]] = {}
        self._held: list[LoggedEvent] | None = None  # events held while a resume replays
        self._closing = False
        self._going_away = False
        self._close_code: int | None = None
        self._slot_claimed = False
        self._tokens = float(settings.WS_RATE_BURST)
        self._tokens_at = time.monotonic()
        self._rejected_streak = 0
        self._last_inbound = time.monotonic()
        self._connected_at = self._last_inbound
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

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
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._writer is not None:
            self._writer.cancel()
        self.hub.remove(self)
        if self._slot_claimed and self.user_id is not None:
            self.hub.release_user_slot(self.user_id)
            self._slot_claimed = False
        metrics.SOCKETS_OPEN.dec()
        metrics.CLOSES.labels(code=str(self._close_code or code)).inc()

    async def _close(self, code: int, reason: str | None = None) -> None:
        if self._close_code is None:
            self._close_code = code
        self._closing = True
        self._queue = None
        self._queued = 0
        self._replay_queued = 0
        with contextlib.suppress(Exception):
            await self.close(code=code, reason=reason)

    def _close_after_flush(self, code: int) -> None:
        """Close once the frames already queued (the reason, say) have been sent."""
        self._backlog().append([("close", code), 0])
        self._queued += 1
        self._wake()

    def go_away(self) -> None:
        """Server shutdown (`Hub.drain`): send what is queued, then close 1001 (going away),
        so the client reconnects to another process and resumes from the last id it got."""
        if not self._closing and not self._going_away:
            self._going_away = True
            self._close_after_flush(CLOSE_GOING_AWAY)

    def _close_soon(self, code: int) -> None:
        if not self._closing:
            self._closing = True
            self._close_code = code
            asyncio.get_running_loop().create_task(self._close(code))

    # --- timers: auth deadline, heartbeat ------------------------------------------------

    def _arm_timer(self) -> None:
        # One timer per socket, due at the next deadline (auth, or heartbeat silence). It is
        # re-armed only when it fires, so an idle socket costs one wake-up per timeout
        # period, not one per second.
        deadline = self._last_inbound + settings.WS_HEARTBEAT_TIMEOUT
        if self.user is None:
            deadline = min(deadline, self._connected_at + settings.WS_AUTH_TIMEOUT)
        delay = max(0.0, deadline - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        if self._closing:
            return
        now = time.monotonic()
        if self.user is None and now - self._connected_at >= settings.WS_AUTH_TIMEOUT:
            self._close_soon(CLOSE_UNAUTHENTICATED)
            return
        if now - self._last_inbound >= settings.WS_HEARTBEAT_TIMEOUT:
            self._close_soon(CLOSE_GOING_AWAY)
            return
        self._arm_timer()

    # --- inbound -------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self._last_inbound = time.monotonic()
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
        if not self._take_token():
            metrics.INBOUND.labels(type="rate_limited").inc()
            self._rejected_streak += 1
            if self._rejected_streak >= settings.WS_RATE_BURST:
                await self._close(CLOSE_POLICY)
                return
            self._error(
                "rate_limited",
                f"too many messages: at most {settings.WS_RATE_LIMIT:g}/s "
                f"(bursts of {settings.WS_RATE_BURST}); this message was ignored",
            )
            return
        self._rejected_streak = 0
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

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(
            float(settings.WS_RATE_BURST),
            self._tokens + (now - self._tokens_at) * settings.WS_RATE_LIMIT,
        )
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

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
        self.subscriptions.add(name)
        self._recompute_types()
        self._push(
            _now_frame(
                "subscription.added", {key: name, "subscriptions": sorted(self.subscriptions)}
            )
        )

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
        member_of = await database_sync_to_async(access.member_projects)(user)
        project_id = payload.project_id
        run_id = payload.run_id
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
            if self._slot_claimed and self.user_id is not None:
                self.hub.release_user_slot(self.user_id)
                self._slot_claimed = False
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

    async def _on_resume(self, payload: protocol.Resume) -> None:
        if self.user is None:
            raise ProtocolError("not_authenticated", "authenticate before resuming")
        self._held = []
        await self._replay(max(payload.last_event_id, self.last_sent_id))

    def _auth_failed(self, message: str) -> None:
        self._push(_now_frame("auth.failed", {"message": message}))

    def _claim_slot(self, user_id: int) -> bool:
        if not self.hub.claim_user_slot(user_id):
            return False
        self._slot_claimed = True
        return True

    async def _set_user(self, user: Any, member_of: frozenset[str] | str | None = "load") -> None:
        if member_of == "load":
            member_of = await database_sync_to_async(access.member_projects)(user)
        assert not isinstance(member_of, str)
        self.user = user
        self.user_id = user.pk
        self._member_of = _shared(member_of)
        self._narrow()
        # The hub may have to start hearing this socket's shards: from then on what it may see
        # reaches it (hub.py), so only then is it told it is authenticated, or replays the log.
        await self.hub.settled()

    def _narrow(self) -> None:
        """Visible projects = membership ∩ the socket's scope; re-index in the hub."""
        if self.scope_project is not None:
            allowed = self._member_of is None or self.scope_project in self._member_of
            self.visible_projects = (
                _shared(frozenset({self.scope_project})) if allowed else frozenset()
            )
        else:
            self.visible_projects = self._member_of
        self.hub.reindex(self)

    def apply_standing(
        self, standing: credentials.Standing | None, valid: set[str | credentials.SessionRef]
    ) -> None:
        """Called by the hub's periodic re-check: revoked credentials stop the stream (a
        deactivated user, a deleted REST token, a session ended by logout, flush, expiry or a
        password change)."""
        if self.user is None or self._closing:
            return
        key = self.credential_key()
        if standing is None or not standing.active or (key is not None and key not in valid):
            self.visible_projects = frozenset()
            self.hub.reindex(self)
            self._close_soon(CLOSE_UNAUTHENTICATED)
            return
        member_of = None if standing.staff else standing.projects
        if member_of != self._member_of:
            self._member_of = _shared(member_of)
            self._narrow()
            if self.scope_project is not None and not self.visible_projects:
                self._close_soon(CLOSE_FORBIDDEN)

    def credential_key(self) -> str | credentials.SessionRef | None:
        cred = self.credential
        return cred.key() if cred is not None else None

    # --- replay --------------------------------------------------------------------------

    async def _replay(self, after: int) -> None:
        """Log events > after, then whatever arrived live meanwhile: no gap, no duplicate."""
        try:
            pruned = await database_sync_to_async(log.pruned_through)()
            limit = settings.WS_RESUME_MAX_EVENTS
            if after < pruned:
                self._resync(after, pruned + 1)
                return
            events = (
                await database_sync_to_async(log.visible_after)(
                    after,
                    projects=self.visible_projects,
                    run_id=self.scope_run,
                    types=self._types,
                    limit=limit + 1,
                )
                if self._types and self.visible_projects != frozenset()
                else []
            )
            if len(events) > limit:
                self._resync(after, pruned + 1)
                return
            for event in events:
                self._enqueue(event, replayed=True)
            metrics.RESUME_REPLAYED.inc(len(events))
        finally:
            held, self._held = self._held or [], None
            for event in held:
                self.offer(event)

    def _resync(self, after: int, oldest: int) -> None:
        metrics.RESYNC_REQUIRED.inc()
        self._push(_now_frame("resync.required", {"lastEventId": after, "oldestEventId": oldest}))

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

    def _enqueue(
        self,
        event: LoggedEvent,
        *,
        replayed: bool = False,
        message: dict[str, Any] | None = None,
    ) -> None:
        """Send or queue one event. `replayed` (a resume from the log): never coalesced, since
        resume promises every event, and not counted against WS_SEND_QUEUE — a replay is bounded
        by WS_RESUME_MAX_EVENTS instead, and a client catching up on a slow link must not be
        closed as a slow consumer by its own backlog. Live events queued behind a replay still
        meet the limit on their own."""
        if event.id <= self._last_queued_id:
            return  # already queued or sent: the per-socket stream is strictly increasing
        self._last_queued_id = event.id
        if self._writer is None and not self._queue:
            # Nothing queued, no writer: hand the frame to the server now, with no task.
            if self._send_now(message or {"type": "websocket.send", "text": event.frame}, event):
                self._sent(event)
            return
        if replayed:
            slot: list[Any] = [event, event.id, _REPLAYED]
            self._replay_queued += 1
        else:
            if event.type == "stage.progress":
                stage_id = event.stage_id
                previous = self._progress_slots.get(stage_id)
                if previous is not None and previous[0] is not None:
                    # The client is behind on this stage: the newer progress supersedes it.
                    previous[0] = None
                    self._queued -= 1
                    self.hub.coalesced += 1
                slot = [event, event.id]
                self._progress_slots[stage_id] = slot
            else:
                slot = [event, event.id]
            if self._queued - self._replay_queued >= self._queue_limit:
                self.hub.dropped += self._queued + 1
                metrics.DROPPED.labels(reason="slow_consumer").inc(self._queued + 1)
                metrics.SLOW_CONSUMER_CLOSES.inc()
                self._close_soon(CLOSE_SLOW_CONSUMER)
                return
        self._backlog().append(slot)
        self._queued += 1
        self._wake()

    def _push(self, frame: str) -> None:
        """Queue a control frame behind any events already queued, preserving order."""
        if self._closing:
            return
        if self._writer is None and not self._queue:
            self._send_now({"type": "websocket.send", "text": frame})
            return
        self._backlog().append([frame, 0])
        self._queued += 1
        self._wake()

    def _error(self, code: str, message: str, **details: Any) -> None:
        self._push(_now_frame("error", {"message": message, "details": {"code": code, **details}}))

    def _backlog(self) -> deque[list[Any]]:
        if self._queue is None:
            self._queue = deque()
        return self._queue

    def _wake(self) -> None:
        # The writer exists only while there is something to send: an idle socket holds no
        # task (memory per socket is the cost that decides how many sockets a process holds).
        if self._writer is None and self._queue:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def _send_now(self, message: dict[str, Any], event: LoggedEvent | None = None) -> bool:
        """Send one frame without a task: the common case, where the server takes it at once.

        An ASGI `send` is a coroutine, but uvicorn's and daphne's only suspend under
        back-pressure (the client's TCP window is full). So it is driven by hand: if it
        finishes in one step, the frame is on the transport and no task was made — at fan-out
        rates a task per socket per event costs more than the frame (docs/benchmarks.md).
        If it suspends, a writer task takes the half-sent coroutine over (`_Resume`) and
        everything after it queues behind, so order is kept and a slow client meets the
        queue limit as before. The coroutine runs in the caller's task and context (the
        hub's): nothing in a server's `send` depends on either. True: sent; False: refused,
        or still going (the writer counts `event` as sent once it is).
        """
        coro = self.base_send(message)
        try:
            blocked_on = coro.send(None)
        except StopIteration:
            return True
        except Exception:
            # The server refused the frame (the client has gone): its disconnect follows
            # through receive; stop offering this socket anything meanwhile.
            self._closing = True
            return False
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(_Resume(coro, blocked_on), event)
        )
        return False

    def _sent(self, event: LoggedEvent) -> None:
        self.last_sent_id = event.id
        self.message_count += 1
        hub = self.hub
        hub.delivered += 1
        if not hub.delivered & 15 and event.committed_at:
            # Sampled: a histogram observation per frame costs more than the frame.
            metrics.PUBLISH_TO_SEND.observe(max(0.0, time.time() - event.committed_at))

    async def _write_loop(
        self, pending: _Resume | None = None, pending_event: LoggedEvent | None = None
    ) -> None:
        send = self.base_send
        try:
            if pending is not None:
                await pending
                if pending_event is not None:
                    self._sent(pending_event)
            # No await between the emptiness check and leaving: nothing can slip in unseen.
            while queue := self._queue:
                slot = queue.popleft()
                item, event_id = slot[0], slot[1]
                if item is None:
                    continue  # coalesced away
                self._queued -= 1
                if len(slot) == 3:
                    self._replay_queued -= 1
                if isinstance(item, str):
                    await send({"type": "websocket.send", "text": item})
                    continue
                if isinstance(item, tuple):
                    await self._close(item[1])
                    return
                if item.type == "stage.progress":
                    latest = self._progress_slots.get(item.stage_id)
                    if latest is not None and latest[1] == event_id:
                        del self._progress_slots[item.stage_id]
                await send({"type": "websocket.send", "text": item.frame})
                self._sent(item)
        except Exception:
            # The server refused a frame (the client has gone), as in _send_now: its
            # disconnect follows through receive. Not re-raised into a task nobody awaits.
            self._closing = True
        finally:
            self._writer = None
            if not self._queue:
                self._queue = None  # drained: back to sending at once, and to no queue

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


class _Resume:
    """Awaiting it carries on a coroutine that `_send_now` started by hand and that suspended.

    `blocked_on` is what the coroutine yielded to its (absent) task: the future it waits on.
    Yielding it up makes the writer task wait on it exactly as if the coroutine had been
    awaited from the start; sends and throws (cancellation) are passed down to it.
    """

    __slots__ = ("_blocked_on", "_coro")

    def __init__(self, coro: Any, blocked_on: Any) -> None:
        self._coro = coro
        self._blocked_on = blocked_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._blocked_on
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # passed down, as `await` would
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


_REPLAYED = True  # the third element of a queue slot that holds a replayed event

_HANDLERS: dict[str, Callable[[RunEventsConsumer, Any], Awaitable[None]]] = {
    "ping": RunEventsConsumer._on_ping,
    "auth": RunEventsConsumer._on_auth,
    "subscribe": RunEventsConsumer._on_subscribe,
    "unsubscribe": RunEventsConsumer._on_unsubscribe,
    "resume": RunEventsConsumer._on_resume,
    "get_status": RunEventsConsumer._on_get_status,
}


# Per-socket state that many sockets have in common is shared, not copied per socket: the set
# of event types a subscription maps to (~0.7 KiB each) and the visible projects (the names a
# client subscribes with are the catalogue's own strings: events/protocol.py swaps them in).
# All are immutable, so sharing changes nothing but memory.
_SHARED_MAX = 4096
_TYPES_OF: dict[frozenset[str], frozenset[str]] = {}
_SHARED: dict[frozenset[str], frozenset[str]] = {}


def _shared(projects: frozenset[str] | None) -> frozenset[str] | None:
    """One instance per distinct set of projects. Bounded: past the limit, the table starts
    over (the sets already handed out stay valid)."""
    if projects is None:
        return None
    found = _SHARED.get(projects)
    if found is not None:
        return found
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    _SHARED[projects] = projects
    return projects


def _type_label(content: Any) -> str:
    if isinstance(content, dict) and content.get("type") in _HANDLERS:
        return str(content["type"])
    return "unrecognised"
