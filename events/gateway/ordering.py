"""Delivery in log order along each event's `prev` link: pure code, no loop, no I/O.

Every event names the log position just before its own (`prev_id`; positions are gapless,
`events/sequencer.py`) and the position before it in its shard (`shard_prev`,
events/shards.py): the log is one chain, and each shard's events are a chain of their own. A
`Chain` follows one of them (`by_shard`). The channel layer may lose, repeat or reorder events;
`Chain` turns what arrives into that chain's order, each event once:

- `accept` takes one event: a duplicate (at or below what was delivered) is dropped; the next
  link in the chain is delivered, with every waiting event it unblocks; an event ahead of its
  predecessor waits, and the caller is told a gap opened.
- `gap` says what to read from the log to close it: ids after `last_id` up to the newest one
  waiting.
- `merge_repair` takes what the log returned for such a range (authoritative: the log holds
  every position in it, in order) and delivers what is new, then every waiting event that is
  now in line; whatever still waits beyond another gap stays, and the caller repairs again.
- `rebase` moves a chain onto a wider one (a hub that heard one shard starts hearing all):
  it delivers the log's events of what it followed up to a head, then jumps to that head.

What must stay true: what a `Chain` hands out is strictly increasing by id and, for events
that keep arriving or are repaired from the log, has no holes. The hub calls it once per
event on the fan-out path, so it appends to the caller's list instead of building its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar


class Linked(Protocol):
    """An event as ordering sees it: its log position and the one just before."""

    @property
    def id(self) -> int: ...

    @property
    def prev_id(self) -> int | None: ...

    @property
    def shard_prev(self) -> int | None: ...


E = TypeVar("E", bound=Linked)


class Chain(Generic[E]):
    """One loop's position in the log and the events waiting for their predecessor."""

    __slots__ = ("_waiting", "by_shard", "last_id")

    def __init__(self, last_id: int | None = None, *, by_shard: bool = False) -> None:
        # None: no baseline yet, so nothing is delivered (no socket could want it live).
        self.last_id = last_id
        # Follow `shard_prev` (the events of one shard) instead of `prev_id` (the whole log).
        self.by_shard = by_shard
        self._waiting: dict[int, E] = {}  # keyed by the link each one waits for

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def start(self, last_id: int) -> None:
        """Set the baseline: events at or below it are older than anything to deliver."""
        self.last_id = last_id

    def accept(self, event: E, out: list[E]) -> bool:
        """Append to `out` what `event` makes deliverable, in order. True when it waits for a
        predecessor instead (a gap is open: the caller schedules a repair)."""
        last = self.last_id
        if last is None or event.id <= last:
            return False  # not started, or a duplicate of something delivered
        prev = event.shard_prev if self.by_shard else event.prev_id
        if prev is not None and prev > last:
            self._waiting[prev] = event
            return True
        out.append(event)
        last = event.id
        waiting = self._waiting
        if waiting:
            while last in waiting:
                nxt = waiting.pop(last)
                out.append(nxt)
                last = nxt.id
        self.last_id = last
        return False

    def gap(self) -> tuple[int, int] | None:
        """(after, upto): the log range that closes every open gap, or None when none is open."""
        if self.last_id is None or not self._waiting:
            return None
        return self.last_id, max(event.id for event in self._waiting.values())

    def merge_repair(self, events: Iterable[E], out: list[E]) -> int:
        """Deliver, into `out`, what the log returned for a gap (in id order) and then every
        waiting event now in line. Returns how many came from the log. The chain may have
        moved on while the log was read: only what is past `last_id` counts."""
        if self.last_id is None:
            return 0
        repaired = 0
        last = self.last_id
        for event in events:
            if event.id > last:
                out.append(event)
                last = event.id
                repaired += 1
        self.last_id = last
        self._release(out)
        return repaired

    def follow(self, head: int) -> None:
        """Jump to the log head (nothing is listening, so nothing needs what lies between)."""
        self.last_id = max(self.last_id or 0, head)
        self._release([])

    def rebase(self, events: Iterable[E], head: int, out: list[E]) -> None:
        """Deliver, into `out`, `events` (what the log holds of the chain followed so far, past
        `last_id` up to `head`, in order), then jump to `head` and deliver every waiting event
        now in line. Events up to `head` that arrived meanwhile and are not in `events` are
        dropped: they belong to what the chain did not follow before `head`."""
        self.merge_repair(events, out)
        self.last_id = max(self.last_id or 0, head)
        self._release(out)

    def _release(self, out: list[E]) -> None:
        """After `last_id` jumped: drop waiting events it covers, deliver those now in line."""
        waiting = self._waiting
        last = self.last_id
        assert last is not None
        for prev in sorted(waiting):
            if prev > last:
                break  # still behind a gap: stays for the next repair
            event = waiting.pop(prev)
            if event.id > last:
                out.append(event)
                last = event.id
        self.last_id = last
