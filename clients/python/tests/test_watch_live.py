"""`python -m researchflow_client watch` as a real subprocess against the live app (daphne and
uvicorn): its exit code is the run's outcome, `--json` prints exactly the run's logged events,
a refused or revoked token ends it with 3, and a history the server cannot replay (a pruned
log, or one longer than it replays at once) is loaded over REST instead.

Everything listens on loopback; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from live import create_run, drive, token, wait_for
from test_watch_cli import CLIENT_DIR, Watcher, no_secret, watch

from devtools.servers import DEMO_PASSWORDS, AppServer

pytestmark = [pytest.mark.e2e]
RESYNCED = (
    "researchflow watch: the server could not replay the history: "
    "loaded the run's current state over REST"
)


def ids(lines: list[str]) -> list[int]:
    return [json.loads(line)["id"] for line in lines]


def types(lines: list[str]) -> list[str]:
    return [json.loads(line)["type"] for line in lines]


def following(app: AppServer, *args: str, api_token: str) -> Watcher:
    """A `--json` watcher that has replayed the run's history (its first line is printed)."""
    watcher = Watcher("--url", app.ws_url, "--json", *args, token=api_token)
    watcher.wait_until(lambda w: len(w.out) >= 1)
    return watcher


# --- the outcome -------------------------------------------------------------------------------


def test_it_exits_0_when_the_run_it_follows_completes(app: AppServer) -> None:
    alice = token(app)
    run = create_run(app, alice, "Watched")
    watcher = following(app, "--run", run["id"], api_token=alice)
    try:
        drive(app, alice, run)
        assert watcher.finish() == 0
    finally:
        watcher.stop()
    assert types(watcher.out)[-1] == "run.completed"
    assert watcher.err == []


def test_it_exits_1_when_the_run_it_follows_fails(app: AppServer) -> None:
    alice = token(app)
    run = create_run(app, alice, "Doomed")
    watcher = following(app, "--run", run["id"], api_token=alice)
    try:
        drive(app, alice, run, fail=True)
        assert watcher.finish() == 1
    finally:
        watcher.stop()
    assert types(watcher.out)[-1] == "run.failed"


def test_its_json_output_is_one_event_per_line_with_the_ids_of_the_runs_log(
    app: AppServer,
) -> None:
    alice = token(app)
    run = create_run(app, alice, "Logged")
    watcher = following(app, "--run", run["id"], api_token=alice)
    try:
        drive(app, alice, run)
        assert watcher.finish() == 0
    finally:
        watcher.stop()
    frames = [json.loads(line) for line in watcher.out]  # every line one valid JSON object
    assert all(set(frame) == {"id", "type", "timestamp", "payload"} for frame in frames)
    assert all(frame["payload"]["runId"] == run["id"] for frame in frames)
    assert ids(watcher.out) == app.event_ids(alice, run=run["id"])  # none lost, none twice


def test_over_sse_it_prints_the_same_events_of_the_runs_log(app: AppServer) -> None:
    alice = token(app)
    run = create_run(app, alice, "Streamed to the terminal")
    watcher = following(app, "--run", run["id"], "--transport", "sse", api_token=alice)
    try:
        drive(app, alice, run)
        assert watcher.finish() == 0
    finally:
        watcher.stop()
    assert ids(watcher.out) == app.event_ids(alice, run=run["id"])  # none lost, none twice
    assert types(watcher.out)[-1] == "run.completed"


def test_it_replays_a_run_that_already_ended_and_exits_at_once_with_its_outcome(
    daphne: AppServer,
) -> None:
    alice = token(daphne)
    run = create_run(daphne, alice, "Over already")
    drive(daphne, alice, run, fail=True)
    w = watch("--url", daphne.ws_url, "--run", run["id"], "--json", token=alice, limit=15)
    assert w.code == 1
    assert ids(w.out) == daphne.event_ids(alice, run=run["id"])
    assert types(w.out)[0] == "run.created"


def test_live_only_it_waits_for_the_next_event_instead_of_replaying(daphne: AppServer) -> None:
    alice = token(daphne)
    run = create_run(daphne, alice, "From now on")
    before = daphne.event_ids(alice, run=run["id"])
    watcher = connected(
        daphne, "--url", daphne.ws_url, "--run", run["id"], "--json", "--live-only", token=alice
    )
    try:
        drive(daphne, alice, run)
        assert watcher.finish() == 0
    finally:
        watcher.stop()
    assert ids(watcher.out) == [i for i in daphne.event_ids(alice, run=run["id"]) if i > before[-1]]


def sockets(app: AppServer) -> int:
    admin = app.token("admin", DEMO_PASSWORDS["admin"])
    stats: dict[str, Any] = app.api("GET", "/api/ws/stats/", token=admin)
    return int(stats["local"]["connections"]["authenticated"])


