"""`ordering.Chain`: events that arrive lost, repeated or out of order, plus repairs from the
log, come out as the log's sequence, in order, each once. Pure: no loop, no layer, no log."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from events.gateway.ordering import Chain


@dataclass(frozen=True)
class Ev:
    id: int
    prev_id: int | None
    shard_prev: int | None = None
    shard: int = 0


def log_of(ids: list[int]) -> list[Ev]:
    """A log: each position linked to the one before it (the first to `prev`)."""
    return [Ev(i, prev) for prev, i in zip([0, *ids], ids, strict=False)]


def between(log: list[Ev], after: int, upto: int) -> list[Ev]:
    """What the log returns for (after, upto], as `events.log.between` does."""
    return [e for e in log if after < e.id <= upto]


def started(last_id: int = 0) -> Chain[Ev]:
    chain: Chain[Ev] = Chain()
    chain.start(last_id)
    return chain


def test_it_delivers_events_that_arrive_in_order_at_once() -> None:
    chain, out = started(), []
    for event in log_of([1, 2, 3]):
        assert chain.accept(event, out) is False
    assert [e.id for e in out] == [1, 2, 3]
    assert chain.last_id == 3


def test_it_delivers_nothing_before_it_has_a_baseline() -> None:
    chain: Chain[Ev] = Chain()
    out: list[Ev] = []
    assert chain.accept(Ev(1, 0), out) is False
    assert out == [] and chain.gap() is None


def test_it_drops_what_is_at_or_below_the_baseline() -> None:
    chain, out = started(5), []
    chain.accept(Ev(5, 4), out)
    chain.accept(Ev(3, 2), out)
    assert out == [] and chain.last_id == 5


def test_it_drops_a_duplicate_of_something_delivered() -> None:
    chain, out = started(), []
    first, second = log_of([1, 2])
    for event in (first, first, second, first, second):
        chain.accept(event, out)
    assert [e.id for e in out] == [1, 2]


def test_an_event_ahead_of_its_predecessor_waits_and_opens_a_gap() -> None:
    chain, out = started(), []
    _one, two, three = log_of([1, 2, 3])
    assert chain.accept(three, out) is True
    assert out == [] and chain.waiting == 1
    assert chain.gap() == (0, 3)
    assert chain.accept(two, out) is True
    assert chain.gap() == (0, 3)


def test_the_missing_link_releases_every_waiting_event_in_order() -> None:
    chain, out = started(), []
    one, two, three, four = log_of([1, 2, 3, 4])
    for event in (four, two, three):
        chain.accept(event, out)
    assert out == []
    assert chain.accept(one, out) is False
    assert [e.id for e in out] == [1, 2, 3, 4]
    assert chain.waiting == 0 and chain.gap() is None


def test_a_repair_delivers_the_missing_events_then_those_that_waited() -> None:
    log = log_of([1, 2, 3, 4, 5])
    chain, out = started(), []
    chain.accept(log[3], out)  # 4 arrives; 1-3 were lost
    chain.accept(log[4], out)
    gap = chain.gap()
    assert gap == (0, 5)
    assert chain.merge_repair(between(log, *gap), out) == 5
    assert [e.id for e in out] == [1, 2, 3, 4, 5]
    assert chain.waiting == 0


def test_a_repair_counts_only_what_was_new_when_the_chain_moved_on_during_the_read() -> None:
    log = log_of([1, 2, 3, 4])
    chain, out = started(), []
    chain.accept(log[2], out)  # 3 waits
    after, upto = chain.gap() or (0, 0)
    read = between(log, after, upto)  # the read starts...
    chain.accept(log[0], out)  # ...and 1 arrives meanwhile
    assert chain.merge_repair(read, out) == 2  # 2 and 3 came from the log; 1 was already here
    assert [e.id for e in out] == [1, 2, 3]


def test_events_behind_another_gap_keep_waiting_after_a_repair() -> None:
    log = log_of([1, 2, 3, 4, 5, 6])
    chain, out = started(), []
    chain.accept(log[1], out)  # 2 waits for 1
    read = between(log, *(chain.gap() or (0, 0)))  # (0, 2]
    chain.accept(log[5], out)  # 6 arrives during the read: 3-5 are still missing
    chain.merge_repair(read, out)
    assert [e.id for e in out] == [1, 2]
    assert chain.gap() == (2, 6)  # not delivered past the hole: repaired next
    chain.merge_repair(between(log, 2, 6), out)
    assert [e.id for e in out] == [1, 2, 3, 4, 5, 6]


def test_following_the_head_drops_waiting_events_it_covers() -> None:
    chain, out = started(), []
    chain.accept(Ev(3, 2), out)
    chain.follow(10)
    assert chain.last_id == 10 and chain.waiting == 0 and out == []
    chain.accept(Ev(11, 10), out)
    assert [e.id for e in out] == [11]


def test_the_log_decides_when_positions_were_pruned_from_under_a_gap() -> None:
    # The log no longer holds 1-3: what it returns is all there is, delivered in order.
    chain, out = started(), []
    chain.accept(Ev(5, 4), out)
    chain.merge_repair([Ev(4, 3), Ev(5, 4)], out)
    assert [e.id for e in out] == [4, 5] and chain.gap() is None


def _deliver_with_chaos(rng: random.Random, ids: list[int]) -> list[int]:
    """Arrivals: every event lost, repeated, delayed and reordered at random; a repair from
    the log whenever the caller would run one (at random moments while a gap is open, and a
    final tail check against the head). Returns the ids delivered, in delivery order."""
    log = log_of(ids)
    arrivals = [e for e in log if rng.random() > 0.3]  # lost
    arrivals += [e for e in log if rng.random() < 0.2]  # repeated
    # Reordered within a window, as several publishers and the layer's shards do.
    keyed = sorted(arrivals, key=lambda e: e.id + rng.uniform(-8, 8))
    chain, out = started(), []
    pending_read: tuple[list[Ev], int] | None = None
    for event in keyed:
        chain.accept(event, out)
        if pending_read is None and chain.gap() and rng.random() < 0.3:
            after, upto = chain.gap() or (0, 0)
            pending_read = (between(log, after, upto), rng.randint(0, 3))  # arrivals during it
        elif pending_read is not None:
            read, wait = pending_read
            if wait == 0:
                chain.merge_repair(read, out)
                pending_read = None
            else:
                pending_read = (read, wait - 1)
    if pending_read is not None:
        chain.merge_repair(pending_read[0], out)
    while chain.gap() is not None:  # the delayed repairs the hub keeps scheduling
        chain.merge_repair(between(log, *(chain.gap() or (0, 0))), out)
    if ids and (chain.last_id or 0) < ids[-1]:  # the periodic log check: a lost tail
        chain.merge_repair(between(log, chain.last_id or 0, ids[-1]), out)
    return [e.id for e in out]


@pytest.mark.parametrize("seed", range(300))
def test_any_loss_duplication_and_reordering_plus_repairs_yields_the_log_once_in_order(
    seed: int,
) -> None:
    rng = random.Random(seed)
    # Gapless positions (sequencer.py), or ids with holes (SQLite ids skipped by a rollback).
    n = rng.randint(0, 60)
    ids = list(range(1, n + 1)) if seed % 2 else sorted(rng.sample(range(1, 4 * n + 2), n))
    assert _deliver_with_chaos(rng, ids) == ids


# --- a shard's chain (a hub that hears one shard) and widening to the log's ---------------------


def sharded_log(rng: random.Random, n: int, shards: int) -> list[Ev]:
    """Positions 1..n in random shards, each linked to the one before it in the log and in its
    shard, as the sequencer hands them off."""
    last: dict[int, int] = {}
    log = []
    for position in range(1, n + 1):
        shard = rng.randrange(shards)
        log.append(Ev(position, position - 1, last.get(shard), shard))
        last[shard] = position
    return log


@pytest.mark.parametrize("seed", range(150))
def test_a_shard_chain_inside_an_interleaving_of_shards_yields_that_shard_once_in_order(
    seed: int,
) -> None:
    rng = random.Random(seed)
    log = sharded_log(rng, rng.randint(0, 80), 3)
    mine = [e for e in log if e.shard == 0]  # what the shard's group carries, and its log rows
    arrivals = [e for e in mine if rng.random() > 0.3]
    arrivals += [e for e in mine if rng.random() < 0.2]
    chain: Chain[Ev] = Chain(0, by_shard=True)
    out: list[Ev] = []
    for event in sorted(arrivals, key=lambda e: e.id + rng.uniform(-8, 8)):
        chain.accept(event, out)
        if chain.gap() and rng.random() < 0.3:
            after, upto = chain.gap() or (0, 0)
            chain.merge_repair(between(mine, after, upto), out)  # shard = 0 AND position in …
    while chain.gap() is not None:
        chain.merge_repair(between(mine, *(chain.gap() or (0, 0))), out)
    if mine and (chain.last_id or 0) < mine[-1].id:  # the shard's head check: a lost tail
        chain.merge_repair(between(mine, chain.last_id or 0, mine[-1].id), out)
    assert [e.id for e in out] == [e.id for e in mine]


def test_a_shard_chain_waits_for_its_shards_predecessor_not_the_logs() -> None:
    chain: Chain[Ev] = Chain(1, by_shard=True)
    out: list[Ev] = []
    assert chain.accept(Ev(5, 4, 1), out) is False  # 2-4 are other shards': in line
    assert chain.accept(Ev(9, 8, 7), out) is True  # 7 (this shard) is missing
    assert [e.id for e in out] == [5] and chain.gap() == (5, 9)


def test_widening_delivers_the_old_shards_events_up_to_the_head_then_everything_after() -> None:
    # Shards A (odd) and B (even). The hub heard A up to 1, then widens: joins every group,
    # reads head 5; its log chain starts at 1. Meanwhile B's 4 and 6 and A's 3 arrive live.
    wide: Chain[Ev] = Chain(1)
    out: list[Ev] = []
    for event in (Ev(4, 3), Ev(6, 5), Ev(3, 2)):
        wide.accept(event, out)
    assert out == []  # all behind the gap (1, 5]
    wide.rebase([Ev(3, 2), Ev(5, 4)], 5, out)  # the log's A events in (1, 5]
    wide.accept(Ev(7, 6), out)
    # A's 3 and 5 (its sockets must not miss them), not B's 4 (before the baseline), then
    # everything after the head in log order.
    assert [e.id for e in out] == [3, 5, 6, 7]
