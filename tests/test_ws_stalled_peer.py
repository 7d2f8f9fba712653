"""A client that never reads again is let go: closed with 4008 (which it reads if it ever reads
again), its consumer gone at once, and its connection reset WS_CLOSE_TIMEOUT later
(events/gateway/servers/uvicorn_stalled_peer.py).

Live uvicorn servers with small byte bounds. Where the keepalive is under test, the stalled
client's pipe is filled deterministically: the events are published first, then the client
connects with a `lastEventId` just before them and stops reading after `auth.success`, so the
replay fills its receive buffer, the server's SO_SNDBUF and the transport at once.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from devtools.servers import DEMO_PASSWORDS, AppServer
from events.gateway.servers import uvicorn_stalled_peer
from tests.stalled_sockets import open_socket, publish

BOUND = 64 * 1024  # the transport's high-water mark and SO_SNDBUF
EVENTS = 1500  # ~0.5 MB of frames: far past the bounds
METRICS_TOKEN = "stalled-peer-metrics-" + "t" * 24
CLOSE_TIMEOUT = 5.0


def _server(**env: str) -> AppServer:
    return AppServer(
        "uvicorn",
        env={
            "REDIS_URL": "",
            "METRICS_TOKEN": METRICS_TOKEN,
            "WS_TRANSPORT_BUFFER_BYTES": str(BOUND),
            "WS_SOCKET_SNDBUF": str(BOUND),
            "WS_SEND_QUEUE": "100000",
            "WS_HEARTBEAT_TIMEOUT": "600",
            "WS_RATE_LIMIT": "1000",
            "WS_GAP_CHECK_INTERVAL": "0.05",
            "WS_CLOSE_TIMEOUT": str(CLOSE_TIMEOUT),
            **env,
        },
    )


@pytest.fixture(scope="module")
def keepalive_server() -> Iterator[AppServer]:
    # Only the keepalive can close a stalled socket here: replayed frames are not counted
    # against the app's bounds, and those are far out of reach anyway.
    with _server(
        WS_SEND_BUFFER_BYTES=str(1 << 30), WS_PING_INTERVAL="1", WS_PING_TIMEOUT="1"
    ) as app:
        yield app


@pytest.fixture(scope="module")
def bounded_server() -> Iterator[AppServer]:
    # Only the app's byte bound can close a stalled socket here: the keepalive is far away.
    with _server(
        WS_SEND_BUFFER_BYTES=str(BOUND),
        WS_PING_INTERVAL="600",
        WS_PING_TIMEOUT="600",
        WS_CLOSE_TIMEOUT="60",
    ) as app:
        yield app


# --- helpers -------------------------------------------------------------------------------


def _metric(app: AppServer, name: str) -> float:
    request = urllib.request.Request(
        f"{app.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return float(match[1]) if match else 0.0


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


def _server_has_connection(server_port: int, client_port: int) -> bool:
    """Whether the server's end of this TCP connection still exists (any state but a
    listening socket), from /proc/net/tcp: local port = the server's, remote = the client's."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
        ):
            return True
    return False


async def _stalled_behind_a_replay(app: AppServer) -> tuple[list[int], ClientConnection]:
    """EVENTS events published first, then a stalled socket resuming from just before them:
    the replay fills its pipe at once. (The published ids, the socket.)"""
    published = await asyncio.to_thread(publish, app, EVENTS, 0)
    token = app.token("alice", DEMO_PASSWORDS["alice"])
    ws = await open_socket(
        app, token, stalled=True, lastEventId=published[0] - 1, eventCategories=["STAGE_EVENTS"]
    )
    return published, ws


async def _read_to_the_end(ws: ClientConnection) -> tuple[list[int], int | None]:
    """(event ids, close code) of everything still to read; 1006 when no close frame came."""
    ids: list[int] = []
    try:
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if "id" in message:
                ids.append(message["id"])
    except ConnectionClosed:
        pass
    return ids, ws.close_code


# --- what the patch relies on in uvicorn ------------------------------------------------------


