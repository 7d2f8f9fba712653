"""The publish path's fast lanes: orjson in the log INSERT, and the batched hand-off from the
committing thread to the hub's loop (order kept, nothing lost, flushed at stop)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction

from events.bus import _payload_param, event_bus
from events.gateway import hub as hubmod
from events.gateway.hub import GROUP, Hub, _BackgroundSender, _HandOff, hand_off
from events.models import Event
from events.record import LoggedEvent
from runs import services

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


# --- orjson in the INSERT ----------------------------------------------------------------


def progress_payload(run: Any, stage: Any, message: str) -> dict[str, Any]:
    return {
        "runId": run.pk,
        "projectId": run.project_id,
        "stageId": stage.pk,
        "stageName": stage.name,
        "stageIndex": stage.position,
        "progress": 40,
        "statusMessage": message,
        "itemsProcessed": 2**53 - 1,  # the largest count a payload may carry
        "itemsTotal": 2**53 - 1,
    }


@pytest.mark.django_db
def test_the_log_row_reads_back_as_the_json_field_would_have_stored_it(world: Any) -> None:
    run = services.create_run(world.project, "Cohort", ["Größe"], world.alice)
    stage = run.stages.get()
    # Non-ASCII: stdlib json.dumps writes \u escapes, orjson raw UTF-8; both must read back equal.
    data = progress_payload(run, stage, 'Größe prüfen – 東京 ✓ "quoted" \\ back')
    with transaction.atomic():
        record = event_bus.publish("stage.progress", data)
    via_orm = Event.objects.create(
        type="stage.progress",
        project_id=run.project_id,
        run_id=run.pk,
        payload=record.payload,
        created_at=Event.objects.get(id=record.pk).created_at,
    )
    logged = Event.objects.get(id=record.pk)
    assert logged.payload == record.payload == via_orm.payload
    assert logged.payload["statusMessage"] == data["statusMessage"]
    # The database's own JSON functions read it too (the API filters on payload keys).
    assert list(
        Event.objects.filter(payload__statusMessage=data["statusMessage"])
        .order_by("id")
        .values_list("id", flat=True)
    ) == [record.pk, via_orm.id]
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload FROM events_event WHERE id = %s", [record.pk])
        assert json.loads(cursor.fetchone()[0]) == record.payload


@pytest.mark.django_db
def test_what_orjson_refuses_takes_the_json_fields_own_encoder() -> None:
    # Unreachable through validation (counts stop at 2**53 - 1), but never an error here.
    assert _payload_param({"n": 2**70}, connection) == '{"n": 1180591620717411303424}'
    assert _payload_param({"n": 1}, connection) == '{"n":1}'


@pytest.mark.django_db
def test_a_failed_log_write_dooms_the_callers_change(world: Any, monkeypatch: Any) -> None:
    """No savepoint around the log row: a caller that swallows the error cannot commit its
    change without the event (with a savepoint it could)."""
    from django.contrib.auth.models import User
    from django.db import DatabaseError

    from events import bus

    run = services.create_run(world.project, "Cohort", ["a"], world.alice)
    stage = run.stages.get()

    def failing_insert(*args: Any, **kwargs: Any) -> int:
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(bus, "_insert_event", failing_insert)
    with transaction.atomic():
        User.objects.create_user("the-change")
        with pytest.raises(DatabaseError):
            event_bus.publish("stage.progress", progress_payload(run, stage, "ok"))
        assert transaction.get_rollback()  # the caller's transaction can only roll back
    assert not User.objects.filter(username="the-change").exists()


# --- the hand-off buffer -----------------------------------------------------------------


class LoopThread:
    """An event loop running in its own thread, like a server's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        wait_until(self.loop.is_running)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def stop(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


class Sink:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.batches = 0
        self.threads: set[int] = set()

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        self.batches += 1
        self.threads.add(threading.get_ident())
        self.items.extend(batch)

    @property
    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.items]


