"""Delete logged events older than the retention (EVENT_RETENTION_DAYS, default 7).

Records how far it pruned, so a client resuming from before that point is told to resync
(`resync.required`) instead of silently missing events.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.db.models import Max
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
        through = Event.objects.filter(created_at__lt=cutoff).aggregate(m=Max("position"))["m"]
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
