"""Operations: /healthz, /readyz, /metrics (who may read it, multiprocess mode), graceful
shutdown's drain and signal chaining, and the hub's stats publisher."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from devtools.servers import free_port
from events import metrics
from events.gateway import shutdown
from events.gateway.hub import Hub
from researchflow.ops import health as ops
from runs import services
from tests.ws_helpers import (
    ALL_CATEGORIES,
    Gate,
    authed_socket,
    db,
    gated_socket,
    holds,
    metric,
    offered_everything_logged,
    open_socket,
    receive_events,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
ALL = ALL_CATEGORIES


@pytest.fixture(autouse=True)
async def _clean_state() -> Any:
    shutdown.reset_for_tests()
    yield
    for hub in Hub.running():
        await hub.stop()
    shutdown.reset_for_tests()


def token_client(user: Any = None, *, header: str | None = None) -> Client:
    if header is not None:
        return Client(HTTP_AUTHORIZATION=header)
    if user is None:
        return Client()
    from rest_framework.authtoken.models import Token

    return Client(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")


# --- /healthz, /readyz ---------------------------------------------------------------------


def test_it_says_the_process_is_up() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_it_is_ready_when_the_database_and_the_channel_layer_answer() -> None:
    response = Client().get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "channelLayer": "ok"},
    }


@pytest.mark.django_db
def test_it_names_the_failed_check(monkeypatch: Any) -> None:
    from django.db import OperationalError

    async def broken() -> None:
        raise OperationalError("could not connect to server: secret-host")

    monkeypatch.setitem(ops.CHECKS, "database", broken)
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["database"]
    assert body["checks"] == {"database": "error: OperationalError", "channelLayer": "ok"}
    assert b"secret-host" not in response.content  # the driver's message stays in the server


@pytest.mark.django_db
def test_it_reports_a_check_that_hangs_as_a_timeout(monkeypatch: Any, settings: Any) -> None:
    settings.READINESS_TIMEOUT = 0.05

    async def hangs() -> None:
        await asyncio.sleep(5)

    monkeypatch.setitem(ops.CHECKS, "channelLayer", hangs)
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["channelLayer"] == "timeout"


@pytest.mark.django_db
def test_it_is_not_ready_when_redis_does_not_answer(settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = Client().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["channelLayer"]
    assert body["checks"]["channelLayer"].startswith("error: ")


@pytest.mark.django_db
def test_it_is_not_ready_once_a_graceful_shutdown_began() -> None:
    assert asyncio.run(shutdown.drain_all(grace=0)) == 0  # no hub on that loop: nothing left
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "shutting_down"


# --- /metrics: who may read it -------------------------------------------------------------


def test_it_refuses_metrics_to_anonymous_visitors(db: Any) -> None:
    response = Client().get("/metrics")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_it_refuses_metrics_to_a_non_staff_member(world: Any) -> None:
    assert token_client(world.alice).get("/metrics").status_code == 403
    session = Client()
    session.force_login(world.alice)
    assert session.get("/metrics").status_code == 403


def test_it_shows_metrics_to_staff_by_token_and_by_session(world: Any) -> None:
    response = token_client(world.sam).get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"researchflow_events_published_total" in response.content
    session = Client()
    session.force_login(world.sam)
    assert session.get("/metrics").status_code == 200


def test_it_refuses_a_bad_api_token(db: Any) -> None:
    assert token_client(header="Token not-a-real-token").get("/metrics").status_code == 403


def test_it_shows_metrics_to_a_scraper_with_the_metrics_token(db: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-me-0123456789"
    assert token_client(header="Bearer scrape-me-0123456789").get("/metrics").status_code == 200
    assert token_client(header="Bearer scrape-me-012345678").get("/metrics").status_code == 403
    assert token_client(header="Bearer ").get("/metrics").status_code == 403
    assert token_client(header="Basic c2FtOnB3").get("/metrics").status_code == 403


def test_it_accepts_no_bearer_token_when_none_is_configured(db: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = None
    assert token_client(header="Bearer ").get("/metrics").status_code == 403
    assert token_client(header="Bearer None").get("/metrics").status_code == 403


def test_it_does_not_take_an_api_token_as_the_metrics_token(world: Any, settings: Any) -> None:
    from rest_framework.authtoken.models import Token

    settings.METRICS_TOKEN = "scrape-me-0123456789"
    key = Token.objects.get_or_create(user=world.sam)[0].key
    assert token_client(header=f"Bearer {key}").get("/metrics").status_code == 403


def test_a_wrong_credential_never_falls_back_to_the_session(world: Any) -> None:
    client = Client(HTTP_AUTHORIZATION="Token wrong")
    client.force_login(world.sam)
    assert client.get("/metrics").status_code == 403


def test_it_only_answers_reads(world: Any) -> None:
    assert token_client(world.sam).post("/metrics").status_code == 405


# --- /metrics: several worker processes ----------------------------------------------------

WORKER = """
import sys
from events import metrics
metrics.CONNECTS.inc()
metrics.SOCKETS_OPEN.inc()
metrics.EVENTS_PUBLISHED.labels(type="run.created").inc(3)
metrics.PUBLISH_TO_SEND.observe(0.003)
if sys.argv[1] == "stay":
    print("ready", flush=True)
    sys.stdin.readline()
