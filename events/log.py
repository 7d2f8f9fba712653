"""Reading the event log back: what resume, the hub's gap repair and the REST follower see.

Synchronous ORM code; async callers wrap it (`database_sync_to_async`). Only positioned rows
are in the log: an unpositioned row (NULL, PostgreSQL between a commit and its stamping,
`events/sequencer.py`) never matches `position > n`, so a reader never sees it before the
rows below it.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Max

from .models import Event, EventLogState
from .record import LoggedEvent

# The most events one gap repair reads at a time; a larger gap is repaired in several reads.
REPAIR_BATCH = 10_000


def head() -> int:
    """The newest position in the log (0 when it is empty)."""
    return Event.objects.aggregate(last=Max("position"))["last"] or 0


def pruned_through() -> int:
    """The position retention pruned through: a resume from below it cannot be complete."""
    return EventLogState.pruned_through_id()


def shard_head(shard: int) -> int:
    """The newest position in `shard` (0 when it has none): a hub's baseline for the shard."""
    return Event.objects.filter(shard=shard).aggregate(last=Max("position"))["last"] or 0


def between(after: int, upto: int | None, shard: int | None = None) -> list[LoggedEvent]:
    """Every event with after < position <= upto (no upper bound: None), in `shard` (None:
    every shard), in log order, at most REPAIR_BATCH of them."""
    rows = Event.objects.filter(position__gt=after).order_by("position")
    if upto is not None:
        rows = rows.filter(position__lte=upto)
    if shard is not None:
        rows = rows.filter(shard=shard)
    return [LoggedEvent.from_row(row) for row in rows[:REPAIR_BATCH]]


def visible_after(
    after: int,
    *,
    projects: frozenset[str] | None,
    run_id: str | None,
    types: Iterable[str],
    limit: int,
) -> list[LoggedEvent]:
    """Events with position > after of the given types, in the given projects (None: all) and
    run (None: any), in log order, at most `limit`: what one socket may see and asked for."""
    rows = Event.objects.filter(position__gt=after, type__in=list(types)).order_by("position")
    if projects is not None:
        rows = rows.filter(project_id__in=list(projects))
    if run_id is not None:
        rows = rows.filter(run_id=run_id)
    return [LoggedEvent.from_row(row) for row in rows[:limit]]
