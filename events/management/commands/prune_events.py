"""Delete logged events older than the retention (EVENT_RETENTION_DAYS, default 7).

Records how far it pruned, so a client resuming from before that point is told to resync
(`resync.required`) instead of silently missing events.

"Older" is read in log order: it prunes through the newest position whose event was created
before the cutoff, found by a binary search over positions (an index the log has anyway),
not by an index on `created_at`, which every event would pay for at write time to serve
this one daily command. Creation times follow positions up to the few milliseconds between
an event's creation and its commit, so the boundary is exact to that.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from events.models import Event, EventLogState


class Command(BaseCommand):
    help = "Delete events older than the retention period."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=settings.EVENT_RETENTION_DAYS)
        parser.add_argument("--batch", type=int, default=5000)

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days < 1:
            self.stderr.write("error: --days must be >= 1")
            raise SystemExit(2)
        cutoff = timezone.now() - timedelta(days=days)
        through = _older_through(cutoff)
        if through is None:
            self.stdout.write("nothing to prune")
            return
        with transaction.atomic():
            # Positions become visible in position order, so "everything up to `through`" is
            # exact; unpositioned rows (NULL) are never matched and get positions above it.
            state, _ = EventLogState.objects.select_for_update().get_or_create(pk=1)
            state.pruned_through = max(state.pruned_through, through)
            state.save()
        deleted = 0
        while True:
            ids = list(
                Event.objects.filter(position__lte=through).values_list("id", flat=True)[
                    : options["batch"]
                ]
            )
            if not ids:
                break
            deleted += Event.objects.filter(id__in=ids).delete()[0]
        self.stdout.write(f"pruned {deleted} event(s) through #{through} (older than {days} days)")


def _at_or_after(position: int) -> tuple[int, datetime] | None:
    found = (
        Event.objects.filter(position__gte=position)
        .order_by("position")
        .values_list("position", "created_at")
        .first()
    )
    return None if found is None or found[0] is None else (found[0], found[1])


def _older_through(cutoff: datetime) -> int | None:
    """The newest position created before `cutoff` (None: the oldest event is newer), by
    binary search: about log2(events) index lookups."""
    first = _at_or_after(0)
    if first is None or first[1] >= cutoff:
        return None
    low = first[0]  # created before the cutoff
    high = (Event.objects.order_by("-position").values_list("position", flat=True).first() or 0) + 1
    while high - low > 1:
        middle = (low + high) // 2
        found = _at_or_after(middle)
        if found is None or found[0] >= high or found[1] >= cutoff:
            high = middle
        else:
            low = found[0]
    return low
