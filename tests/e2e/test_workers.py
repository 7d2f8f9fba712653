"""Several server processes, for real: two uvicorn workers sharing Redis and PostgreSQL (the
issue's acceptance test), graceful shutdown and compression under each server, and
Prometheus series summed over a `--workers 2` server.

Everything listens on loopback; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from devtools.servers import DEMO_PASSWORDS, AppServer, PostgresServer, RedisServer

pytestmark = [pytest.mark.e2e]
CATEGORIES = ["RUN_EVENTS", "STAGE_EVENTS", "ARTIFACT_EVENTS", "GOVERNANCE_EVENTS"]
GOING_AWAY = 1001


# --- helpers -------------------------------------------------------------------------------


async def recv(ws: Any, timeout: float = 10) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def connect(url: str, **kwargs: Any) -> Any:
    ws = await websockets.connect(url, open_timeout=10, **kwargs)
    assert (await recv(ws))["type"] == "connection.established"
    return ws


async def authed(url: str, token: str, **auth: Any) -> Any:
    ws = await connect(url)
    payload = {"token": token, "eventCategories": CATEGORIES, **auth}
    await ws.send(json.dumps({"type": "auth", "payload": payload}))
    reply = await recv(ws)
    assert reply["type"] == "auth.success", reply
    return ws


async def read_until_closed(ws: Any, limit: float = 20) -> tuple[list[dict[str, Any]], int | None]:
    """Every event frame until the server closes; and the close code it sent."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            msg = await recv(ws, max(0.1, deadline - time.monotonic()))
            if "id" in msg:
                events.append(msg)
    except websockets.ConnectionClosed as exc:
        return events, exc.rcvd.code if exc.rcvd is not None else None
    raise AssertionError(f"the server did not close the socket within {limit}s")


async def read_events_until(ws: Any, last_id: int, limit: float = 20) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    while not events or events[-1]["id"] < last_id:
        assert time.monotonic() < deadline, f"stuck at {events[-1:]} waiting for {last_id}"
        msg = await recv(ws, max(0.1, deadline - time.monotonic()))
        if "id" in msg:
            events.append(msg)
    return events


def last_event_id(app: AppServer, token: str) -> int:
    return int(app.api("GET", "/api/events/?limit=1", token=token)["lastEventId"])


def project_of(app: AppServer, token: str) -> str:
    projects = app.api("GET", "/api/projects/", token=token)
    results = projects["results"] if isinstance(projects, dict) else projects
    return str(results[0]["id"])