"""


def _worker(tmp: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, mode],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_it_sums_every_worker_and_forgets_the_open_sockets_of_dead_ones(
    tmp_path: Path, monkeypatch: Any
) -> None:
    for _ in range(2):
        finished = _worker(tmp_path, "exit")
        assert finished.wait(20) == 0
    alive = _worker(tmp_path, "stay")
    try:
        assert alive.stdout is not None and alive.stdout.readline().strip() == "ready"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        text = metrics.render()[0].decode()
        assert _sample(text, "researchflow_ws_connects_total") == 3.0
        assert 'researchflow_events_published_total{type="run.created"} 9.0' in text
        assert _sample(text, "researchflow_publish_to_send_seconds_count") == 3.0
        # Two workers died holding a socket each (no clean exit): only the live one counts.
        assert _sample(text, "researchflow_ws_sockets_open") == 1.0
    finally:
        alive.communicate("\n", timeout=10)
    text = metrics.render()[0].decode()
    assert _sample(text, "researchflow_ws_sockets_open") in (None, 0.0)
    assert _sample(text, "researchflow_ws_connects_total") == 3.0  # the past still counts


def test_the_serve_command_cleans_a_multiprocess_dir(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    metrics.clean_multiprocess_dir(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# --- graceful shutdown ---------------------------------------------------------------------


def _three_runs(world: Any) -> list[str]:
    return [services.create_run(world.project, f"Run {i}", ["A"], world.alice).pk for i in range(3)]


@pytest.mark.django_db(transaction=True)
async def test_a_drain_sends_what_is_queued_then_closes_with_1001(world: Any) -> None:
    gate = Gate()
    comm = await gated_socket(gate, world.bob)
    gate.open.clear()  # the client stops reading: three events queue up
    run_ids = await db(_three_runs)(world)
    await offered_everything_logged()
    assert gate.stalled == 1
    drain = asyncio.ensure_future(shutdown.drain_all(grace=5))
    # Waits for the queued frames: 0.1 s is ample for a drain that wrongly did not wait (it
    # would finish within a few loop turns).
    assert await holds(lambda: not drain.done(), 0.1)
    gate.open.set()
    events = await receive_events(comm, 3)
    assert [e["payload"]["runId"] for e in events] == run_ids
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1001}
    await comm.disconnect(code=1001)  # the client's half of the closing handshake
    assert await asyncio.wait_for(drain, 5) == 0


@pytest.mark.django_db(transaction=True)
async def test_a_socket_accepted_during_the_drain_is_sent_away_at_once(world: Any) -> None:
    first = await authed_socket(world.bob, categories=ALL)
    drain = asyncio.ensure_future(shutdown.drain_all(grace=5))
    assert await first.receive_output(timeout=5) == {"type": "websocket.close", "code": 1001}
    late, _ = await open_socket()  # raced the listener's close
    assert await late.receive_output(timeout=5) == {"type": "websocket.close", "code": 1001}
    await first.disconnect(code=1001)
    await late.disconnect(code=1001)
    assert await asyncio.wait_for(drain, 5) == 0


@pytest.mark.django_db(transaction=True)
async def test_a_drain_gives_up_on_a_client_that_never_reads(world: Any) -> None:
    gate = Gate()
    comm = await gated_socket(gate, world.bob)
    gate.open.clear()
    await db(_three_runs)(world)
    await offered_everything_logged()
    assert gate.stalled == 1
    assert await shutdown.drain_all(grace=0.2) == 1  # the server's own shutdown drops it
    gate.open.set()
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_signal_reaches_the_server_only_after_the_sockets_closed(
    world: Any, monkeypatch: Any
) -> None:
    comm = await authed_socket(world.bob, categories=ALL)
    calls: list[int] = []
    monkeypatch.setitem(shutdown._previous, signal.SIGTERM, lambda sig, frame: calls.append(sig))
    shutdown._on_signal(signal.SIGTERM, None)  # as if the server's process got SIGTERM
    assert shutdown.draining()
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1001}
    # The socket has not finished closing: no signal for the server, however long we give it
    # (0.1 s: a forward that did not wait would happen within a loop turn).
    assert await holds(lambda: calls == [], 0.1)
    await comm.disconnect(code=1001)
    await wait_until(lambda: bool(calls), what="the signal to be forwarded")
    assert calls == [signal.SIGTERM]
    # A second signal goes straight through: the operator insists.
    shutdown._on_signal(signal.SIGTERM, None)
    assert calls == [signal.SIGTERM, signal.SIGTERM]


def test_it_chains_only_onto_a_handler_a_server_installed(monkeypatch: Any) -> None:
    seen: list[int] = []

    def server_handler(sig: int, frame: Any) -> None:
        seen.append(sig)

    original_term = signal.getsignal(signal.SIGTERM)
    original_int = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(shutdown, "_installed", False)
    monkeypatch.setattr(shutdown, "_previous", {})
    try:
        signal.signal(signal.SIGTERM, server_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        shutdown.install(Hub.running)
        assert signal.getsignal(signal.SIGTERM) is shutdown._on_signal
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own
        shutdown._on_signal(signal.SIGTERM, None)  # no hub running: straight through
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original_term)
        signal.signal(signal.SIGINT, original_int)


def test_it_leaves_default_handlers_alone(monkeypatch: Any) -> None:
    original = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(shutdown, "_installed", False)
    monkeypatch.setattr(shutdown, "_previous", {})
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        shutdown.install(Hub.running)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, original)


# --- cross-process stats -------------------------------------------------------------------


class FakeRedis:
    """Records what the stats publisher writes; `fail` makes every command raise."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.ttl: dict[str, int] = {}
        self.fail = False
        self.closed = False

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        return self

    async def __aenter__(self) -> FakeRedis:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def hset(self, key: str, field: str, value: str) -> None:
        self._pending = (key, field, value)

    def expire(self, key: str, seconds: int) -> None:
        self._pending_ttl = (key, seconds)

    async def execute(self) -> None:
        if self.fail:
            raise ConnectionError("redis is down")
        key, field, value = self._pending
        self.hashes.setdefault(key, {})[field] = value
        self.ttl[self._pending_ttl[0]] = self._pending_ttl[1]

    async def delete(self, key: str) -> None:
        if self.fail:
            raise ConnectionError("redis is down")
        self.hashes.pop(key, None)

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.django_db(transaction=True)
async def test_each_process_publishes_its_socket_stats(
    world: Any, settings: Any, monkeypatch: Any
) -> None:
    import redis.asyncio

    from events.gateway.stats import PROCESS_ID

    fake = FakeRedis()
    monkeypatch.setattr(redis.asyncio.Redis, "from_url", lambda *a, **k: fake)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.WS_STATS_INTERVAL = 0.05
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    comm = await authed_socket(world.bob, categories=ALL)
    key = f"researchflow:wsstats:{PROCESS_ID}"

    def published() -> dict[str, Any] | None:
        return json.loads(fake.hashes[key]["stats"]) if key in fake.hashes else None

    await wait_until(
        lambda: (published() or {}).get("connections", {}).get("authenticated") == 1,
        what="the socket in the published stats",
    )
    blob = published()
    assert blob is not None
    assert blob["connections"] == {"total": 1, "authenticated": 1}
    assert blob["subscriptions"]["byCategory"]["RUN_EVENTS"] == 1
    assert fake.ttl[key] == 10

    errors = "researchflow_ws_stats_publish_errors_total"
    before = metric(errors)
    fake.fail = True  # Redis goes away: counted, never fatal
    await wait_until(lambda: metric(errors) > before, what="a failed publish to be counted")
    fake.fail = False
    await comm.disconnect()
    await wait_until(
        lambda: (published() or {}).get("connections", {}).get("total") == 0,
        what="the publisher to recover and publish the socket's departure",
    )
    for hub in Hub.running():
        await hub.stop()
    assert key not in fake.hashes  # a stopping process takes its entry with it
    assert fake.closed
