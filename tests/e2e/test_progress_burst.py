"""A burst of progress on one stage closes nobody who reads: 20,000 `stage.progress` reports
from a worker process's tight loop (`services.report_progress`, one transaction each, through
Redis to a live server), 200 clients reading as fast as they can, one client that stops reading.

Every fast client must stay open and end with the stage's last progress and every lifecycle
event, in increasing id order (the queue coalesces superseded progress: writer.py,
docs/protocol.md "A client that falls behind"); the stalled one must still be closed with
4008 (its keepalive ping goes unanswered) and, resuming from the last id it read, get every
event after it. On daphne and on uvicorn, with the default byte bounds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from devtools.servers import DEMO_PASSWORDS, AppServer, RedisServer
from tests.stalled_sockets import open_socket
from tests.test_ws_stalled_peer import METRICS_TOKEN, _metric, _read_to_the_end, _until

pytestmark = [pytest.mark.e2e]

BURST = 20_000
CLIENTS = 200
LIMIT = 240.0  # seconds, for the whole burst to reach every fast client
READER_RCVBUF = 64 * 1024
CATEGORIES = ["RUN_EVENTS", "STAGE_EVENTS", "ARTIFACT_EVENTS", "GOVERNANCE_EVENTS"]
LIFECYCLE = {"run.started", "stage.started", "stage.completed", "run.completed"}

# A run with two stages, started, its first stage running: the ids, for the clients to
# narrow their sockets to.
_SET_UP = """
from django.contrib.auth import get_user_model
from runs import services
from runs.models import Project
project = Project.objects.get(name="Demo project")
alice = get_user_model().objects.get(username="alice")
run = services.create_run(project, "Burst", ["Ingest", "Model"], created_by=alice)
services.start_run(run.pk)
first, second = run.stages.order_by("position")
services.start_stage(first.pk)
print("IDS", run.pk, first.pk, second.pk)
"""

# The worker: a tight loop of progress reports on one stage, then the rest of the run.
_BURST = """
import time
from runs import services
started = time.monotonic()
for i in range({burst}):
    services.report_progress("{first}", i * 100 // {burst}, i + 1, {burst}, "Processing rows")
elapsed = time.monotonic() - started
services.complete_stage("{first}")
services.start_stage("{second}")
services.complete_stage("{second}")
services.complete_run("{run}")
print("BURST_S", round(elapsed, 2))
"""


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["uvicorn", "daphne"])
def server(request: pytest.FixtureRequest, redis: RedisServer) -> Iterator[AppServer]:
    env = {
        "REDIS_URL": redis.url,
        "METRICS_TOKEN": METRICS_TOKEN,
        "WS_MAX_CONNECTIONS_PER_USER": "0",
        # The stalled client is closed by its unanswered ping within ~interval + timeout; a
        # fast client answers pings as it reads them, behind what its own kernel buffers.
        "WS_PING_INTERVAL": "3",
        "WS_PING_TIMEOUT": "30",
        # It reads only once the fast clients are done: its 4008 must wait for it that long.
        "WS_CLOSE_TIMEOUT": "600",
        # Its resume replays most of the burst (replays are never coalesced).
        "WS_RESUME_MAX_EVENTS": str(BURST * 2),
        "WS_HEARTBEAT_TIMEOUT": "600",
        "WS_AUTH_TIMEOUT": "600",
    }
    with AppServer(request.param, env=env) as app:
        yield app


async def _fast_client(app: AppServer, token: str, run_id: str) -> ClientConnection:
    # 200 readers share this process, so each reads ~1/200 of what one could. Their receive
    # buffers are kept small: a reader's lag (which the server's ping measures) is then what
    # its reading speed makes it, not what megabytes of autotuned loopback buffer hold. No
    # protocol-level pings of their own, as a browser: a pong this busy loop is slow to
    # handle must not close a reader either.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READER_RCVBUF)
    sock.connect(("127.0.0.1", app.port))
    sock.setblocking(False)
    ws = await websockets.connect(
        app.ws_url, sock=sock, open_timeout=30, max_size=None, ping_interval=None
    )
    assert json.loads(await ws.recv())["type"] == "connection.established"
    auth = {"token": token, "runId": run_id, "eventCategories": CATEGORIES}
    await ws.send(json.dumps({"type": "auth", "payload": auth}))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert reply["type"] == "auth.success", reply
    return ws


async def _read_until_run_completed(ws: ClientConnection, deadline: float) -> list[Any]:
    """Every event until `run.completed`, as fast as it comes."""
    events: list[Any] = []
    while True:
        frame = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        message = json.loads(frame)
        if "id" in message:
            events.append(message)
            if message["type"] == "run.completed":
                return events


def _logged(app: AppServer, token: str, run_id: str) -> list[Any]:
    """The run's events in the log, in order: every page of `GET /api/events/`."""
    events: list[Any] = []
    after = 0
    while True:
        query = f"/api/events/?run={run_id}&after={after}&limit=1000"
        page = app.api("GET", query, token=token)
        events += page["results"]
        if not page["next"]:
            return events
        after = events[-1]["id"]


def _check_stream(events: list[Any], logged: list[Any], after: int) -> None:
    """Of the run's events after `after`: increasing ids, every lifecycle event, the stage's
    last progress, and nothing missing but progress superseded by a later one it got."""
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)) and ids[0] > after
    got = set(ids)
    wanted = [e for e in logged if e["id"] > after]
    missing = [e for e in wanted if e["id"] not in got]
    assert all(e["type"] == "stage.progress" for e in missing), [
        e["type"] for e in missing if e["type"] != "stage.progress"
    ][:5]
    progress = [e for e in events if e["type"] == "stage.progress"]
    assert progress[-1]["id"] == max(e["id"] for e in wanted if e["type"] == "stage.progress")
    assert progress[-1]["payload"]["itemsProcessed"] == BURST
    assert [e["type"] for e in events if e["type"] in LIFECYCLE] == [
        e["type"] for e in wanted if e["type"] in LIFECYCLE
    ]