def scrape(app: AppServer, token: str) -> str:
    import urllib.request

    req = urllib.request.Request(app.url + "/metrics")
    req.add_header("Authorization", f"Token {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
        return resp.read().decode()


def sample(text: str, name: str) -> float:
    """A series' value (summed over its label sets); 0 when absent."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        if series == name or series.startswith(name + "{"):
            total += float(value)
    return total


def wait_for(predicate: Any, limit: float = 10, step: float = 0.2) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def running_run(app: AppServer, token: str, project: str, name: str) -> dict[str, Any]:
    run: dict[str, Any] = app.api(
        "POST", "/api/runs/", {"projectId": project, "name": name, "stages": ["Ingest"]}, token
    )
    app.api("POST", f"/api/runs/{run['id']}/start/", {}, token)
    return run


def add_artifacts(app: AppServer, token: str, run_id: str, count: int, pause: float = 0) -> None:
    for i in range(count):
        body = {
            "kind": "dataset",
            "name": f"part_{i}.parquet",
            "sizeBytes": i,
            "contentType": "application/octet-stream",
        }
        app.api("POST", f"/api/runs/{run_id}/artifacts/", body, token)
        if pause:
            time.sleep(pause)


# --- the acceptance test -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[AppServer, AppServer]]:
    with RedisServer() as redis, PostgresServer() as pg:
        env = {"REDIS_URL": redis.url, "DATABASE_URL": pg.url}
        with (
            AppServer("uvicorn", env=env) as a,
            AppServer("uvicorn", env=env, migrate=False, seed=False) as b,
        ):
            yield a, b


@pytest.mark.redis
@pytest.mark.postgres
def test_two_workers_share_events_and_a_client_survives_losing_its_worker(
    cluster: tuple[AppServer, AppServer],
) -> None:
    a, b = cluster
    alice = b.token("alice", DEMO_PASSWORDS["alice"])
    admin = b.token("admin", DEMO_PASSWORDS["admin"])
    project = project_of(b, alice)
    baseline = last_event_id(b, alice)
    published_before = sample(scrape(b, admin), "researchflow_events_published_total")

    async def scenario() -> tuple[list[int], list[int], int | None, dict[str, Any]]:
        ws = await authed(a.ws_url, alice)
        # 1. Events caused through B's REST API reach the client on A, exactly once.
        run = await asyncio.to_thread(running_run, b, alice, project, "Across workers")
        await asyncio.to_thread(add_artifacts, b, alice, run["id"], 3)
        expected = await asyncio.to_thread(b.event_ids, alice, baseline)
        assert len(expected) == 5  # run.created, run.started, 3 × artifact.created
        first = [e["id"] for e in await read_events_until(ws, expected[-1])]
        assert first == expected

        # B has no socket; its stats endpoint still counts the one on A, through Redis.
        def cluster_sees_the_socket() -> dict[str, Any] | None:
            stats: dict[str, Any] = b.api("GET", "/api/ws/stats/", token=admin)
            return stats if stats["cluster"]["connections"]["authenticated"] == 1 else None

        stats = await asyncio.to_thread(wait_for, cluster_sees_the_socket)
        assert stats is not None, "worker A's socket never showed in the cluster stats"
        # 2. Worker A goes away mid-stream (SIGTERM) while B keeps producing events.
        producer = threading.Thread(
            target=add_artifacts, args=(b, alice, run["id"], 30, 0.03), daemon=True
        )
        producer.start()
        for _ in range(3):
            await recv(ws)  # the stream is flowing
        a.proc.send_signal(signal.SIGTERM)
        before_close, code = await read_until_closed(ws)
        # 3. The client reconnects to B and resumes from the last id it saw.
        seen = first + [e["id"] for e in before_close]
        resumed = await authed(b.ws_url, alice, lastEventId=seen[-1])
        await asyncio.to_thread(producer.join, 20)
        assert not producer.is_alive()
        everything = await asyncio.to_thread(b.event_ids, alice, baseline)
        after = [e["id"] for e in await read_events_until(resumed, everything[-1])]
        await resumed.close()
        return seen + after, everything, code, stats

    received, everything, code, stats = asyncio.run(asyncio.wait_for(scenario(), 50))
    assert code == GOING_AWAY
    assert len(everything) == 5 + 30
    assert received == everything  # nothing lost, nothing twice, in order
    assert stats["local"]["connections"]["total"] == 0
    assert stats["cluster"]["processes"] >= 1
    assert a.stop() in (0, -signal.SIGTERM)  # it exited on its own, not by our SIGKILL

    # 4. The counters moved: B published 35 events and delivered the resumed tail (the hub
    # adds deliveries to Prometheus once per WS_GAP_CHECK_INTERVAL).
    def delivered_moved() -> str | None:
        text = scrape(b, admin)
        return text if sample(text, "researchflow_ws_messages_delivered_total") > 0 else None

    text = wait_for(delivered_moved)
    assert text, "messages delivered never moved on worker B"
    assert sample(text, "researchflow_events_published_total") >= published_before + 35
    assert sample(text, "researchflow_ws_resume_events_replayed_total") >= 1
    assert sample(text, "researchflow_ws_sockets_open") == 0


# --- graceful shutdown and compression under each server -----------------------------------


@pytest.mark.parametrize(
    ("server", "extra", "deflate"),
    [
        ("daphne", [], False),  # daphne cannot negotiate it (daphne #236, #326)
        ("uvicorn", [], False),
        ("uvicorn", ["--compression"], True),
    ],
    ids=["daphne", "uvicorn", "uvicorn-compression"],
)
def test_a_server_negotiates_compression_only_when_asked_and_closes_1001_on_sigterm(
    server: str, extra: list[str], deflate: bool
) -> None:
    with AppServer(server, extra_args=extra) as app:
        token = app.token("alice", DEMO_PASSWORDS["alice"])
        project = project_of(app, token)

        baseline = last_event_id(app, token)

        async def scenario() -> tuple[str | None, list[int], list[int], int | None]:
            # The websockets client offers permessage-deflate by default.
            ws = await authed(app.ws_url, token)
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            await asyncio.to_thread(running_run, app, token, project, "Going away")
            expected = await asyncio.to_thread(app.event_ids, token, baseline)
            got = [e["id"] for e in await read_events_until(ws, expected[-1], 10)]
            app.proc.send_signal(signal.SIGTERM)
            rest, code = await read_until_closed(ws)
            return extensions, expected, got + [e["id"] for e in rest], code

        extensions, expected, ids, code = asyncio.run(asyncio.wait_for(scenario(), 40))
        if deflate:
            assert extensions is not None and "permessage-deflate" in extensions
        else:
            assert extensions is None
        assert code == GOING_AWAY
        assert ids == expected
        assert app.stop() in (0, -signal.SIGTERM)  # exited by itself after the drain


# --- several workers in one server: metrics summed, every worker drains --------------------


@pytest.mark.redis
def test_a_multi_worker_server_reports_every_workers_sockets() -> None:
    with (
        RedisServer() as redis,
        AppServer("uvicorn", env={"REDIS_URL": redis.url}, workers=2) as app,
    ):
        admin = app.token("admin", DEMO_PASSWORDS["admin"])

        async def scenario() -> tuple[list[float], list[int | None]]:
            sockets = [await authed(app.ws_url, admin) for _ in range(6)]
            # Each scrape lands on either worker; each must see all six sockets.
            counts = [
                sample(await asyncio.to_thread(scrape, app, admin), "researchflow_ws_sockets_open")
                for _ in range(6)
            ]
            app.proc.send_signal(signal.SIGTERM)  # the supervisor passes it to each worker
            codes = [(await read_until_closed(ws))[1] for ws in sockets]
            return counts, codes

        counts, codes = asyncio.run(asyncio.wait_for(scenario(), 40))
        assert counts == [6.0] * 6
        assert codes == [GOING_AWAY] * 6
        assert app.stop() == 0
