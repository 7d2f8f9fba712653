"""Server memory under repeated large reads of `GET /api/events/` levels off.

40 rounds of 5,000 events each (five 1,000-event pages) against a live daphne on PostgreSQL
(the production database): resident memory may grow while the process warms up, then stays
within the bound docs/operations.md ("Memory") states. Before the page was written as one
orjson body with no per-event objects, RSS rose ~60 MB over the same run and still ~0.3 MB
per round at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.servers import DEMO_PASSWORDS, AppServer, PostgresServer

pytestmark = pytest.mark.e2e

ROUNDS = 40
EVENTS = 5_000
# docs/operations.md, "Memory": after the first round, at most this much more RSS in all...
GROWTH_BOUND_MB = 25.0
# ...and at most this much over the last half of the run (it has levelled off).
TAIL_BOUND_MB = 8.0
SCRIPT = Path(__file__).with_name("exit_publisher.py")


@pytest.fixture(scope="module")
def app() -> Iterator[AppServer]:
    with PostgresServer() as pg, AppServer(env={"DATABASE_URL": pg.url}) as server:
        subprocess.run(
            [sys.executable, str(SCRIPT), str(EVENTS)],
            env=server.env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield server


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def read_everything(app: AppServer, token: str) -> int:
    url: str | None = app.url + "/api/events/?limit=1000"
    count = 0
    while url:
        req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            page = json.loads(resp.read())
        count += len(page["results"])
        url = page["next"]
    return count


def test_it_levels_off_under_repeated_large_event_log_reads(app: AppServer) -> None:
    assert app.proc is not None
    token = app.token("admin", DEMO_PASSWORDS["admin"])
    curve = []
    for _ in range(ROUNDS):
        assert read_everything(app, token) >= EVENTS
        curve.append(rss_mb(app.proc.pid))
    print("\nRSS MB per round:", " ".join(f"{mb:.0f}" for mb in curve))
    assert curve[-1] - curve[0] <= GROWTH_BOUND_MB, curve
    assert max(curve[ROUNDS // 2 :]) - curve[ROUNDS // 2] <= TAIL_BOUND_MB, curve
