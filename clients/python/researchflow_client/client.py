"""`RunEvents`: follow a run's (or a project's) events over the public `/ws` protocol.

    async with RunEvents("ws://localhost:3001/ws", token=token, run_id=run_id) as events:
        async for event in events:
            ...

What stays true, and why (the seed client, static/researchflow/run-events.js, does the same):
- One `auth` message restores a socket: the token, the scope, the subscriptions and the cursor
  (`lastEventId`) together, so the server replays exactly the events after the cursor, then
  live ones. The token travels only in that message, never in the URL (URLs end up in logs).
- No event is lost or repeated across reconnects: the cursor is the newest id received, and
  any id at or below the newest yielded one is dropped as a guard.
- A lost socket is retried with exponential backoff and full jitter (`backoff.py`); the
  attempt count resets on every successful `auth`. `auth.failed`, and a close with 4401/4403,
  are final: retrying would be refused the same way.
- Heartbeat: a `ping` every `heartbeat_interval` seconds whatever the traffic (the server
  closes a socket that sent nothing for its WS_HEARTBEAT_TIMEOUT); a socket from which no
  frame at all arrives within `heartbeat_timeout` after a ping is dead: it is dropped and
  the client reconnects.
- A reader task reads the socket continuously into a bounded buffer, so the heartbeat keeps
  working while the caller is busy with an event; a full buffer pauses reading (and the dead
  check, since the silence is then the caller's) and lets TCP push back on the server.
- The token is never logged, nor any payload text.
- `transport="sse"`: the same stream over Server-Sent Events (`GET /events/stream` on the same
  server, `sse.py`), for networks whose proxies refuse WebSocket upgrades. Same events, same
  cursor and resume (`lastEventId` in the query), same errors; the token goes in the
  `Authorization` header. The server's keepalive comments stand in for pong: nothing at all for
  `heartbeat_interval + heartbeat_timeout` seconds means a dead stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl as ssl_module
import urllib.parse
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from . import sse
from .backoff import Backoff
from .catalogue import EVENT_CATEGORIES, EVENT_TYPES
from .errors import (
    AccessRevoked,
    AuthFailed,
    ClientError,
    InvalidURL,
    ResyncRequired,
    ServerUnavailable,
)
from .events import Event, MalformedFrame, parse_event
from .snapshot import RunSnapshot, api_url, load_run
from .urls import check_url

logger = logging.getLogger("researchflow_client")
# websockets logs every frame at DEBUG, and the `auth` frame carries the token: its logger for
# this client's sockets never goes below INFO, whatever the application's logging level.
transport_logger = logging.getLogger("researchflow_client.transport")
transport_logger.setLevel(logging.INFO)

FINAL_CLOSE_CODES = frozenset({4401, 4403})  # credentials or permission: retrying cannot help
BUFFER = 1000  # events read ahead of the caller before reading pauses
MAX_FRAME_BYTES = 1 << 20  # the server's frames are at most 64 KiB; this leaves room
PING = json.dumps({"type": "ping"})
# `error` codes in answer to `auth` that mean the message itself was refused (final).
REFUSED_AUTH = frozenset({"invalid_message", "unknown_event_type", "unknown_category"})
TRANSPORTS = ("websocket", "sse")


class _Retry(Exception):
    """This socket is gone; the supervisor may try again (the message says why)."""


class _Closed:
    """Queue marker: the stream ended without an error (the caller closed it)."""


def _names(given: Iterable[str] | None, known: Iterable[str], what: str) -> list[str] | None:
    if given is None:
        return None
    if isinstance(given, str):
        given = [given]
    names = list(dict.fromkeys(given))
    allowed = list(known)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(allowed)})")
    return names


def _close_code(exc: ConnectionClosed) -> tuple[int, str]:
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return 1006, "connection lost without a close frame"


class RunEvents:
    """The events of one run (`run_id=`) or project (`project_id=`), or of everything the
    token's user may see, as an async iterator of `Event`s. See the module's docstring."""

    def __init__(
        self,
        url: str,
        *,
        token: str,
        run_id: str | None = None,
        project_id: str | None = None,
        event_types: Iterable[str] | None = None,
        event_categories: Iterable[str] | None = None,
        last_event_id: int | None = None,
        reconnect: bool = True,
        max_retries: int | None = 10,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        heartbeat_interval: float = 30.0,
        heartbeat_timeout: float = 10.0,
        open_timeout: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
        transport: str = "websocket",
    ) -> None:
        self.url = check_url(url, ssl)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        self.transport = transport
        # The stream lives on the same server: `…/ws` → `http(s)://…/events/stream`.
        self.stream_url = api_url(self.url, "/events/stream") if transport == "sse" else None
        if not isinstance(token, str) or not token:
            raise ValueError("token= is required: a REST API token (POST /api/auth/token/)")
        if last_event_id is not None and (
            not isinstance(last_event_id, int)
            or isinstance(last_event_id, bool)
            or last_event_id < 0
        ):
            raise ValueError("last_event_id must be an integer >= 0 (0: the whole logged history)")
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must be >= 0, or None to retry for ever")
        if heartbeat_interval <= 0 or heartbeat_timeout <= 0 or open_timeout <= 0:
            raise ValueError("heartbeat_interval, heartbeat_timeout and open_timeout must be > 0")
        self._token = token
        self.run_id = run_id
        self.project_id = project_id
        self.event_types = _names(event_types, EVENT_TYPES, "event type")
        self.event_categories = _names(event_categories, EVENT_CATEGORIES, "event category")
        if self.event_types is None and self.event_categories is None:
            self.event_categories = list(EVENT_CATEGORIES)
        self.reconnect = reconnect
        self.max_retries = max_retries
        self.backoff = Backoff(backoff_initial, backoff_max)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.open_timeout = open_timeout
        self._ssl = ssl
        self.last_event_id: int | None = last_event_id  # the last id yielded to the caller
        self._cursor: int | None = last_event_id  # the newest id received (the resume point)
        self._queue: asyncio.Queue[Event | ClientError | _Closed] = asyncio.Queue(BUFFER)
        self._supervisor: asyncio.Task[None] | None = None
        self._first_auth: asyncio.Future[None] | None = None
        self._ws: ClientConnection | None = None
        self._ping_outstanding_since: float | None = None
        self._authenticated_once_this_session = False
        self._ended = False  # a final error was raised, or the stream was closed

    def __repr__(self) -> str:  # never the token
        scope = f"run_id={self.run_id!r}" if self.run_id else f"project_id={self.project_id!r}"
        return f"RunEvents({self.url!r}, {scope}, last_event_id={self.last_event_id})"

    # --- the caller's side ---------------------------------------------------------------

    async def __aenter__(self) -> RunEvents:
        """Connects and authenticates; raises AuthFailed, AccessRevoked or ServerUnavailable
        (after the retries) when that fails."""
        if self._supervisor is not None:
            raise RuntimeError("a RunEvents can be entered only once; make a new one")
        loop = asyncio.get_running_loop()
        self._first_auth = loop.create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name="researchflow-client")
        try:
            await asyncio.shield(self._first_auth)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._supervisor is None:
            raise RuntimeError("use `async with RunEvents(...) as events:` before iterating")
        while True:
            if self._ended:
                raise StopAsyncIteration
            item = await self._queue.get()
            if isinstance(item, _Closed):
                self._ended = True
                raise StopAsyncIteration
            if isinstance(item, ClientError):
                if not isinstance(item, ResyncRequired):
                    self._ended = True  # final: the stream ends with this error
                raise item
            if self.last_event_id is not None and item.id <= self.last_event_id:
                continue  # already yielded (a guard: the reader drops these already)
            self.last_event_id = item.id
            return item

    async def load_run(self) -> RunSnapshot:
        """This stream's run as it is now, over the REST API, with the same URL, token, SSL
        context and `open_timeout` (`snapshot.load_run`, in a thread): what to do on
        `ResyncRequired`, before iterating on for the live events."""
        if self.run_id is None:
            raise ValueError("load_run() is for a stream of one run (run_id=)")
        return await asyncio.to_thread(
            load_run,
            self.url,
            token=self._token,
            run_id=self.run_id,
            ssl=self._ssl,
            timeout=self.open_timeout,
        )

    async def aclose(self) -> None:
        """Close the socket (1000) and stop reconnecting. Idempotent."""
        self._ended = True  # also stops the supervisor at its next step, should a cancel be lost
        supervisor = self._supervisor
        while supervisor is not None and not supervisor.done():
            supervisor.cancel()
            await asyncio.wait({supervisor}, timeout=1)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_Closed())  # wakes a caller waiting in another task

    # --- the connection's side -----------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0  # consecutive failed attempts; a successful auth resets it
        while not self._ended:
            try:
                await self._session()
                reason = "the connection ended"
            except _Retry as exc:
                reason = str(exc)
            except ClientError as exc:
                await self._fail(exc)
                return
            except Exception as exc:  # a bug here must end the stream, not hang the caller
                logger.exception("researchflow: unexpected client error")
                await self._fail(ClientError(f"unexpected client error: {_describe(exc)}"))
                return
            failures = 0 if self._authenticated_once_this_session else failures
            failures += 1
            if not self.reconnect or (self.max_retries is not None and failures > self.max_retries):
                await self._fail(ServerUnavailable(self.url, failures, reason))
                return
            delay = self.backoff.delay(failures - 1)
            limit = "∞" if self.max_retries is None else str(self.max_retries)
            logger.warning(
                "researchflow: %s; reconnecting in %.1f s (retry %d of %s)",
                reason,
                delay,
                failures,
                limit,
            )
            await asyncio.sleep(delay)

    async def _fail(self, error: ClientError) -> None:
        if self._first_auth is not None and not self._first_auth.done():
            self._first_auth.set_exception(error)
            return
        await self._queue.put(error)

    async def _session(self) -> None:
        """One socket: connect, authenticate, read until it closes. Raises _Retry for what a
        reconnect may fix, a ClientError for what it cannot."""
        self._authenticated_once_this_session = False
        if self.transport == "sse":
            await self._stream_session()
            return
        options: dict[str, Any] = {} if self._ssl is None else {"ssl": self._ssl}
        try:
            ws = await connect(
                self.url,
                **options,  # wss:// without a context: the default one (system CAs)
                open_timeout=self.open_timeout,
                ping_interval=None,  # the protocol's own `ping` keeps the socket alive
                max_size=MAX_FRAME_BYTES,
                close_timeout=2,
                logger=transport_logger,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if 400 <= status < 500 and status not in (408, 429):
                raise InvalidURL(
                    self.url,
                    f"the server refused the WebSocket handshake with HTTP {status} "
                    "(is the path /ws?)",
                ) from None
            raise _Retry(f"the handshake was answered with HTTP {status}") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise _Retry(f"cannot connect ({_describe(exc)})") from None
        self._ws = ws
        heartbeat = asyncio.create_task(self._heartbeat(ws), name="researchflow-heartbeat")
        try:
            await self._authenticate(ws)
            await self._read(ws)
        except ConnectionClosed as exc:
            code, why = _close_code(exc)
            if code in FINAL_CLOSE_CODES:
                raise AccessRevoked(code, why) from None
            raise _Retry(
                f"the server closed the connection ({code}{': ' + why if why else ''})"
            ) from None
        except (OSError, WebSocketException) as exc:
            raise _Retry(f"the connection failed ({_describe(exc)})") from None
        finally:
            heartbeat.cancel()
            self._ws = None
            with contextlib.suppress(Exception):
                await ws.close()

    async def _authenticate(self, ws: ClientConnection) -> None:
        first = await self._receive(ws, self.open_timeout, "connection.established")
        if first.get("type") != "connection.established":
            raise _Retry(f"unexpected first frame {first.get('type')!r}")
        payload: dict[str, Any] = {"token": self._token}
        if self.project_id is not None:
            payload["projectId"] = str(self.project_id)
        if self.run_id is not None:
            payload["runId"] = str(self.run_id)
        if self._cursor is not None:
            payload["lastEventId"] = self._cursor
        if self.event_types is not None:
            payload["eventTypes"] = self.event_types
        if self.event_categories is not None:
            payload["eventCategories"] = self.event_categories
        await ws.send(json.dumps({"type": "auth", "payload": payload}))
        while True:
            reply = await self._receive(ws, self.open_timeout, "the answer to auth")
            kind = reply.get("type")
            body = reply.get("payload") or {}
            if kind == "auth.success":
                self._authenticated_once_this_session = True
                if self._first_auth is not None and not self._first_auth.done():
                    self._first_auth.set_result(None)
                logger.info("researchflow: connected to %s", self.url)
                return
            if kind == "auth.failed":
                raise AuthFailed(str(body.get("message") or "refused"))
            if kind == "error" and (body.get("details") or {}).get("code") in REFUSED_AUTH:
                # Our auth message was refused as malformed: a client bug or an old server.
                raise ClientError(f"the server refused the auth message: {body.get('message')}")
            await self._dispatch(reply)  # a pong that crossed the auth, an event, ...

    async def _receive(self, ws: ClientConnection, limit: float, what: str) -> dict[str, Any]:
        try:
            async with asyncio.timeout(limit):
                raw = await ws.recv()
        except TimeoutError:
            raise _Retry(f"no {what} within {limit:g} s") from None
        self._ping_outstanding_since = None
        return _decode(raw)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            with contextlib.suppress(ConnectionClosed):
                await ws.send(PING)
            if self._ping_outstanding_since is None:
                self._ping_outstanding_since = loop.time()

    async def _read(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            since = self._ping_outstanding_since
            wait = (
                self.heartbeat_interval
                if since is None
                else since + self.heartbeat_timeout - loop.time()
            )
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    raw = await ws.recv()
            except TimeoutError:
                since = self._ping_outstanding_since
                if since is not None and loop.time() - since >= self.heartbeat_timeout:
                    raise _Retry(
                        f"no answer to ping within {self.heartbeat_timeout:g} s (connection dead)"
                    ) from None
                continue
            self._ping_outstanding_since = None
            await self._dispatch(_decode(raw))

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if "id" in frame:
            try:
                event = parse_event(frame)
            except MalformedFrame as exc:
                logger.warning("researchflow: ignored a malformed event frame (%s)", exc)
                return
            if self._cursor is not None and event.id <= self._cursor:
                return  # already received: never yield an event twice
            self._cursor = event.id
            await self._queue.put(event)
            return
        body = frame.get("payload") or {}
        if kind == "resync.required":
            await self._queue.put(
                ResyncRequired(
                    _int_or_none(body.get("lastEventId")), _int_or_none(body.get("oldestEventId"))
                )
            )
        elif kind == "error":
            # A refused message of ours (the socket stays open): worth a line, never fatal.
            details = body.get("details") or {}
            logger.warning(
                "researchflow: the server refused a message (%s): %s",
                details.get("code", "error"),
                body.get("message"),
            )
        # pong, status, subscription.*: nothing to do (any frame already proved liveness).

    # --- the Server-Sent Events transport -----------------------------------------------

    async def _stream_session(self) -> None:
        """One stream: the request (scope, subscriptions and cursor in its query), then its
        events until it ends. Raises as `_session` does."""
        query: dict[str, str] = {}
        if self.project_id is not None:
            query["projectId"] = str(self.project_id)
        if self.run_id is not None:
            query["runId"] = str(self.run_id)
        if self.event_types is not None or self.event_categories is not None:
            query["types"] = ",".join(self.event_types or ())
            query["categories"] = ",".join(self.event_categories or ())
        if self._cursor is not None:
            query["lastEventId"] = str(self._cursor)
        assert self.stream_url is not None
        url = self.stream_url + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "text/event-stream", "Authorization": f"Token {self._token}"}
        try:
            response = await sse.request(
                url, headers=headers, ssl=self._ssl, open_timeout=self.open_timeout
            )
        except TimeoutError:
            raise _Retry(f"no answer within {self.open_timeout:g} s") from None
        except (OSError, sse.StreamError, asyncio.IncompleteReadError) as exc:
            raise _Retry(f"cannot connect ({_describe(exc)})") from None
        try:
            if response.status != 200:
                await self._stream_refused(response)
            await self._read_stream(response)
        except (OSError, sse.StreamError, asyncio.IncompleteReadError) as exc:
            raise _Retry(f"the stream failed ({_describe(exc)})") from None
        finally:
            response.close()

    async def _stream_refused(self, response: sse.Response) -> None:
        status = response.status
        detail = f"HTTP {status}"
        try:
            async with asyncio.timeout(self.open_timeout):
                body = json.loads(await response.read_body())
            if isinstance(body, dict) and isinstance(body.get("detail"), str):
                detail = body["detail"]
        except (ValueError, TimeoutError, OSError, sse.StreamError, asyncio.IncompleteReadError):
            pass
        if status in (401, 403, 404):  # the token, the origin, or the run/project: final
            raise AuthFailed(detail)
        if status == 400:
            raise ClientError(f"the server refused the stream request: {detail}")
        raise _Retry(f"the stream was answered with HTTP {status}")

    async def _read_stream(self, response: sse.Response) -> None:
        dead_after = self.heartbeat_interval + self.heartbeat_timeout
        stream = aiter(sse.messages(response.chunks()))
        while True:
            try:
                async with asyncio.timeout(
                    dead_after if self._authenticated_once_this_session else self.open_timeout
                ):
                    message = await anext(stream)
            except StopAsyncIteration:
                raise _Retry("the stream ended") from None
            except TimeoutError:
                raise _Retry(
                    f"nothing from the stream within {dead_after:g} s (connection dead)"
                ) from None
            if message is None:
                continue  # a keepalive comment
            frame = _decode(message.data)
            payload = frame.get("payload") or {}
            if message.event == "close":
                code = _int_or_none(payload.get("code")) or 1006
                why = str(payload.get("reason") or "")
                if code in FINAL_CLOSE_CODES:
                    raise AccessRevoked(code, why)
                raise _Retry(f"the server closed the stream ({code}{': ' + why if why else ''})")
            if frame.get("type") == "auth.success":
                self._authenticated_once_this_session = True
                if self._first_auth is not None and not self._first_auth.done():
                    self._first_auth.set_result(None)
                logger.info("researchflow: streaming from %s", self.stream_url)
                continue
            await self._dispatch(frame)


def _decode(raw: str | bytes) -> dict[str, Any]:
    try:
        frame = json.loads(raw)
    except ValueError:
        raise _Retry("the server sent a frame that is not JSON") from None
    if not isinstance(frame, dict):
        raise _Retry("the server sent a frame that is not a JSON object")
    return frame


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"
