"""The hub's gap repair, with the log read stubbed: what arrives while the log is being read
is not delivered past a hole (the rest of the ordering rules: tests/test_ordering.py)."""

from __future__ import annotations

from typing import Any

import pytest

from events.gateway import hub as hubmod
from events.record import LoggedEvent
from tests.transport_helpers import chain, started_hub, wait_for


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hubs_stopped")
async def test_an_event_behind_another_gap_during_a_repair_waits_for_the_next_repair(
    monkeypatch: Any, settings: Any
) -> None:
    settings.WS_GAP_WAIT = 0.01
    hub, sub = await started_hub()
    log = chain((hub.last_id or 0) + 1, 6)
    reads: list[tuple[int, int]] = []

    async def log_between(after: int, upto: int, shard: int | None = None) -> list[LoggedEvent]:
        reads.append((after, upto))
        if len(reads) == 1:
            hub.accept(log[5])  # arrives during the read, while 3-5 are still missing
        return [e for e in log if after < e.id <= upto]

    monkeypatch.setattr(hubmod, "_log_between", log_between)
    hub.accept(log[1])  # 1 was lost: 2 waits, then the hub reads the log
    assert await wait_for(lambda: len(sub.ids) == 6)
    assert sub.ids == [e.id for e in log]
    assert reads == [(log[0].id - 1, log[1].id), (log[1].id, log[5].id)]
    assert hub.gap_repaired == 6  # 1-2, then 3-6 (6 is in the second range read)
    for late in log[2:5]:  # the layer's copies of 3-5, late: duplicates now
        hub.accept(late)
    assert sub.ids == [e.id for e in log]