def ticking_slowly(loop_thread: LoopThread, monkeypatch: Any) -> tuple[Sink, _HandOff]:
    """A hand-off whose first event has gone out and whose next tick is 30 s away: what is
    submitted now stays buffered."""
    monkeypatch.setattr(hubmod, "HAND_OFF_INTERVAL", 30)
    sink = Sink()
    handoff = _HandOff(loop_thread.loop, sink)
    handoff.submit({"seq": 0})
    assert wait_until(lambda: len(sink.items) == 1)
    return sink, handoff


def test_many_threads_lose_nothing_and_keep_the_submission_order(
    loop_thread: LoopThread,
) -> None:
    sink = Sink()
    handoff = _HandOff(loop_thread.loop, sink)
    seq = itertools.count()
    order = threading.Lock()  # submit order = seq order, as commits are ordered by the log lock
    per_thread = 3000

    def publisher() -> None:
        for _ in range(per_thread):
            with order:
                assert handoff.submit({"seq": next(seq)})

    threads = [threading.Thread(target=publisher) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_until(lambda: len(sink.items) == 8 * per_thread)
    assert sink.seqs == list(range(8 * per_thread))
    assert sink.threads == {loop_thread.thread.ident}  # the sink only ever runs on the loop
    assert sink.batches < 8 * per_thread  # batched, not one loop callback per event


def test_a_burst_wakes_the_loop_once(loop_thread: LoopThread) -> None:
    sink = Sink()
    handoff = _HandOff(loop_thread.loop, sink)
    wakes = []
    real = loop_thread.loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        wakes.append(args[0])
        return real(*args, **kwargs)

    loop_thread.loop.call_soon_threadsafe = counting  # type: ignore[method-assign, assignment]
    busy = threading.Event()
    loop_thread.loop.call_soon_threadsafe(busy.wait, 5)  # the loop is busy elsewhere
    for i in range(500):
        handoff.submit({"seq": i})
    busy.set()
    assert wait_until(lambda: len(sink.items) == 500)
    assert sink.seqs == list(range(500))
    assert len(wakes) == 2  # ours (busy.wait) and one for the whole burst


def test_the_first_event_goes_at_once_later_ones_within_the_interval_then_it_idles(
    loop_thread: LoopThread, monkeypatch: Any
) -> None:
    monkeypatch.setattr(hubmod, "HAND_OFF_INTERVAL", 1.0)
    sink = Sink()
    handoff = _HandOff(loop_thread.loop, sink)
    t0 = time.monotonic()
    handoff.submit({"seq": 0})
    assert wait_until(lambda: len(sink.items) == 1, 0.5)  # not held for the interval
    handoff.submit({"seq": 1})
    handoff.submit({"seq": 2})
    assert wait_until(lambda: len(sink.items) == 3, 5.0)
    assert time.monotonic() - t0 >= 0.9  # collected for an interval, in one batch
    assert sink.batches == 2
    # An interval with nothing: the timer stops and the next event wakes the loop again.
    assert wait_until(lambda: loop_thread.call(lambda: handoff._timer is None), 5.0)
    assert not handoff._armed
    t1 = time.monotonic()
    handoff.submit({"seq": 3})
    assert wait_until(lambda: len(sink.items) == 4, 0.5)
    assert time.monotonic() - t1 < 0.5
    assert sink.seqs == [0, 1, 2, 3]


def test_a_submit_on_the_loop_thread_goes_out_behind_what_is_buffered(
    loop_thread: LoopThread, monkeypatch: Any
) -> None:
    sink, handoff = ticking_slowly(loop_thread, monkeypatch)
    handoff.submit({"seq": 1})
    handoff.submit({"seq": 2})  # buffered for 30 s
    loop_thread.call(lambda: handoff.submit({"seq": 3}))  # on_commit inside async code
    assert sink.seqs == [0, 1, 2, 3]  # synchronously, in order


def test_close_hands_back_what_is_buffered_and_refuses_more(
    loop_thread: LoopThread, monkeypatch: Any
) -> None:
    _sink, handoff = ticking_slowly(loop_thread, monkeypatch)
    for i in range(1, 4):
        handoff.submit({"seq": i})  # the next tick is 30 s away
    left = loop_thread.call(handoff.close)
    assert [m["seq"] for m in left] == [1, 2, 3]
    assert handoff.submit({"seq": 4}) is False  # the caller sends it another way
    assert loop_thread.call(lambda: handoff._timer) is None


def test_events_buffered_for_a_loop_that_closed_are_sent_elsewhere(monkeypatch: Any) -> None:
    elsewhere: list[dict[str, Any]] = []
    monkeypatch.setattr(hubmod, "_route", elsewhere.append)
    loop = asyncio.new_event_loop()
    loop.close()
    handoff = _HandOff(loop, Sink())
    assert handoff.submit({"seq": 0}) is True
    assert elsewhere == [{"seq": 0}]
    assert handoff.submit({"seq": 1}) is False


def unpack(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The event messages in one layer message: itself, or the events of an "rf.batch"."""
    return message["events"] if message.get("type") == "rf.batch" else [message]


def test_flush_waits_for_events_still_in_the_senders_buffer(monkeypatch: Any) -> None:
    monkeypatch.setattr(hubmod, "HAND_OFF_INTERVAL", 30)
    sent: list[int] = []

    class Layer:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            await asyncio.sleep(0.01)
            sent.extend(m["seq"] for m in unpack(message))

    monkeypatch.setattr(hubmod, "get_channel_layer", Layer)
    sender = _BackgroundSender()
    sender.submit({"seq": 0})
    assert wait_until(lambda: sent == [0])
    for i in range(1, 5):
        sender.submit({"seq": i})  # buffered: the next tick is 30 s away
    sender.flush(5)  # without draining the buffer it would return at once
    assert sent == [0, 1, 2, 3, 4]


# --- the hub -------------------------------------------------------------------------------


class Collecting:
    def __init__(self) -> None:
        self.user_id: int | None = None
        self.visible_projects: frozenset[str] | None = None  # every project, like staff
        self.ids: list[int] = []

    def offer(self, event: LoggedEvent, message: dict[str, Any] | None = None) -> None:
        self.ids.append(event.id)

    def stats_snapshot(self) -> tuple[bool, frozenset[str]]:
        return True, frozenset()

    def credential_key(self) -> str | None:
        return None

    def apply_standing(self, standing: Any, valid_tokens: set[str]) -> None:
        pass

    def go_away(self) -> None:
        pass


def chain(first: int, count: int) -> list[LoggedEvent]:
    return [
        LoggedEvent(
            id=i,
            prev_id=i - 1,
            type="stage.progress",
            project_id="prj_" + "p" * 20,
            run_id="run_" + "r" * 20,
            timestamp="2026-01-01T00:00:00.000Z",
            payload={},
            frame="{}",
        )
        for i in range(first, first + count)
    ]


async def hand_off_from_a_thread(events: list[LoggedEvent]) -> None:
    """Hand the events off from another thread, as on_commit runs in a request thread, and
    give the loop a moment to take what it takes at once."""

    def commit_all() -> None:
        for event in events:
            hand_off(event)

    await asyncio.to_thread(commit_all)
    await asyncio.sleep(0.05)


async def started_hub() -> tuple[Hub, Collecting]:
    hub = Hub.for_loop()
    await hub.ready()
    sub = Collecting()
    hub.add(sub)
    return hub, sub


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_hand_offs_from_many_threads_reach_the_layer_in_commit_order() -> None:
    hub, sub = await started_hub()
    sent: list[int] = []
    real_send = hub.layer.group_send

    async def recording_send(group: str, message: dict[str, Any]) -> None:
        sent.extend(m["id"] for m in unpack(message))
        await real_send(group, message)

    hub.layer.group_send = recording_send
    arrived: list[int] = []
    real_accept = hub.accept

    def recording_accept(event: LoggedEvent) -> None:
        arrived.append(event.id)
        real_accept(event)

    hub.accept = recording_accept  # type: ignore[method-assign]
    try:
        events = iter(chain((hub.last_id or 0) + 1, 6 * 1500))
        commit_order = threading.Lock()

        def committer() -> None:
            for _ in range(1500):
                with commit_order:  # the log lock: on_commit runs in id order
                    hand_off(next(events))

        def run_committers() -> None:
            threads = [threading.Thread(target=committer) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        await asyncio.to_thread(run_committers)
        deadline = time.monotonic() + 10
        while len(sub.ids) < 9000 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        hub.layer.group_send = real_send
        del hub.accept
    first = sub.ids[0]
    assert sent == list(range(first, first + 9000))  # the layer saw commit order
    assert arrived == sent  # and delivered it in that order: no reordering to repair
    assert sub.ids == sent
    assert hub.gap_repaired == 0


@pytest.mark.django_db(transaction=True)
async def test_events_still_buffered_when_the_hub_stops_are_published(monkeypatch: Any) -> None:
    monkeypatch.setattr(hubmod, "HAND_OFF_INTERVAL", 30)
    hub, _sub = await started_hub()
    listener = await hub.layer.new_channel("listener.")
    await hub.layer.group_add(GROUP, listener)
    try:
        events = chain((hub.last_id or 0) + 1, 5)
        # The first goes at once, the other four wait for a tick that is 30 s away.
        await hand_off_from_a_thread(events)
        await hub.stop()
        received: list[int] = []
        while len(received) < 5:
            received.extend(m["id"] for m in unpack(await hub.layer.receive(listener)))
        assert received == [e.id for e in events]
        # Stopped: a late hand-off is not swallowed by the dead hub's buffer.
        assert hubmod._hand_off_for(hub).submit(events[0].to_message()) is False
    finally:
        await hub.layer.group_discard(GROUP, listener)
        await hub.stop()


@pytest.mark.django_db(transaction=True)
async def test_a_send_interrupted_by_stop_goes_again_and_the_rest_follow() -> None:
    hub, _sub = await started_hub()
    sent: list[int] = []
    attempts: list[int] = []

    one_at_a_time = asyncio.Lock()  # as channels_redis publishes: one at a time per shard

    async def hanging_once(group: str, message: dict[str, Any]) -> None:
        async with one_at_a_time:
            ids = [m["id"] for m in unpack(message)]
            attempts.append(ids[0])
            if len(attempts) == 1:
                await asyncio.sleep(30)  # a stuck layer: cancelled by stop()
            sent.extend(ids)

    hub.layer.group_send = hanging_once
    try:
        events = chain((hub.last_id or 0) + 1, 4)
        await hand_off_from_a_thread(events)
        assert sent == []
        await hub.stop()
    finally:
        del hub.layer.group_send  # the instance attribute: back to the layer's method
    assert sent == [e.id for e in events]
    assert attempts[0] == events[0].id


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_a_hand_off_racing_with_stop_goes_to_the_background_sender(
    monkeypatch: Any, settings: Any
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # a shared layer exists

    class Sender:
        def __init__(self) -> None:
            self.got: list[int] = []

        def submit(self, message: dict[str, Any]) -> None:
            self.got.append(message["id"])

    sender = Sender()
    monkeypatch.setattr(hubmod, "_background_sender", lambda: sender)
    hub, _sub = await started_hub()
    monkeypatch.setattr(Hub, "running", classmethod(lambda cls: [hub]))  # the race: still listed
    await hub.stop()
    (event,) = chain((hub.last_id or 0) + 1, 1)
    await asyncio.to_thread(hand_off, event)
    assert sender.got == [event.id]


# --- PostgreSQL: jsonb takes the orjson text -----------------------------------------------


@pytest.mark.postgres
@pytest.mark.e2e
def test_postgres_stores_the_orjson_payload_as_the_json_field_would() -> None:
    from devtools.servers import PostgresServer

    try:
        server = PostgresServer()
    except RuntimeError as exc:  # binaries not installed
        pytest.skip(str(exc))
    import tempfile

    with server, tempfile.TemporaryDirectory(prefix="rf-pgtest-") as var:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "researchflow.settings",
            "DATABASE_URL": server.url,
            "DEBUG": "1",
            "RESEARCHFLOW_VAR_DIR": var,
            "REDIS_URL": "",
        }

        def run(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout

        run("manage.py", "migrate", "--noinput")
        script = (
            "import django, json; django.setup(); "
            "from tests.test_publish_path import _postgres_scenario; "
            "print(json.dumps(_postgres_scenario()))"
        )
        result = json.loads(run("-c", script).strip().splitlines()[-1])
    assert result == {"vendor": "postgresql", "equal": True, "filtered": True, "typeof": "object"}


def _postgres_scenario() -> dict[str, Any]:
    """In a subprocess whose Django points at the cluster (DATABASE_URL)."""
    from django.contrib.auth.models import User

    from events.models import Event as LogEvent
    from runs import services as run_services

    alice = User.objects.create_user("alice-pg", "a@example.org", "x")
    project = run_services.create_project("PG project", owner=alice)
    run = run_services.create_run(project, "Cohort", ["Größe"], alice)
    stage = run.stages.get()
    data = progress_payload(run, stage, 'Größe prüfen – 東京 ✓ "quoted" \\ back')
    from events.bus import event_bus as bus

    with transaction.atomic():
        record = bus.publish("stage.progress", data)
    logged = LogEvent.objects.get(id=record.pk)
    via_orm = LogEvent.objects.create(
        type="stage.progress",
        project_id=run.project_id,
        run_id=run.pk,
        payload=record.payload,
        created_at=logged.created_at,
    )
    via_orm.refresh_from_db()
    filtered = list(
        LogEvent.objects.filter(payload__statusMessage=data["statusMessage"])
        .order_by("id")
        .values_list("id", flat=True)
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT jsonb_typeof(payload) FROM events_event WHERE id = %s", [record.pk])
        typeof = cursor.fetchone()[0]
    return {
        "vendor": connection.vendor,
        "equal": logged.payload == record.payload == via_orm.payload,
        "filtered": filtered == [record.pk, via_orm.id],
        "typeof": typeof,
    }


# --- several events per layer message ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_events_waiting_together_travel_as_one_layer_message_in_order() -> None:
    hub, sub = await started_hub()
    layer_messages: list[dict[str, Any]] = []
    real_send = hub.layer.group_send

    async def recording_send(group: str, message: dict[str, Any]) -> None:
        layer_messages.append(message)
        await real_send(group, message)

    hub.layer.group_send = recording_send
    try:
        events = chain((hub.last_id or 0) + 1, hubmod.BATCH_MAX + 30)
        # All waiting in the outbox at once, as after one hand-off tick under load.
        hub.enqueue_batch([e.to_message() for e in events])
        deadline = time.monotonic() + 5
        while len(sub.ids) < len(events) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        del hub.layer.group_send
    assert [m["type"] for m in layer_messages] == ["rf.batch", "rf.batch"]
    assert [len(m["events"]) for m in layer_messages] == [hubmod.BATCH_MAX, 30]
    assert sub.ids == [e.id for e in events]
    assert hub.gap_repaired == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_a_bad_entry_in_a_batch_costs_only_itself(caplog: Any) -> None:
    hub, sub = await started_hub()
    first, second = chain((hub.last_id or 0) + 1, 2)
    message = {
        "type": "rf.batch",
        "events": [first.to_message(), {"type": "rf.event", "garbage": True}, second.to_message()],
    }
    await hub.layer.group_send(GROUP, message)
    deadline = time.monotonic() + 5
    while len(sub.ids) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert sub.ids == [first.id, second.id]
    assert "bad layer message dropped" in caplog.text


def test_a_lone_event_travels_as_itself() -> None:
    (event,) = chain(1, 1)
    assert hubmod.layer_message([event.to_message()]) == event.to_message()