def connected(app: AppServer, *args: str, token: str) -> Watcher:
    """A watcher whose socket the server has authenticated (a live-only one prints nothing
    until an event comes). The module's server has no other socket once the last test's
    watcher is gone."""
    assert wait_for(lambda: sockets(app) == 0, 15), "a socket of an earlier test is still open"
    watcher = Watcher(*args, token=token)
    if not wait_for(lambda: sockets(app) == 1, 15):
        watcher.stop()
        raise AssertionError(f"the watcher never authenticated; stderr: {watcher.err}")
    return watcher


# --- a project -----------------------------------------------------------------------------


def test_on_a_project_it_follows_every_run_until_interrupted(daphne: AppServer) -> None:
    alice = token(daphne)
    old = create_run(daphne, alice, "Before")  # before the watcher: not shown (live only)
    project = old["projectId"]
    watcher = connected(daphne, "--url", daphne.ws_url, "--project", project, "--json", token=alice)
    try:
        runs = [create_run(daphne, alice, "Second"), create_run(daphne, alice, "Third")]
        drive(daphne, alice, runs[0])
        drive(daphne, alice, runs[1], fail=True)
        last_old = old_ids(daphne, alice, old)
        want = [i for i in daphne.event_ids(alice, project=project) if i > last_old]
        watcher.wait_until(lambda w: bool(w.out) and ids(w.out)[-1] >= want[-1])
        watcher.proc.send_signal(signal.SIGINT)
        assert watcher.finish(15) == 130
    finally:
        watcher.stop()
    assert ids(watcher.out) == want  # both runs, the failed one too: a project has no outcome
    assert {json.loads(line)["payload"]["runId"] for line in watcher.out} == {r["id"] for r in runs}
    assert watcher.err == ["researchflow watch: interrupted"]


def old_ids(app: AppServer, api_token: str, run: dict[str, Any]) -> int:
    return max(app.event_ids(api_token, run=run["id"]))


# --- refused: 3 ----------------------------------------------------------------------------


def test_it_exits_3_for_a_refused_token(daphne: AppServer) -> None:
    run = create_run(daphne, token(daphne), "Refused")
    w = watch("--url", daphne.ws_url, "--run", run["id"], token="not-a-token", limit=15)
    assert w.code == 3
    assert w.out == []
    assert w.err == [
        "researchflow watch: error: authentication refused by the server: invalid or expired "
        "token (check the token, and that the run or project exists and you are a member)"
    ]


def test_it_exits_3_for_a_forbidden_run_and_for_an_unknown_run_alike(daphne: AppServer) -> None:
    bob = token(daphne, "bob")
    project = daphne.api("POST", "/api/projects/", {"name": "Bob's alone"}, bob)
    body = {"projectId": project["id"], "name": "Private", "stages": ["A"]}
    private = daphne.api("POST", "/api/runs/", body, bob)
    alice = token(daphne)
    forbidden = watch("--url", daphne.ws_url, "--run", private["id"], token=alice, limit=15)
    unknown = watch("--url", daphne.ws_url, "--run", "run_" + "0" * 20, token=alice, limit=15)
    assert forbidden.code == unknown.code == 3
    assert forbidden.err == unknown.err  # the server does not say whether the run exists
    assert "run not found or not accessible" in forbidden.err[-1]
    assert no_secret(forbidden.err)


def test_it_exits_3_when_its_token_is_revoked_mid_run(app: AppServer) -> None:
    bob = token(app, "bob")
    run = create_run(app, bob, "Revoked")
    watcher = following(app, "--run", run["id"], api_token=bob)
    try:
        app.manage("drf_create_token", "-r", "bob")  # replaces bob's token: the old one is revoked
        assert watcher.finish(20) == 3
    finally:
        watcher.stop()
    assert "the token was revoked" in watcher.err[-1]
    assert "get a new token" in watcher.err[-1]
    assert not any(bob in line for line in watcher.err)


# --- a pruned log ----------------------------------------------------------------------------


@pytest.fixture
def pruned() -> Iterator[AppServer]:
    """A server whose log was pruned: every event so far aged, then prune_events."""
    with AppServer("daphne") as app:
        alice = token(app)
        drive(app, alice, create_run(app, alice, "Long gone"))
        app.manage(
            "shell",
            "-c",
            "from datetime import timedelta; from django.utils import timezone; "
            "from events.models import Event; "
            "Event.objects.update(created_at=timezone.now() - timedelta(days=3))",
        )
        app.manage("prune_events", "--days", "1")
        yield app


