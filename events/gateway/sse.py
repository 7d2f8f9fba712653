"""`GET /events/stream`: the `/ws` event stream as Server-Sent Events, for networks whose
proxies break WebSocket upgrades (docs/protocol.md, "Server-Sent Events").

One HTTP response per client, streamed for as long as the client stays: the same events, as
the same JSON frames, chosen by the same rules as on a socket. What must stay true:

- Nothing before the checks. The query is validated with the socket protocol's own models
  (events/protocol.py), the user authenticated and the scope authorised (viewer.py) before
  the response starts, so a bad request gets a precise 400/401/403/404/429 and no stream.
- Same authorisation and the same re-check. The stream is a hub subscriber like a socket
  (`Viewer`): it sees only its user's projects, narrowed to the scope asked for, and the
  hub's periodic re-check ends it (an `event: close` with 4401 or 4403, then the end of the
  response) when the session ends, the token is revoked or the membership is removed.
- Same resume and loss rules. `Last-Event-ID` (the header a browser's EventSource sends when
  it reconnects) or `lastEventId` in the query (the first connect: EventSource cannot set
  headers) replays from the log (replay.py), or answers `resync.required`; the send path is
  the socket's (writer.py): one bounded queue, progress coalescing, a stalled client closed
  with 4008 (it reconnects and resumes).
- One encode per event. Each event's SSE text (`id:`, `event:`, `data:` + the socket's frame)
  and its ASGI message are built once per hub and shared by every stream (`_twin`).
- No long-lived credential in a URL. The session cookie (same-origin pages), an
  `Authorization: Token …` header (any token), or `?token=` holding a short-lived socket token
  from `POST /api/ws/token/` (the usual EventSource compromise); a REST token in the query is
  refused with 400, and access logs drop the query (researchflow/log_hygiene.py).

The stream holds one task (the wait for the client's disconnect) and one heartbeat timer: a
stream costs more than an idle socket, which is why it is the fallback, not the default.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import urllib.parse
import uuid
import weakref
from typing import Any

import orjson
from channels.db import database_sync_to_async
from django.conf import settings

from events import metrics, protocol
from events.limits import MAX_EVENT_ID
from events.protocol import PROTOCOL_VERSION, ProtocolError
from events.record import LoggedEvent
from events.schemas import EVENT_CATEGORIES

from . import credentials
from .deadlines import CLOSE_GOING_AWAY
from .hub import Hub
from .origins import parse_origin
from .replay import Replay
from .security import origin_trusted, server_origin
from .viewer import ScopeRefused, Viewer, authorised_scope
from .writer import SocketWriter, control_frame

STREAM_PATH = "/events/stream"
QUERY_FIELDS = frozenset(
    {"runId", "projectId", "userId", "types", "categories", "lastEventId", "token"}
)
_EVENT_ID = re.compile(r"(?:0|[1-9][0-9]{0,18})")
# How long the last bytes (the close notice) may take to leave; a client that does not take
# them in that time is cut off (the server closes the connection).
_FINAL_SEND_TIMEOUT = 5.0
_HEARTBEAT = {"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True}
_TWINS_MAX = 4096  # events kept per hub with their SSE text (a burst's worth, many times over)


class Refused(Exception):
    """An answer before the stream starts: status, `code` and a message naming the rule."""

    def __init__(
        self, status: int, code: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or []
        self.extra: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class StreamRequest:
    """A validated `GET /events/stream`."""

    project_id: str | None
    run_id: str | None
    user_id: str | None
    subscriptions: set[str]
    last_event_id: int | None
    token: str | None
    cors_origin: str | None  # an allowed foreign origin to answer with CORS headers


def parse_request(scope: dict[str, Any]) -> StreamRequest:
    """The request's parameters, or Refused (400, 403, 405) saying which rule failed."""
    if scope.get("method") != "GET":
        raise Refused(405, "method_not_allowed", "only GET", [(b"allow", b"GET")])
    headers: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers", ()):
        headers.setdefault(name, []).append(value)
    cors_origin = _check_origin(scope, headers)
    try:
        query = urllib.parse.parse_qs(
            scope.get("query_string", b"").decode("latin1"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=len(QUERY_FIELDS) + 1,
        )
    except ValueError:
        raise Refused(400, "invalid_message", "too many query parameters") from None
    unknown = sorted(set(query) - QUERY_FIELDS)
    if unknown:
        refused = Refused(
            400,
            "invalid_message",
            f"unknown query parameters; allowed: {', '.join(sorted(QUERY_FIELDS))}",
        )
        refused.extra["fields"] = [name[:40] for name in unknown][:10]
        raise refused
    one: dict[str, str] = {}
    for name, values in query.items():
        if len(values) != 1:
            raise Refused(400, "invalid_message", f"{name}: give it once")
        one[name] = values[0]

    last_event_id = _event_id(one.get("lastEventId"), "lastEventId")
    header_ids = headers.get(b"last-event-id", [])
    if len(header_ids) > 1:
        raise Refused(400, "invalid_message", "Last-Event-ID: give it once")
    if header_ids and header_ids[0].strip():
        # The browser's own resume point on a reconnect: newer than the first connect's query.
        last_event_id = _event_id(header_ids[0].decode("latin1").strip(), "Last-Event-ID")

    payload: dict[str, Any] = {}
    for field in ("projectId", "runId", "userId"):
        if field in one:
            if not one[field]:
                raise Refused(400, "invalid_message", f"{field} must not be empty")
            payload[field] = one[field]
    if "types" in one or "categories" in one:
        payload["eventTypes"] = _names(one.get("types"))
        payload["eventCategories"] = _names(one.get("categories"))
    try:
        auth: protocol.Auth = protocol.client_payload("auth", payload)
    except ProtocolError as exc:
        refused = Refused(400, exc.code, _query_wording(str(exc)))
        refused.extra.update(
            {k: _query_wording(v) if isinstance(v, str) else v for k, v in exc.details.items()}
        )
        raise refused from None
    wanted = auth.subscriptions()

    token = one.get("token")
    if token is not None and not token.startswith(credentials.SOCKET_TOKEN_PREFIX):
        raise Refused(
            400,
            "invalid_message",
            "token: only a short-lived socket token (POST /api/ws/token/) may be put in the URL; "
            "send a REST API token in the Authorization header",
        )
    authorization = headers.get(b"authorization", [])
    if authorization:
        scheme, _, value = authorization[0].decode("latin1").partition(" ")
        if len(authorization) > 1 or scheme.lower() not in ("token", "bearer") or not value:
            raise Refused(
                400, "invalid_message", "Authorization: expected 'Token <key>' or 'Bearer <key>'"
            )
        if token is not None:
            raise Refused(400, "invalid_message", "give a token in the header or the URL, not both")
        token = value.strip()
    return StreamRequest(
        project_id=auth.project_id,
        run_id=auth.run_id,
        user_id=auth.user_id,
        subscriptions=set(EVENT_CATEGORIES) if wanted is None else wanted,
        last_event_id=last_event_id,
        token=token,
        cors_origin=cors_origin,
    )


def _check_origin(scope: dict[str, Any], headers: dict[bytes, list[bytes]]) -> str | None:
    """The socket's origin policy (security.py) for an HTTP stream: a request from a page of a
    foreign origin is refused (403), whatever credential it carries; one from an origin in
    WS_ALLOWED_ORIGINS is answered with CORS headers. Browsers send `Origin` on every
    cross-origin EventSource and fetch(), and `Sec-Fetch-Site` on every request: a no-cors
    load from another site (`<script src>`) carries no Origin but says `cross-site`."""
    origins = headers.get(b"origin", [])
    if len(origins) > 1:
        raise Refused(403, "forbidden_origin", "more than one Origin")
    hosts = headers.get(b"host", [])
    own = server_origin(
        hosts[0].decode("latin1") if hosts else None,
        "wss" if scope.get("scheme") == "https" else "ws",
        b",".join(headers.get(b"x-forwarded-proto", [])).decode("latin1") or None,
    )
    if origins:
        origin = origins[0].decode("latin1")
        if not origin_trusted(origin, own):
            raise Refused(403, "forbidden_origin", "this origin may not read the event stream")
        return None if parse_origin(origin) == own else origin
    site = headers.get(b"sec-fetch-site", [b"none"])[0]
    if site not in (b"same-origin", b"none"):
        raise Refused(403, "forbidden_origin", "a cross-site request without an Origin")
    return None


def _event_id(value: str | None, field: str) -> int | None:
    if value is None:
        return None
    if not _EVENT_ID.fullmatch(value) or int(value) > MAX_EVENT_ID:
        raise Refused(
            400, "invalid_message", f"{field} must be an integer between 0 and {MAX_EVENT_ID}"
        )
    return int(value)


def _names(value: str | None) -> list[str]:
    return [name for name in (value or "").split(",") if name]


def _query_wording(message: str) -> str:
    """The socket protocol's messages, with the query's parameter names."""
    for field, name in (
        ("auth.eventTypes", "types"),
        ("auth.eventCategories", "categories"),
        ("auth.projectId", "projectId"),
        ("auth.runId", "runId"),
        ("auth.userId", "userId"),
    ):
        message = message.replace(field, name)
    return message


async def authenticate(scope: dict[str, Any], token: str | None) -> credentials.Credential:
    """The token's user, else the session's (as the socket: a session user without its
    session ref is not trusted); Refused(401) without either."""
    if token is not None:
        credential = await database_sync_to_async(credentials.resolve_token)(token)
        if credential is None:
            raise Refused(401, "authentication_failed", "invalid or expired token", _CHALLENGE)
        return credential
    user = scope.get("user")
    session_ref = scope.get("session_ref")
    if (
        user is not None
        and user.is_authenticated
        and user.is_active
        and isinstance(session_ref, credentials.SessionRef)
        and session_ref.user_id == user.pk
    ):
        return credentials.Credential(user, "session", session=session_ref)
    raise Refused(
        401,
        "not_authenticated",
        "authentication required: a session, an Authorization header or a socket token",
        _CHALLENGE,
    )


_CHALLENGE = [(b"www-authenticate", b'Token realm="events"')]


class EventStream(SocketWriter, Viewer, Replay):
    """One client's stream: a hub subscriber whose frames are SSE text on an HTTP response.

    The socket's parts do the work (writer, viewer, replay); this class turns their frames into
    `http.response.body` messages and their close into an `event: close` and the response's
    end. `base_send` (what the writer sends through) takes the shared, prebuilt body messages
    as they are and turns the writer's `websocket.send` messages (a queued frame, already SSE
    text) into body messages.
    """

    def __init__(self, scope: dict[str, Any], send: Any) -> None:
        self.scope = scope
        self._raw_send = send
        self.base_send = self._send_as_body
        self.client_id = uuid.uuid4().hex
        self.subscriptions: set[str] = set()
        self._types: frozenset[str] = frozenset()
        self._ended: asyncio.Future[None] | None = None
        self._finished = False
        self._beat: asyncio.TimerHandle | None = None

    # --- the request ---------------------------------------------------------------------

    async def run(self, receive: Any) -> None:
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        try:
            request = parse_request(self.scope)
            credential = await authenticate(self.scope, request.token)
            user = credential.user
            if request.user_id is not None and request.user_id != user.get_username():
                raise Refused(403, "permission_denied", "userId is not the authenticated user")
            try:
                project_id, member_of = await authorised_scope(
                    user, request.project_id, request.run_id
                )
            except ScopeRefused as exc:
                raise Refused(404, "not_found", str(exc)) from None
        except Refused as refused:
            await self._refuse(refused)
            return

        self.hub = Hub.for_loop()
        self._start_viewer()
        self._start_writer(settings.WS_SEND_QUEUE, settings.WS_SEND_BUFFER_BYTES)
        self._start_replay()
        await self.hub.ready()
        if not self._claim_slot(user.pk):
            await self._refuse(
                Refused(429, "too_many_connections", "too many open connections for this user")
            )
            return
        await self._raw_send(
            {"type": "http.response.start", "status": 200, "headers": _headers(request)}
        )
        metrics.SSE_STREAMS.inc()
        metrics.SSE_STREAMS_OPEN.inc()
        self.hub.add(self)
        receiver = loop.create_task(self._until_disconnect(receive))
        try:
            await self._open(credential, project_id, member_of, request)
            await asyncio.wait({receiver, self._ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiver.cancel()
            self._stop_writer()
            if self._beat is not None:
                self._beat.cancel()
            self.hub.remove(self)
            self._release_slot()
            metrics.SSE_STREAMS_OPEN.dec()
            metrics.SSE_CLOSES.labels(code=str(self._close_code or "client")).inc()

    async def _open(
        self,
        credential: credentials.Credential,
        project_id: str | None,
        member_of: frozenset[str] | None,
        request: StreamRequest,
    ) -> None:
        user = credential.user
        self.credential = credential
        self.scope_project = project_id
        self.scope_run = request.run_id
        self.subscriptions = request.subscriptions
        self._types = frozenset(
            t for name in self.subscriptions for t in EVENT_CATEGORIES.get(name, (name,))
        )
        if request.last_event_id is not None and self._types:
            self._held = []  # live events wait until the replay is done
        username = user.get_username()
        # Before the user is set, so before any event can be offered: the retry hint (how long
        # a browser waits to reconnect once the stream ends; the client library has its own
        # backoff) and the socket's first frame.
        self._send_now(
            {"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True}
        )
        self._push(
            control_frame(
                "connection.established",
                {
                    "clientId": self.client_id,
                    "version": PROTOCOL_VERSION,
                    "authenticated": True,
                    "userId": username,
                },
            )
        )
        await self._set_user(user, member_of)
        self._push(
            control_frame(
                "auth.success",
                {"userId": username, "projectId": project_id, "runId": request.run_id},
            )
        )
        if request.last_event_id is not None and self._held is not None:
            await self._replay(request.last_event_id)
        self._arm_heartbeat()

    async def _refuse(self, refused: Refused) -> None:
        body = orjson.dumps(
            {"detail": refused.detail, "code": refused.code, "errors": {}, **refused.extra}
        )
        await self._raw_send(
            {
                "type": "http.response.start",
                "status": refused.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    *refused.headers,
                ],
            }
        )
        await self._raw_send({"type": "http.response.body", "body": body})

    async def _until_disconnect(self, receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    # --- what the hub and the re-check call ----------------------------------------------

    def offer(self, event: LoggedEvent, message: dict[str, Any] | None = None) -> None:
        """As the socket's `offer`: only what this stream may see and asked for."""
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
        self._enqueue(event)

    def stats_snapshot(self) -> tuple[bool, frozenset[str]]:
        return True, frozenset(self.subscriptions)

    def go_away(self) -> None:
        """Server shutdown: what is queued, then `event: close` (1001); the client resumes
        elsewhere."""
        if not self._closing:
            self._close_after_flush(CLOSE_GOING_AWAY)

    # --- the writer's frames as SSE ------------------------------------------------------

    def _enqueue(
        self,
        event: LoggedEvent,
        *,
        replayed: bool = False,
        message: dict[str, Any] | None = None,
    ) -> None:
        twin, body = _twin(self.hub, event)
        SocketWriter._enqueue(self, twin, replayed=replayed, message=body)

    def _push(self, frame: str) -> None:
        """A control frame (a reply, `resync.required`) as a named SSE event without an id:
        a browser keeps its Last-Event-ID at the last event's."""
        kind = orjson.loads(frame)["type"]
        SocketWriter._push(self, f"event: {kind}\ndata: {frame}\n\n")

    async def _send_as_body(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            message = {
                "type": "http.response.body",
                "body": message["text"].encode(),
                "more_body": True,
            }
        await self._raw_send(message)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """End the response: `event: close` naming the code (as a socket's close code: 4401
        credentials revoked, 4403 scope no longer visible, 4008 slow consumer, 1001 going
        away), then the last chunk. A client that does not take even that is cut off."""
        if self._finished:
            return
        self._finished = True
        frame = control_frame("close", {"code": int(code or 1000), "reason": reason or ""})
        try:
            async with asyncio.timeout(_FINAL_SEND_TIMEOUT):
                await self._raw_send(
                    {
                        "type": "http.response.body",
                        "body": f"event: close\ndata: {frame}\n\n".encode(),
                        "more_body": False,
                    }
                )
        except Exception:  # noqa: S110 (gone, or stalled: either way the response ends here)
            pass
        finally:
            if self._ended is not None and not self._ended.done():
                self._ended.set_result(None)

    # --- heartbeat -----------------------------------------------------------------------

    def _arm_heartbeat(self) -> None:
        self._beat = asyncio.get_running_loop().call_later(
            settings.SSE_HEARTBEAT_INTERVAL, self._heartbeat
        )

    def _heartbeat(self) -> None:
        """A comment line, so proxies and the client see a live stream; skipped while frames
        are queued (they are proof enough, and the client is behind)."""
        if self._closing:
            return
        if self._writer is None and not self._queue:
            self._send_now(_HEARTBEAT)
        self._arm_heartbeat()


def _headers(request: StreamRequest) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
    ]
    if request.cors_origin is not None:
        headers += [
            (b"access-control-allow-origin", request.cors_origin.encode("latin1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
    return headers


# Per hub: event id → (the frame it was built from, its SSE twin, the twin's body message).
# The frame is compared too: ids are positions in one log, and a process may serve more than
# one log over its life (tests).
_TWINS: weakref.WeakKeyDictionary[Hub, dict[int, tuple[str, LoggedEvent, dict[str, Any]]]] = (
    weakref.WeakKeyDictionary()
)


def _twin(hub: Hub, event: LoggedEvent) -> tuple[LoggedEvent, dict[str, Any]]:
    """The event with its frame as SSE text, and the ASGI body message carrying it: built once
    per event (per hub), shared by every stream. The writer counts the twin's frame against
    WS_SEND_BUFFER_BYTES and coalesces it like the event (same id, type and stage)."""
    cache = _TWINS.get(hub)
    if cache is None:
        cache = _TWINS[hub] = {}
    found = cache.get(event.id)
    if found is not None and (found[0] is event.frame or found[0] == event.frame):
        return found[1], found[2]
    text = f"id: {event.id}\nevent: {event.type}\ndata: {event.frame}\n\n"
    twin = dataclasses.replace(event, frame=text)
    body = {"type": "http.response.body", "body": text.encode(), "more_body": True}
    if len(cache) >= _TWINS_MAX:
        for old in list(itertools.islice(cache, _TWINS_MAX // 2)):
            del cache[old]
    cache[event.id] = (event.frame, twin, body)
    return twin, body


async def event_stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app of `GET /events/stream` (behind the socket auth stack: cookies, session)."""
    await EventStream(scope, send).run(receive)


def with_event_stream(stream_app: Any, http_app: Any) -> Any:
    """`http_app` (Django), except for the stream's path, which goes to `stream_app`."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == STREAM_PATH:
            return await stream_app(scope, receive, send)
        return await http_app(scope, receive, send)

    return app
