"""Routing by project shard across two server processes over a real Redis: each process hears
only the shards of the projects its sockets may see, and every socket still gets exactly its
events, in order.

Process A has a socket on project X, process B one on project Y (X and Y in different shards);
events are caused on both projects through both processes' REST APIs. Everything listens on
loopback; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.servers import DEMO_PASSWORDS, AppServer, RedisServer
from tests.e2e.test_workers import (
    add_artifacts,
    authed,
    read_events_until,
    running_run,
    sample,
    scrape,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]
SHARDS = 16
RECEIVED = "researchflow_layer_events_received_total"


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[AppServer, AppServer]]:
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="rf-routing-") as var:
        env = {
            "REDIS_URL": redis.url,
            "DATABASE_URL": f"sqlite:///{Path(var) / 'db.sqlite3'}",  # one log for both
            "WS_EVENT_SHARDS": str(SHARDS),
            "WS_GAP_CHECK_INTERVAL": "0.2",  # metrics are flushed on each check
        }
        with (
            AppServer(env=env) as a,
            AppServer(env=env, migrate=False, seed=False) as b,
        ):
            yield a, b


def two_projects_in_different_shards(app: AppServer, token: str) -> tuple[str, str]:
    made: dict[int, str] = {}
    for n in range(20):
        project = app.api("POST", "/api/projects/", {"name": f"Routing {n}"}, token)
        made.setdefault(zlib.crc32(project["id"].encode()) % SHARDS, project["id"])
        if len(made) == 2:
            x, y = made.values()
            return x, y
    raise AssertionError("no two projects in different shards")


def test_each_process_hears_only_its_sockets_shards_and_each_socket_gets_exactly_its_events(
    pair: tuple[AppServer, AppServer],
) -> None:
    a, b = pair
    admin = a.token("admin", DEMO_PASSWORDS["admin"])
    x, y = two_projects_in_different_shards(a, admin)
    baseline = int(a.api("GET", "/api/events/?limit=1", token=admin)["lastEventId"])

    def produce() -> None:
        # Each project's events caused through both processes, interleaved.
        runs = {x: running_run(a, admin, x, "Routed"), y: running_run(b, admin, y, "Routed")}
        for _ in range(3):
            add_artifacts(b, admin, runs[x]["id"], 4)
            add_artifacts(a, admin, runs[y]["id"], 4)

    async def scenario() -> tuple[list[int], list[int], list[int], list[int]]:
        on_x = await authed(a.ws_url, admin, projectId=x)
        on_y = await authed(b.ws_url, admin, projectId=y)
        received_before = [sample(scrape(app, admin), RECEIVED) for app in (a, b)]
        await asyncio.to_thread(produce)
        want_x = await asyncio.to_thread(a.event_ids, admin, baseline, project=x)
        want_y = await asyncio.to_thread(a.event_ids, admin, baseline, project=y)
        got_x = [e["id"] for e in await read_events_until(on_x, want_x[-1])]
        got_y = [e["id"] for e in await read_events_until(on_y, want_y[-1])]

        # A heard X's events (published by both processes) and none of Y's; B the reverse.
        def heard(app: AppServer, before: float, expected: int) -> bool:
            return sample(scrape(app, admin), RECEIVED) - before == expected

        for app, before, want in zip((a, b), received_before, (want_x, want_y), strict=True):
            count = len(want)
            settled = await asyncio.to_thread(
                wait_for, lambda app=app, before=before, n=count: heard(app, before, n), 5
            )
            got = sample(scrape(app, admin), RECEIVED) - before
            assert settled, f"{app.url} received {got} layer events, expected {len(want)}"
        await on_x.close()
        await on_y.close()
        return got_x, want_x, got_y, want_y

    got_x, want_x, got_y, want_y = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert len(want_x) == len(want_y) == 2 + 12  # run.created, run.started, 12 artifacts
    assert got_x == want_x  # exactly its events: none of Y's, none lost, in order
    assert got_y == want_y


def test_a_socket_on_another_project_makes_a_process_hear_its_shard_too(
    pair: tuple[AppServer, AppServer],
) -> None:
    """Widening across processes: B, which heard only Y's shard, gets a staff socket and from
    then on delivers X's events (published through A) too, in order."""
    a, b = pair
    admin = a.token("admin", DEMO_PASSWORDS["admin"])
    x, y = two_projects_in_different_shards(a, admin)

    async def scenario() -> tuple[list[int], list[int]]:
        on_y = await authed(b.ws_url, admin, projectId=y)
        everything = await authed(b.ws_url, admin)  # staff, unscoped: B now hears every shard
        baseline = int(a.api("GET", "/api/events/?limit=1", token=admin)["lastEventId"])
        run_x = await asyncio.to_thread(running_run, a, admin, x, "Widened")
        run_y = await asyncio.to_thread(running_run, a, admin, y, "Widened")
        await asyncio.to_thread(add_artifacts, a, admin, run_x["id"], 3)
        await asyncio.to_thread(add_artifacts, a, admin, run_y["id"], 3)
        want = [
            e["id"]
            for e in a.api("GET", f"/api/events/?after={baseline}&limit=1000", token=admin)[
                "results"
            ]
        ]
        got = [e["id"] for e in await read_events_until(everything, want[-1])]
        want_y = await asyncio.to_thread(a.event_ids, admin, baseline, project=y)
        got_y = [e["id"] for e in await read_events_until(on_y, want_y[-1])]
        await everything.close()
        await on_y.close()
        assert got_y == want_y
        return got, want

    got, want = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert got == want and len(want) == 2 * (2 + 3)
