"""The client against the live app (daphne and uvicorn): it follows a run to the end, survives
a server restart without losing or repeating an event, and ends with a clear error when the
server refuses it.

Everything listens on loopback; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live import create_run, drive, in_background, token, wait_for

from devtools.servers import AppServer, free_port
from researchflow_client import (
    AccessRevoked,
    AuthFailed,
    Event,
    InvalidURL,
    ResyncRequired,
    RunEvents,
    RunSnapshot,
    ServerUnavailable,
    follow,
    load_run,
)
from researchflow_client.catalogue import RunCompleted, StageProgress

pytestmark = [pytest.mark.e2e]
FINAL = ("run.completed", "run.failed")
FAST = {"backoff_initial": 0.05, "backoff_max": 0.5}


async def follow_to_the_end(events: RunEvents) -> list[Event]:
    got: list[Event] = []
    async for event in events:
        got.append(event)
        if event.type in FINAL:
            break
    return got


def test_it_follows_a_run_to_the_end(app: AppServer) -> None:
    alice = token(app)
    run = create_run(app, alice)

    async def scenario() -> list[Event]:
        async with RunEvents(app.ws_url, token=alice, run_id=run["id"], last_event_id=0) as ev:
            driver = in_background(lambda: drive(app, alice, run))
            got = await asyncio.wait_for(follow_to_the_end(ev), 60)
            assert ev.last_event_id == got[-1].id
        driver.join(30)
        assert not driver.errors  # type: ignore[attr-defined]
        return got

    got = asyncio.run(scenario())
    assert [e.id for e in got] == app.event_ids(alice, run=run["id"])
    assert got[0].type == "run.created"
    assert isinstance(got[-1].payload, RunCompleted)
    assert got[-1].payload.stages_completed == 2
    progress = [e.payload for e in got if isinstance(e.payload, StageProgress)]
    assert [p.progress for p in progress] == [33, 66, 100, 33, 66, 100]
    assert all(e.typed for e in got)


def test_a_revoked_token_ends_the_stream_with_access_revoked(app: AppServer) -> None:
    bob = token(app, "bob")
    run = create_run(app, bob, "Revoked")

    async def scenario() -> AccessRevoked:
        async with RunEvents(app.ws_url, token=bob, run_id=run["id"], last_event_id=0) as ev:
            first = await asyncio.wait_for(ev.__anext__(), 10)
            assert first.type == "run.created"
            # `-r` replaces bob's token: the old one is revoked.
            await asyncio.to_thread(app.manage, "drf_create_token", "-r", "bob")
            with pytest.raises(AccessRevoked) as caught:
                await asyncio.wait_for(ev.__anext__(), 10)
            # The stream is over: nothing more is yielded, no reconnect is tried.
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(ev.__anext__(), 1)
            return caught.value

    error = asyncio.run(scenario())
    assert error.code == 4401
    assert "revoked" in str(error) and "POST /api/auth/token/" in str(error)


# --- a server restart mid-run -----------------------------------------------------------------


@pytest.fixture(params=[("daphne", signal.SIGTERM), ("uvicorn", signal.SIGKILL)], ids=str)
def restartable(request: pytest.FixtureRequest) -> Iterator[tuple[AppServer, AppServer, int]]:
    """Server A (the client's, restarted mid-run) and B (where the run is driven), sharing one
    SQLite log; A's hub reads events B wrote from that log (its periodic tail check)."""
    kind, sig = request.param
    with tempfile.TemporaryDirectory(prefix="rf-client-restart-") as var:
        env = {
            "DATABASE_URL": f"sqlite:///{Path(var) / 'db.sqlite3'}",
            "WS_GAP_CHECK_INTERVAL": "0.1",
        }
        with (
            AppServer(kind, env=env) as a,
            AppServer("daphne", env=env, migrate=False, seed=False) as b,
        ):
            a.migrate = a.seed = False  # the restart reuses the database as it is
            yield a, b, sig


def test_a_server_restart_mid_run_loses_and_repeats_nothing(
    restartable: tuple[AppServer, AppServer, int], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, sig = restartable
    alice = token(b)
    run = create_run(b, alice, "Restarted")

    async def scenario() -> tuple[list[Event], list[int]]:
        got: list[Event] = []
        async with RunEvents(
            a.ws_url, token=alice, run_id=run["id"], last_event_id=0, max_retries=None, **FAST
        ) as ev:
            driver = in_background(lambda: drive(b, alice, run, pace=0.15))
            async for event in ev:
                got.append(event)
                if len(got) == 5:
                    break
            # A goes away mid-run (B keeps publishing), then comes back on the same port.
            await asyncio.to_thread(a.stop, sig)
            await asyncio.to_thread(a.start)
            got += await asyncio.wait_for(follow_to_the_end(ev), 60)
        driver.join(30)
        assert not driver.errors  # type: ignore[attr-defined]
        return got, b.event_ids(alice, run=run["id"])

    got, logged = asyncio.run(scenario())
    assert [e.id for e in got] == logged
    assert got[-1].type == "run.completed"
    assert any("reconnecting" in r.getMessage() for r in caplog.records)  # it did lose A


# --- refusals -------------------------------------------------------------------------------


def test_a_refused_token_raises_auth_failed(daphne: AppServer) -> None:
    async def scenario() -> None:
        async with RunEvents(daphne.ws_url, token="not-a-token"):
            pass

    with pytest.raises(AuthFailed) as caught:
        asyncio.run(scenario())
    assert caught.value.server_message == "invalid or expired token"
    assert "check the token" in str(caught.value)


def test_a_run_of_another_project_raises_auth_failed_without_saying_it_exists(
    daphne: AppServer,
) -> None:
    bob = token(daphne, "bob")
    project = daphne.api("POST", "/api/projects/", {"name": "Bob's own"}, bob)
    body = {"projectId": project["id"], "name": "Private", "stages": ["A"]}
    private = daphne.api("POST", "/api/runs/", body, bob)

    async def scenario(run_id: str) -> str:
        with pytest.raises(AuthFailed) as caught:
            async with RunEvents(daphne.ws_url, token=token(daphne), run_id=run_id):
                pass
        return caught.value.server_message

    forbidden = asyncio.run(scenario(private["id"]))
    unknown = asyncio.run(scenario("run_" + "0" * 20))
    assert forbidden == unknown == "run not found or not accessible"


def test_a_path_other_than_ws_raises_invalid_url(daphne: AppServer) -> None:
    async def scenario() -> None:
        async with RunEvents(daphne.ws_url.replace("/ws", "/socket"), token="t", **FAST):
            pass

    with pytest.raises(InvalidURL, match="HTTP 403"):
        asyncio.run(scenario())


def test_nothing_listening_raises_server_unavailable_after_the_retries() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"

    async def scenario() -> None:
        async with RunEvents(url, token="t", max_retries=2, **FAST):
            pass

    with pytest.raises(ServerUnavailable) as caught:
        asyncio.run(asyncio.wait_for(scenario(), 20))
    assert caught.value.attempts == 3  # the first try and two retries
    assert url in str(caught.value)


# --- resync -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned() -> Iterator[tuple[AppServer, dict[str, Any], str]]:
    """A server whose log was pruned past a finished run (its events aged, then prune_events)."""
    with AppServer("daphne") as app:
        alice = token(app)
        run = create_run(app, alice, "Pruned")
        drive(app, alice, run)
        app.manage(
            "shell",
            "-c",
            "from datetime import timedelta; from django.utils import timezone; "
            "from events.models import Event; "
            "Event.objects.update(created_at=timezone.now() - timedelta(days=3))",
        )
        app.manage("prune_events", "--days", "1")
        yield app, run, alice


def test_a_cursor_older_than_the_log_raises_resync_required(
    pruned: tuple[AppServer, dict[str, Any], str],
) -> None:
    app, _, alice = pruned

    async def scenario() -> ResyncRequired:
        async with RunEvents(app.ws_url, token=alice, last_event_id=0) as ev:
            with pytest.raises(ResyncRequired) as caught:
                await asyncio.wait_for(ev.__anext__(), 10)
            # The caller can go on: live events follow on the same stream.
            later = await asyncio.to_thread(create_run, app, alice, "After the resync")
            event = await asyncio.wait_for(ev.__anext__(), 10)
            assert event.type == "run.created" and event.payload.run_id == later["id"]  # type: ignore[union-attr]
            return caught.value

    error = asyncio.run(scenario())
    assert error.last_event_id == 0
    assert error.oldest_event_id is not None and error.oldest_event_id > 1
    assert "reload the state over REST" in str(error)


def test_on_resync_required_the_stream_loads_its_run_over_rest_and_goes_on(
    pruned: tuple[AppServer, dict[str, Any], str],
) -> None:
    app, run, alice = pruned

    async def scenario() -> RunSnapshot:
        async with RunEvents(app.ws_url, token=alice, run_id=run["id"], last_event_id=0) as ev:
            with pytest.raises(ResyncRequired):
                await asyncio.wait_for(ev.__anext__(), 10)
            return await ev.load_run()

    snapshot = asyncio.run(scenario())
    assert snapshot.status == "completed"
    assert snapshot == RunSnapshot.model_validate(
        app.api("GET", f"/api/runs/{run['id']}/", token=alice)
    )


def test_the_sync_wrapper_loads_its_run_over_rest_too(
    pruned: tuple[AppServer, dict[str, Any], str],
) -> None:
    app, run, alice = pruned
    with follow(app.ws_url, token=alice, run_id=run["id"], last_event_id=0) as events:
        with pytest.raises(ResyncRequired):
            next(events)
        snapshot = events.load_run()
    assert (snapshot.id, snapshot.status) == (run["id"], "completed")


# --- a run over REST (load_run) ----------------------------------------------------------------


def half_driven(app: AppServer, api_token: str) -> dict[str, Any]:
    """A running run: its first stage at 40 %, an approval waiting, an artifact."""
    run = create_run(app, api_token, "Half way")
    stage = run["stages"][0]["id"]
    app.api("POST", f"/api/runs/{run['id']}/start/", {}, api_token)
    app.api("POST", f"/api/stages/{stage}/start/", {}, api_token)
    progress = {"progress": 40, "itemsProcessed": 4, "itemsTotal": 10, "statusMessage": "ok"}
    app.api("POST", f"/api/stages/{stage}/progress/", progress, api_token)
    app.api(
        "POST",
        f"/api/runs/{run['id']}/approvals/",
        {"governanceType": "PHI_SCAN", "priority": "HIGH", "assignedTo": ["bob"]},
        api_token,
    )
    artifact = {"kind": "dataset", "name": "a.csv", "sizeBytes": 3, "contentType": "text/csv"}
    app.api("POST", f"/api/runs/{run['id']}/artifacts/", {**artifact, "stageId": stage}, api_token)
    return run


def aliases(model: type[Any]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_load_run_equals_what_the_rest_api_says(app: AppServer) -> None:
    alice = token(app)
    run = half_driven(app, alice)
    snapshot = load_run(app.ws_url, token=alice, run_id=run["id"])
    answer = app.api("GET", f"/api/runs/{run['id']}/", token=alice)
    assert snapshot == RunSnapshot.model_validate(answer)
    # Every field the server sends has its place in the models: none is dropped.
    assert aliases(RunSnapshot) == set(answer)
    for key, items in (("stages", 2), ("artifacts", 1), ("approvals", 1)):
        assert len(answer[key]) == items
        model = type(getattr(snapshot, key)[0])
        assert aliases(model) == set(answer[key][0])
    assert (snapshot.status, snapshot.stages[0].status, snapshot.stages[0].progress) == (
        "running",
        "running",
        40,
    )
    assert (snapshot.approvals[0].status, snapshot.approvals[0].assigned_to) == ("pending", ["bob"])


def test_load_run_gives_the_same_error_for_a_foreign_run_as_for_an_unknown_one(
    daphne: AppServer,
) -> None:
    bob = token(daphne, "bob")
    project = daphne.api("POST", "/api/projects/", {"name": "Bob's own"}, bob)
    body = {"projectId": project["id"], "name": "Private", "stages": ["A"]}
    private = daphne.api("POST", "/api/runs/", body, bob)
    alice = token(daphne)
    errors = []
    for run_id in (private["id"], "run_" + "0" * 20):
        with pytest.raises(AuthFailed) as caught:
            load_run(daphne.ws_url, token=alice, run_id=run_id)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert "run not found or not accessible" in errors[0]

    async def over_the_socket() -> str:
        with pytest.raises(AuthFailed) as caught:
            async with RunEvents(daphne.ws_url, token=alice, run_id=private["id"]):
                pass
        return str(caught.value)

    assert asyncio.run(over_the_socket()) == errors[0]  # the socket's very words


def test_load_run_raises_auth_failed_for_a_refused_token(daphne: AppServer) -> None:
    run = create_run(daphne, token(daphne), "Not for you")
    with pytest.raises(AuthFailed, match=r"refused the token \(HTTP 401\)") as caught:
        load_run(daphne.ws_url, token="not-a-token", run_id=run["id"])
    assert "not-a-token" not in str(caught.value)


# --- the synchronous wrapper ------------------------------------------------------------------


def test_the_sync_wrapper_follows_a_run(daphne: AppServer) -> None:
    alice = token(daphne)
    run = create_run(daphne, alice, "Sync")
    got: list[Event] = []
    with follow(daphne.ws_url, token=alice, run_id=run["id"], last_event_id=0) as events:
        driver = in_background(lambda: drive(daphne, alice, run))
        for event in events:
            got.append(event)
            if event.type in FINAL:
                break
        assert events.last_event_id == got[-1].id
    driver.join(30)
    assert [e.id for e in got] == daphne.event_ids(alice, run=run["id"])
    assert wait_for(lambda: not driver.is_alive(), 5)
