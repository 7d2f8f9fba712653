"""A worker script that publishes and exits: its last events reach sockets over the live path
(the background sender is flushed at interpreter exit), not at the servers' next log check.

The server's log check is 30 s away (WS_GAP_CHECK_INTERVAL), so only the live path can deliver
within the bound: without the flush at exit the script's queued events wait for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from devtools.servers import DEMO_PASSWORDS, AppServer, RedisServer

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).with_name("exit_publisher.py")
COUNT = 300
# Far below the 30 s log check; the live path takes milliseconds.
BOUND = 5.0


@pytest.fixture(scope="module")
def app() -> Iterator[AppServer]:
    with (
        RedisServer() as redis,
        AppServer(env={"REDIS_URL": redis.url, "WS_GAP_CHECK_INTERVAL": "30"}) as server,
    ):
        yield server


def staff_socket(app: AppServer) -> ClientConnection:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    ws = connect(app.ws_url, open_timeout=10, additional_headers={"Origin": app.url})
    assert json.loads(ws.recv(10))["type"] == "connection.established"
    token = app.token("admin", DEMO_PASSWORDS["admin"])
    ws.send(
        json.dumps({"type": "auth", "payload": {"token": token, "eventTypes": ["stage.progress"]}})
    )
    assert json.loads(ws.recv(10))["type"] == "auth.success"
    return ws


def publish_and_exit(app: AppServer, *args: str) -> tuple[int, int, float]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(COUNT), *args],
        env=app.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, last = map(int, done.stdout.split())
    return first, last, time.monotonic()


def received_through(ws: ClientConnection, last: int, exited: float) -> tuple[set[int], float]:
    """Event ids received until `last` arrives or BOUND seconds after the script exited; and
    how long after the exit the last one came."""
    ids: set[int] = set()
    while last not in ids:
        left = exited + BOUND - time.monotonic()
        if left <= 0:
            break
        try:
            frame: Any = json.loads(ws.recv(left))
        except TimeoutError:
            break
        if "id" in frame:
            ids.add(frame["id"])
    return ids, time.monotonic() - exited


@pytest.mark.parametrize(
    "mode",
    [[], ["--hold"], ["--in-child", "--hold"]],
    ids=["script", "script-held", "multiprocessing-child-held"],
)
def test_it_delivers_a_worker_scripts_last_events_over_the_live_path(
    app: AppServer, mode: list[str]
) -> None:
    with staff_socket(app) as ws:
        first, last, exited = publish_and_exit(app, *mode)
        ids, after_exit = received_through(ws, last, exited)
        missing = set(range(first, last + 1)) - ids
        assert not missing, f"{len(missing)} of {COUNT} not delivered within {BOUND}s of exit"
        print(f"last event {after_exit * 1000:.0f} ms after the script exited")
