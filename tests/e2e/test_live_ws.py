"""The wire, for real: a `websockets` client against the app under daphne and under uvicorn,
and two server processes sharing events through a real redis-server."""

from __future__ import annotations

import asyncio
import json
import tempfile
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from devtools.servers import DEMO_PASSWORDS, AppServer, RedisServer

pytestmark = [pytest.mark.e2e]
CATEGORIES = ["RUN_EVENTS", "STAGE_EVENTS", "ARTIFACT_EVENTS", "GOVERNANCE_EVENTS"]


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def app(request: Any) -> Iterator[AppServer]:
    with AppServer(request.param) as server:
        yield server


async def recv(ws: Any, timeout: float = 10) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def recv_events(ws: Any, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        msg = await recv(ws, timeout)
        if "id" in msg:
            events.append(msg)
    return events


async def authed(url: str, token: str, **auth: Any) -> Any:
    ws = await websockets.connect(url, open_timeout=10)
    hello = await recv(ws)
    assert hello["type"] == "connection.established"
    await ws.send(
        json.dumps(
            {"type": "auth", "payload": {"token": token, "eventCategories": CATEGORIES, **auth}}
        )
    )
    reply = await recv(ws)
    assert reply["type"] == "auth.success", reply
    return ws


def project_of(app: AppServer, token: str) -> str:
    projects = app.api("GET", "/api/projects/", token=token)
    results = projects["results"] if isinstance(projects, dict) else projects
    return str(results[0]["id"])


def test_it_streams_a_runs_lifecycle_over_a_real_socket(app: AppServer) -> None:
    token = app.token("alice", DEMO_PASSWORDS["alice"])
    project = project_of(app, token)

    async def scenario() -> list[dict[str, Any]]:
        ws = await authed(app.ws_url, token)
        await ws.send('{"type": "ping"}')
        assert (await recv(ws))["type"] == "pong"
        run = await asyncio.to_thread(
            app.api,
            "POST",
            "/api/runs/",
            {"projectId": project, "name": "Live", "stages": ["A"]},
            token,
        )
        await asyncio.to_thread(app.api, "POST", f"/api/runs/{run['id']}/start/", {}, token)
        stage = run["stages"][0]["id"]
        await asyncio.to_thread(app.api, "POST", f"/api/stages/{stage}/start/", {}, token)
        await asyncio.to_thread(
            app.api, "POST", f"/api/stages/{stage}/progress/", {"progress": 60}, token
        )
        events = await recv_events(ws, 4)
        await ws.close()
        return events

    events = asyncio.run(scenario())
    assert [e["type"] for e in events] == [
        "run.created",
        "run.started",
        "stage.started",
        "stage.progress",
    ]
    assert events[-1]["payload"]["progress"] == 60


def test_it_answers_garbage_with_errors_and_keeps_serving(app: AppServer) -> None:
    async def scenario() -> None:
        async with websockets.connect(app.ws_url, open_timeout=10) as ws:
            await recv(ws)
            await ws.send("{nope")
            assert (await recv(ws))["payload"]["details"]["code"] == "invalid_json"
            await ws.send(b"\x00binary")
            assert (await recv(ws))["payload"]["details"]["code"] == "binary_not_supported"
            await ws.send('{"type": "ping"}')
            assert (await recv(ws))["type"] == "pong"
            await ws.send("x" * 70_000)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    asyncio.run(scenario())


def test_it_refuses_a_handshake_from_a_foreign_origin(app: AppServer) -> None:
    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(app.ws_url, origin="https://evil.example", open_timeout=10)
        assert refused.value.response.status_code == 403

    asyncio.run(scenario())


def test_it_refuses_bad_rest_input_without_a_500(app: AppServer) -> None:
    token = app.token("alice", DEMO_PASSWORDS["alice"])
    for body in ([], {"projectId": 5}, {"name": "x" * 10_000}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            app.api("POST", "/api/runs/", body, token)
        assert refused.value.code == 400


@pytest.mark.redis
def test_two_processes_share_events_through_redis() -> None:
    with tempfile.TemporaryDirectory() as tmp, RedisServer() as redis:
        env = {"REDIS_URL": redis.url, "DATABASE_URL": f"sqlite:///{Path(tmp) / 'shared.sqlite3'}"}
        with (
            AppServer("daphne", env=env) as a,
            AppServer("uvicorn", env=env, migrate=False, seed=False) as b,
        ):
            token = a.token("alice", DEMO_PASSWORDS["alice"])
            project = project_of(a, token)

            async def scenario() -> list[dict[str, Any]]:
                ws = await authed(b.ws_url, token)  # the socket lives on B…
                for name in ("one", "two", "three"):  # …the changes go through A
                    await asyncio.to_thread(
                        a.api,
                        "POST",
                        "/api/runs/",
                        {"projectId": project, "name": name, "stages": ["s"]},
                        token,
                    )
                events = await recv_events(ws, 3)
                with pytest.raises(asyncio.TimeoutError):
                    await recv(ws, timeout=1.0)  # exactly once: nothing more arrives
                await ws.close()
                return events

            events = asyncio.run(scenario())
            assert [e["payload"]["runName"] for e in events] == ["one", "two", "three"]
            assert len({e["id"] for e in events}) == 3