def test_on_a_pruned_log_it_says_so_and_exits_with_the_outcome_it_loads_over_rest(
    pruned: AppServer,
) -> None:
    alice = token(pruned)
    run = create_run(pruned, alice, "After the prune")
    drive(pruned, alice, run)
    # From the start (0), the server answers resync.required: the log begins later.
    w = watch("--url", pruned.ws_url, "--run", run["id"], "--json", token=alice, limit=20)
    assert w.code == 0
    assert w.out == []  # no event: the run's state came over REST, and it had ended
    assert w.err == [RESYNCED]


# --- in a terminal -------------------------------------------------------------------------


def in_a_terminal(app: AppServer, run_id: str, api_token: str) -> tuple[int, str]:
    """Run the watcher on a pseudo-terminal to its end: its exit code and the screen's bytes
    as text."""
    leader, follower = pty.openpty()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RESEARCHFLOW_")},
        "PYTHONPATH": str(CLIENT_DIR),
        "RESEARCHFLOW_TOKEN": api_token,
        "COLUMNS": "120",
        "TERM": "xterm-256color",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "researchflow_client",
            "watch",
            "--url",
            app.ws_url,
            "--run",
            run_id,
        ],
        stdout=follower,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, screen[-2000:]
        if select.select([leader], [], [], 0.1)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(5), screen.decode("utf-8", "replace")


def test_in_a_terminal_it_draws_the_run_and_exits_with_its_outcome(daphne: AppServer) -> None:
    alice = token(daphne)
    run = create_run(daphne, alice, "On screen")
    drive(daphne, alice, run)
    code, text = in_a_terminal(daphne, run["id"], alice)
    assert code == 0
    assert "\x1b[" in text  # drawn with terminal controls, not JSON lines
    assert "On screen" in text and "✓ completed" in text
    assert "Ingest" in text and "Model" in text
    assert "artifact results.parquet" in text
    assert '"type"' not in text


@pytest.fixture(scope="module")
def short_replay() -> Iterator[AppServer]:
    """A server that replays at most 20 events on a resume (then answers resync.required)."""
    with AppServer("daphne", env={"WS_RESUME_MAX_EVENTS": "20"}) as app:
        yield app


@pytest.mark.parametrize(("fail", "code"), [(False, 0), (True, 1)])
def test_on_an_ended_run_too_long_to_replay_it_loads_it_over_rest_and_exits_with_its_outcome(
    short_replay: AppServer, fail: bool, code: int
) -> None:
    app, alice = short_replay, token(short_replay)
    run = create_run(app, alice, "Long and over")
    drive(app, alice, run, progress_steps=10, fail=fail)
    assert len(app.event_ids(alice, run=run["id"])) > 20
    w = watch("--url", app.ws_url, "--run", run["id"], "--json", token=alice, limit=15)
    assert w.code == code
    assert w.out == []
    assert w.err == [RESYNCED]


def test_on_a_running_run_too_long_to_replay_it_loads_it_over_rest_then_follows_live(
    short_replay: AppServer,
) -> None:
    app, alice = short_replay, token(short_replay)
    run = create_run(app, alice, "Long history")
    for path in (f"/api/runs/{run['id']}/start/", f"/api/stages/{run['stages'][0]['id']}/start/"):
        app.api("POST", path, {}, alice)
    for percent in range(5, 100, 5):
        app.api(
            "POST", f"/api/stages/{run['stages'][0]['id']}/progress/", {"progress": percent}, alice
        )
    before = app.event_ids(alice, run=run["id"])
    assert len(before) > 20
    watcher = Watcher("--url", app.ws_url, "--run", run["id"], "--json", token=alice)
    try:
        watcher.wait_until(lambda w: bool(w.err))
        finish(app, alice, run)
        assert watcher.finish() == 0
    finally:
        watcher.stop()
    assert ids(watcher.out) == [i for i in app.event_ids(alice, run=run["id"]) if i > before[-1]]
    assert watcher.err == [RESYNCED]


def test_in_a_terminal_a_run_loaded_over_rest_is_drawn_with_its_outcome(
    short_replay: AppServer,
) -> None:
    app, alice = short_replay, token(short_replay)
    run = create_run(app, alice, "Long on screen")
    drive(app, alice, run, progress_steps=10)
    code, text = in_a_terminal(app, run["id"], alice)
    assert code == 0
    assert "loaded the run's current state over REST" in text
    frame = text[text.rindex("Long on screen") :]  # the last frame drawn
    assert "✓ completed" in frame and "2/2 stages" in frame
    assert "Ingest" in frame and "Model" in frame and "results.parquet" in frame


def finish(app: AppServer, api_token: str, run: dict[str, Any]) -> None:
    """Complete a run whose first stage is running."""
    for n, stage in enumerate(run["stages"]):
        if n:
            app.api("POST", f"/api/stages/{stage['id']}/start/", {}, api_token)
        app.api("POST", f"/api/stages/{stage['id']}/complete/", {}, api_token)
    app.api("POST", f"/api/runs/{run['id']}/complete/", {}, api_token)
