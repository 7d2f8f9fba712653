"""Routing by project shard in one process (the in-memory layer, the real bus and log): what a
hub hears as its sockets come and go, each shard's links, widening without a hole, and gap
repair that reads only the shard it hears. Two processes over Redis: tests/e2e/test_routing.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async

from events import bus
from events.gateway import hub as hubmod
from events.gateway import transport
from events.gateway.hub import EVERY_SHARD, Hub
from events.record import LoggedEvent
from events.schemas import iso_timestamp
from events.shards import shard_of
from tests.transport_helpers import Collecting, wait_for
from tests.ws_helpers import authed_socket

# Two projects in different shards of 16 (the default K), a third in X's shard.
X = "prj_xxxxxxxxxxxxxxxxxxxa"  # shard 2
Y = "prj_xxxxxxxxxxxxxxxxxxxb"  # shard 8

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("hubs_stopped")]


def socket_on(*projects: str) -> Collecting:
    sub = Collecting()
    sub.visible_projects = frozenset(projects)
    return sub


_runs = iter(range(10**6))


def _publish(project: str) -> LoggedEvent:
    run = f"run_{next(_runs):020d}"
    payload = {"runId": run, "projectId": project, "startedAt": iso_timestamp()}
    return bus.event_bus.publish("run.started", payload)  # autocommit: handed off at once


publish = database_sync_to_async(_publish)


async def hub_with(*subs: Collecting) -> Hub:
    hub = Hub.for_loop()
    await hub.ready()
    for sub in subs:
        hub.add(sub)
    await hub.settled()
    return hub


def test_a_project_is_in_the_same_shard_in_every_process_and_release() -> None:
    # crc32, not the per-process salted hash(): these values are part of the deployment.
    assert [shard_of(X), shard_of(Y)] == [2, 8]
    assert shard_of(X, 4) == 2 and shard_of(Y, 4) == 0
    assert transport.group(8) == "researchflow.events.8"


def test_each_event_links_to_the_one_before_it_in_its_shard() -> None:
    x1, y1, y2, x2 = (_publish(p) for p in (X, Y, Y, X))
    assert [e.shard for e in (x1, y1, y2, x2)] == [2, 8, 8, 2]
    assert (y2.shard_prev, x2.shard_prev) == (y1.id, x1.id)
    assert x2.prev_id == x2.id - 1  # the log's own chain is unchanged


async def test_a_hub_hears_only_the_shard_of_its_sockets_projects() -> None:
    hub = await hub_with()
    assert hub.hearing is None  # no socket: nothing
    on_x = socket_on(X)
    hub.add(on_x)
    await hub.settled()
    assert hub.hearing == shard_of(X)
    assert set(hub.layer.groups) == {transport.group(shard_of(X))}
    hub.remove(on_x)
    await hub.settled()
    assert hub.hearing is None and not hub.layer.groups


async def test_a_hub_hears_every_shard_for_a_staff_socket_or_sockets_in_two_shards() -> None:
    hub = await hub_with(socket_on(X), socket_on(Y))
    assert hub.hearing == EVERY_SHARD
    assert len(hub.layer.groups) == 16
    for sub in tuple(hub.subscribers):
        hub.remove(sub)
    await hub.settled()
    assert hub.hearing is None
    hub.add(Collecting())  # visible_projects None: a staff socket, every project
    await hub.settled()
    assert hub.hearing == EVERY_SHARD and len(hub.layer.groups) == 16


async def test_a_socket_gets_its_shards_events_in_order_and_the_hub_ignores_other_shards() -> None:
    on_x = socket_on(X)
    hub = await hub_with(on_x)
    events = [await publish(p) for p in (X, Y, X, Y, Y, X)]
    xs = [e.id for e in events if e.project_id == X]
    assert await wait_for(lambda: on_x.ids == xs)
    assert hub.layer_received == 3  # Y's events never reached this process's hub


async def test_a_lost_layer_message_is_repaired_from_its_shard_of_the_log(
    settings: Any, monkeypatch: Any
) -> None:
    settings.WS_GAP_WAIT = 0.01
    on_x = socket_on(X)
    hub = await hub_with(on_x)
    reads: list[int | None] = []
    real_between = hubmod._log_between

    async def spy(after: int, upto: int | None, shard: int | None = None) -> list[LoggedEvent]:
        reads.append(shard)
        return await real_between(after, upto, shard)

    monkeypatch.setattr(hubmod, "_log_between", spy)
    accept = hub.accept
    lost: list[int] = []

    def lossy(event: LoggedEvent) -> None:
        if event.project_id == X and not lost:
            lost.append(event.id)  # the layer loses X's first event
            return
        accept(event)

    hub.accept = lossy  # type: ignore[method-assign]
    events = [await publish(p) for p in (X, Y, X, Y, X)]
    xs = [e.id for e in events if e.project_id == X]
    assert await wait_for(lambda: on_x.ids == xs)
    assert lost == [xs[0]] and hub.gap_repaired >= 1
    assert reads and set(reads) == {shard_of(X)}  # it read only the shard it hears


async def test_a_socket_that_widens_gets_every_event_it_may_now_see_in_order(
    monkeypatch: Any,
) -> None:
    on_x = socket_on(X)
    hub = await hub_with(on_x)
    x1 = await publish(X)
    before = await publish(Y)  # before the socket may see Y: not its event
    assert await wait_for(lambda: on_x.ids == [x1.id])

    # While the hub widens, an X event commits after it joined every group but before it read
    # the log head, and the layer loses it: only the log has it, below the new baseline.
    in_flight: list[int] = [0]
    accept = hub.accept

    def losing_in_flight(event: LoggedEvent) -> None:
        if event.id != in_flight[0]:
            accept(event)

    hub.accept = losing_in_flight  # type: ignore[method-assign]
    real_head = hubmod._log_head

    async def head_after_a_commit() -> int:
        if not in_flight[0]:  # once: the periodic log check reads the head too
            in_flight[0] = (await publish(X)).id
        return await real_head()

    monkeypatch.setattr(hubmod, "_log_head", head_after_a_commit)
    on_x.visible_projects = frozenset({X, Y})  # a membership added while connected
    hub.reindex(on_x)
    await hub.settled()
    assert hub.hearing == EVERY_SHARD
    later = [await publish(p) for p in (Y, X, Y)]
    expected = [x1.id, in_flight[0], *(e.id for e in later)]
    assert await wait_for(lambda: on_x.ids == expected)
    assert before.id not in on_x.ids


async def _widen(hub: Hub, sub: Collecting) -> None:
    sub.visible_projects = frozenset({X, Y})  # a membership added while connected
    hub.reindex(sub)
    await hub.settled()
    assert hub.hearing == EVERY_SHARD


async def test_a_log_check_during_a_widening_reads_only_the_shard_it_heard(
    settings: Any, monkeypatch: Any
) -> None:
    # Until the widening has the old shard's events up to the new head, the log's chain has no
    # baseline: a repair meanwhile that read every shard from the old shard's position would
    # deliver other shards' events from before the socket could see them.
    settings.WS_GAP_CHECK_INTERVAL = 0.05
    settings.WS_GAP_WAIT = 0.01
    on_x = socket_on(X)
    hub = await hub_with(on_x)
    x1 = await publish(X)
    before = await publish(Y)
    accept = hub.accept
    # The layer never brings it (before the widening it is not heard): only a read of every
    # shard from X's position has it.
    hub.accept = lambda event: event.id == before.id or accept(event)  # type: ignore[method-assign]
    assert await wait_for(lambda: on_x.ids == [x1.id])
    real_head, real_between = hubmod._log_head, hubmod._log_between
    heads = [0]
    reads: list[int | None] = []

    async def counting_head() -> int:
        heads[0] += 1
        return await real_head()

    async def slow_first_read(
        after: int, upto: int | None, shard: int | None = None
    ) -> list[LoggedEvent]:
        reads.append(shard)
        if len(reads) == 1:  # the widening's: the log check runs (and repairs) meanwhile
            await wait_for(lambda: heads[0] >= 3)
        return await real_between(after, upto, shard)

    monkeypatch.setattr(hubmod, "_log_head", counting_head)
    monkeypatch.setattr(hubmod, "_log_between", slow_first_read)
    await _widen(hub, on_x)
    assert heads[0] >= 3 and set(reads) == {shard_of(X)}
    later = [await publish(p) for p in (Y, X)]
    expected = [x1.id, *(e.id for e in later)]
    assert await wait_for(lambda: on_x.ids == expected)
    assert before.id not in on_x.ids


async def test_an_older_event_the_layer_brings_late_during_a_widening_is_not_delivered(
    monkeypatch: Any,
) -> None:
    # The layer may delay or repeat a message: one of another shard, committed before the
    # widening's head, is not the socket's event even if it is next in the log after the old
    # shard's position. One committed after the head is, after the old shard's events.
    on_x = socket_on(X)
    hub = await hub_with(on_x)
    x1 = await publish(X)
    before = await publish(Y)
    assert await wait_for(lambda: on_x.ids == [x1.id])
    real_between = hubmod._log_between
    during: list[LoggedEvent] = []

    async def layer_brings_meanwhile(
        after: int, upto: int | None, shard: int | None = None
    ) -> list[LoggedEvent]:
        if not during:  # the widening's read of X's shard
            during.append(await publish(Y))
            hub.accept(before)
            hub.accept(during[0])  # (its own layer message is a duplicate)
        return await real_between(after, upto, shard)

    monkeypatch.setattr(hubmod, "_log_between", layer_brings_meanwhile)
    await _widen(hub, on_x)
    later = [await publish(p) for p in (X, Y)]
    expected = [x1.id, during[0].id, *(e.id for e in later)]
    assert await wait_for(lambda: on_x.ids == expected)
    assert before.id not in on_x.ids


async def test_a_hub_that_narrows_back_to_one_shard_keeps_delivering_it_in_order() -> None:
    on_x, staff = socket_on(X), Collecting()
    hub = await hub_with(on_x, staff)
    first = [await publish(p) for p in (X, Y)]
    hub.remove(staff)
    await hub.settled()
    assert hub.hearing == shard_of(X)
    assert set(hub.layer.groups) == {transport.group(shard_of(X))}
    rest = [await publish(p) for p in (Y, X, X)]
    xs = [e.id for e in (*first, *rest) if e.project_id == X]
    assert await wait_for(lambda: on_x.ids == xs)
    await asyncio.sleep(0)  # nothing else pending
    assert on_x.ids == xs


async def test_a_socket_is_told_it_is_authenticated_only_once_its_shard_is_heard(
    world: Any,
) -> None:
    # From auth.success on, every event it may see reaches it: a resume's log read and the
    # live stream meet without a hole only if the hub hears its shard before either.
    comm = await authed_socket(world.bob, categories=["RUN_EVENTS"], projectId=world.project.pk)
    try:
        assert Hub.running()[0].hearing == shard_of(world.project.pk)
    finally:
        await comm.disconnect()


async def test_a_hub_that_cannot_read_the_log_head_waits_for_it_instead_of_replaying_history(
    monkeypatch: Any, settings: Any
) -> None:
    # A baseline of 0 would make the first live event a gap back to the log's start, and
    # gap repair would deliver the whole history to the socket as live events.
    settings.WS_GAP_CHECK_INTERVAL = 0.05
    history = [await publish(X) for _ in range(3)]
    real_head = hubmod._shard_head
    failures = [2]

    async def failing_then_real(shard: int) -> int:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("database unavailable")
        return await real_head(shard)

    monkeypatch.setattr(hubmod, "_shard_head", failing_then_real)
    on_x = socket_on(X)
    await hub_with(on_x)
    live = await publish(X)
    assert await wait_for(lambda: live.id in on_x.ids)
    assert not set(on_x.ids) & {e.id for e in history}
    assert on_x.ids == [live.id]
    assert failures == [0]  # it read the head again until it answered