async def test_a_progress_burst_closes_no_reader_and_still_closes_a_stalled_client(
    server: AppServer,
) -> None:
    app = server
    token = app.token("alice", DEMO_PASSWORDS["alice"])
    out = await asyncio.to_thread(app.manage, "shell", "-c", _SET_UP)
    run_id, first, second = out.split("IDS ", 1)[1].split()
    set_up = app.event_ids(token, run=run_id)[-1]

    fast = [await _fast_client(app, token, run_id) for _ in range(CLIENTS)]
    stalled = await open_socket(app, token, stalled=True, runId=run_id, eventCategories=CATEGORIES)
    closes_before = _metric(app, "researchflow_ws_slow_consumer_closes_total")

    started = time.monotonic()
    deadline = started + LIMIT
    readers = [asyncio.create_task(_read_until_run_completed(ws, deadline)) for ws in fast]
    burst = _BURST.format(burst=BURST, first=first, second=second, run=run_id)
    published = await asyncio.to_thread(app.manage, "shell", "-c", burst, timeout=LIMIT)
    streams = await asyncio.gather(*readers)
    print(
        f"[{app.server}] {published.strip()} s publishing; {CLIENTS} readers done "
        f"{time.monotonic() - started:.1f} s after the burst began; "
        f"{sum(map(len, streams)) / CLIENTS:.0f} events per reader"
    )

    logged = await asyncio.to_thread(_logged, app, token, run_id)
    assert len([e for e in logged if e["id"] > set_up]) == BURST + 4  # the burst + lifecycle
    closed = [ws.close_code for ws in fast if ws.close_code is not None]
    assert not closed, f"{len(closed)} fast clients closed: {closed[:5]}"
    for events in streams:
        _check_stream(events, logged, set_up)
    await asyncio.gather(*(ws.close() for ws in fast))

    # The stalled client: closed as a slow consumer (its pings went unanswered), which it
    # reads once it reads again; then a resume from its last id brings every later event.
    await _until(
        lambda: _metric(app, "researchflow_ws_slow_consumer_closes_total") > closes_before,
        60,
        "the server closes the stalled client as a slow consumer",
    )
    ids, code = await _read_to_the_end(stalled)
    assert code == 4008
    assert ids == sorted(set(ids))
    last = ids[-1] if ids else set_up
    resumed = await _fast_client(app, token, run_id)
    await resumed.send(json.dumps({"type": "resume", "payload": {"lastEventId": last}}))
    replayed = await _read_until_run_completed(resumed, time.monotonic() + 120)
    assert [e["id"] for e in replayed] == [e["id"] for e in logged if e["id"] > last]
    await resumed.close()