def _shipped(method: str) -> str:
    """A method's source as uvicorn ships it (read from the class's file: the class attribute
    may be the patch's wrapper in this process)."""
    source = textwrap.dedent(inspect.getsource(WebSocketsSansIOProtocol))
    (cls,) = ast.parse(source).body
    assert isinstance(cls, ast.ClassDef)
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == method:
            segment = ast.get_source_segment(source, node)
            assert segment is not None
            return segment
    raise AssertionError(f"uvicorn's protocol has no {method}()")


def test_uvicorn_still_works_the_way_the_patch_was_written_for() -> None:
    assert uvicorn_stalled_peer.WRITTEN_FOR == {"uvicorn": "0.54.0"}
    send = _shipped("send")
    body = send.split('"""')[-1] if '"""' in send else send
    first = next(line.strip() for line in body.splitlines()[1:] if line.strip())
    assert first == "await self.writable.wait()", first
    close_branch = send.split('elif message["type"] == "websocket.close":')[2]
    for needed in (
        "self.conn.send_close(code, reason)",
        '"type": "websocket.disconnect"',
        "self.close_sent = True",
        "self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)",
    ):
        assert needed in close_branch, needed
    keepalive = _shipped("keepalive_timeout")
    assert 'self.conn.fail(1011, "keepalive ping timeout")' in keepalive
    assert "self.transport.close()" in keepalive
    lost = _shipped("connection_lost")
    assert "self.disconnected = True" in lost
    assert "self.close_timer.cancel()" in lost
    assert "self.writable.set()" in lost


# --- live ------------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_a_pong_stuck_behind_unread_frames_closes_the_socket_with_4008(
    keepalive_server: AppServer,
) -> None:
    app = keepalive_server
    before = _metric(app, "researchflow_ws_slow_consumer_closes_total")
    published, ws = await _stalled_behind_a_replay(app)

    await _until(
        lambda: _metric(app, "researchflow_ws_slow_consumer_closes_total") > before,
        30,
        "the server closes the stalled socket as a slow consumer",
    )
    ids, code = await _read_to_the_end(ws)
    assert code == 4008  # uvicorn alone: 1011, and not before the client reads again
    assert ws.close_reason == "slow consumer"
    assert ids == published[: len(ids)]
    assert 0 < len(ids) < EVENTS


@pytest.mark.e2e
async def test_a_client_that_never_reads_again_is_reset_after_the_close_timeout(
    keepalive_server: AppServer,
) -> None:
    app = keepalive_server
    published, ws = await _stalled_behind_a_replay(app)
    client_port = ws.local_address[1]
    assert _server_has_connection(app.port, client_port)

    # The 4008 after ~2 s (ping interval + pong timeout), the reset CLOSE_TIMEOUT later; the
    # kernel then holds nothing for it either (SO_LINGER 0: no orphaned send queue).
    await _until(
        lambda: not _server_has_connection(app.port, client_port),
        CLOSE_TIMEOUT + 30,
        "the server drops its end of the connection",
    )
    ids, code = await _read_to_the_end(ws)
    assert code == 1006  # what its own kernel held, then the reset: no close frame
    assert ids == published[: len(ids)]


@pytest.mark.e2e
async def test_a_slow_consumer_close_does_not_wait_for_the_client_to_read(
    bounded_server: AppServer,
) -> None:
    app = bounded_server
    token = app.token("alice", DEMO_PASSWORDS["alice"])
    ws = await open_socket(app, token, stalled=True)
    assert _metric(app, "researchflow_ws_sockets_open") == 1

    publishing = asyncio.create_task(asyncio.to_thread(publish, app, EVENTS, 0.002))
    # The consumer is gone while the client still reads nothing: the 4008 did not wait
    # behind the full pipe (uvicorn alone: until the client reads again).
    await _until(
        lambda: _metric(app, "researchflow_ws_sockets_open") == 0,
        120,
        "the server lets go of the stalled socket's consumer",
    )
    published = await publishing
    ids, code = await _read_to_the_end(ws)
    assert code == 4008
    assert ids == published[: len(ids)]
