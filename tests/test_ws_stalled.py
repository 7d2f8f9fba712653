"""A client that stops reading costs the server a bounded number of bytes, then a 4008 close,
and loses nothing: a live uvicorn or daphne server (as `manage.py serve` runs it) with small
byte bounds (WS_SEND_BUFFER_BYTES, WS_TRANSPORT_BUFFER_BYTES, WS_SOCKET_SNDBUF), a few
stalled sockets next to a healthy one, events published by another process (delivered
through the log check), then each stalled socket reads again: it must find at most ~the
bounds' worth of events before the 4008 close (not thousands), and a resume from the last id
it read must bring every later event in order."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from devtools.servers import DEMO_PASSWORDS, AppServer
from tests.stalled_sockets import CLIENT_RCVBUF, open_socket, publish

pytestmark = pytest.mark.e2e

BOUND = 64 * 1024  # each of: the app queue, the transport's buffer, SO_SNDBUF
STALLED = 3
EVENTS = 1500  # ~0.5 MB of frames: far past the bounds, far below the kernel's autotuned buffers

# Paced (~500 events/s): the server brings them to the sockets in log-check batches of a few
# dozen, which a healthy reader keeps up with even on a loaded machine; unpaced, one check
# could bring all of them at once and close the healthy socket too (it is then not healthy:
# the bounds are deliberately tight here).
PACE = 0.002


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def server(request: pytest.FixtureRequest) -> Iterator[AppServer]:
    env = {
        "REDIS_URL": "",
        "WS_SEND_BUFFER_BYTES": str(BOUND),
        "WS_TRANSPORT_BUFFER_BYTES": str(BOUND),
        "WS_SOCKET_SNDBUF": str(BOUND),
        # Out of the way: the byte bounds alone must close a stalled socket.
        "WS_SEND_QUEUE": "100000",
        "WS_GAP_CHECK_INTERVAL": "0.05",
        # The stalled sockets read only after the healthy one is done: their 4008 close must
        # wait for them that long (then the connection would be reset, test_ws_stalled_peer.py).
        "WS_CLOSE_TIMEOUT": "300",
        "WS_HEARTBEAT_TIMEOUT": "600",
        "WS_RATE_LIMIT": "1000",
    }
    with AppServer(request.param, env=env) as app:
        yield app


async def _read_until_close(ws: ClientConnection) -> tuple[list[int], int, int | None]:
    """(event ids, frame bytes, close code) of everything the server still sends."""
    ids: list[int] = []
    size = 0
    try:
        while True:
            frame = await asyncio.wait_for(ws.recv(), 10)
            message = json.loads(frame)
            if "id" in message:
                ids.append(message["id"])
                size += len(frame)
    except ConnectionClosed:
        pass
    except TimeoutError:
        return ids, size, None  # no close came: the server never gave up on the socket
    assert ws.close_code is not None
    return ids, size, ws.close_code


async def _read_ids(ws: ClientConnection, last: int, *, until_quiet: bool = False) -> list[int]:
    """Event ids up to `last`, or (until_quiet) until none has come for 3 s after the first."""
    ids: list[int] = []
    while not ids or ids[-1] < last or until_quiet:
        try:
            frame = await asyncio.wait_for(ws.recv(), 3 if until_quiet and ids else 30)
        except TimeoutError:
            if until_quiet and ids:
                return ids
            raise
        message = json.loads(frame)
        if "id" in message:
            ids.append(message["id"])
    return ids


async def test_a_stalled_socket_is_closed_with_4008_after_a_bounded_number_of_bytes(
    server: AppServer,
) -> None:
    token = server.token("alice", DEMO_PASSWORDS["alice"])
    healthy = await open_socket(server, token, stalled=False)
    stalled = [await open_socket(server, token, stalled=True) for _ in range(STALLED)]
    healthy_read = asyncio.create_task(_read_ids(healthy, 0, until_quiet=True))

    published = await asyncio.to_thread(publish, server, EVENTS, PACE)

    # The healthy socket, read as it comes, gets everything and is not closed.
    healthy_ids = await healthy_read
    healthy_ids += (
        await _read_ids(healthy, published[-1]) if healthy_ids[-1:] != published[-1:] else []
    )
    assert healthy_ids == published
    await healthy.close()

    # The bound: the app queue + the transport (+ one frame) + SO_SNDBUF (Linux doubles it)
    # + the client's own buffers (its kernel's receive buffer, doubled too, and websockets').
    frame = 400
    held = BOUND + (BOUND + frame) + 2 * BOUND + 2 * CLIENT_RCVBUF + 256 * 1024 // 4
    for ws in stalled:
        ids, size, code = await _read_until_close(ws)
        assert code == 4008, f"not closed as a slow consumer after {len(ids)} events"
        assert size <= held, f"{size} bytes ({len(ids)} events) before the 4008 close"
        assert ids == published[: len(ids)]

        # Resume from the last event read: every later one, in order, no gap.
        resumed = await open_socket(
            server,
            token,
            stalled=False,
            lastEventId=ids[-1],
            eventCategories=["STAGE_EVENTS"],
        )
        assert await _read_ids(resumed, published[-1]) == published[len(ids) :]
        await resumed.close()


async def test_each_accepted_websocket_gets_the_configured_send_buffer(server: AppServer) -> None:
    # SO_SNDBUF as the kernel reports it (`ss`: tb, which Linux doubles from the set value);
    # left to autotuning it starts at net.ipv4.tcp_wmem's default and may grow to megabytes.
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read a socket's send buffer")
    token = server.token("alice", DEMO_PASSWORDS["alice"])
    ws = await open_socket(server, token, stalled=False)
    local = ws.local_address[1]
    done = await asyncio.to_thread(
        subprocess.run,
        ["ss", "-tmnH", "state", "established", f"( sport = :{server.port} and dport = :{local} )"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    await ws.close()
    assert f"tb{2 * BOUND}," in out, out
