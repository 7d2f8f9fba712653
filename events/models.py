"""The event log: a transactional outbox and the source of truth for resume.

An `Event` row is written in the same transaction as the change that caused it. Its `position`
is the log cursor: the envelope's `id`, `?after=`, `lastEventId`, the hub's chain. (`id` is
only the row's storage identity; Django allows no non-key field named `id`.)

The ordering promise: positions are gapless and become visible in position order, so a reader
that has seen position N never later finds a row below N, and a client asking for `> N` can
never miss an event that committed late. How each backend keeps it:

- SQLite: writers are serialised (IMMEDIATE transactions), so the INSERT itself takes
  `MAX(position) + 1`.
- PostgreSQL: writers insert with `position` NULL and hold no global lock; right after
  commit, a short transaction of its own stamps every committed unpositioned row under an
  advisory lock (`events/sequencer.py`; docs/ordering.md explains the choice). Unpositioned
  rows are not part of the log yet: every reader filters on `position`.
"""

from __future__ import annotations

from django.db import models


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    # NULL until the sequencer stamps it (PostgreSQL only, a round trip after commit).
    position = models.BigIntegerField(null=True, blank=True, unique=True)
    type = models.CharField(max_length=40)
    # Plain ids rather than foreign keys: the log outlives the rows it talks about (a deleted
    # run keeps its history until retention prunes it) and `events` stays independent of `runs`.
    project_id = models.CharField(max_length=32)
    # events/shards.py: shard_of(project_id) when written. A hub hearing one shard follows it as
    # its own chain and repairs its gaps by reading (shard, position). The database default
    # keeps writers of the previous release (which do not name the column) working while a
    # deploy rolls; their rows are in shard 0 (docs/operations.md, upgrading).
    shard = models.PositiveSmallIntegerField(default=0, db_default=0)
    run_id = models.CharField(max_length=32, blank=True, default="")
    payload = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["position"]
        # Every index here is paid for by every event twice on PostgreSQL (its INSERT, and
        # the stamping's UPDATE, which cannot be HOT as `position` is indexed): each serves a
        # reader. position: the log and `?after=`; (project, position) and (run, position):
        # resume and the REST filters; (shard, position): a hub's gap repair; unpositioned:
        # the stamping's scan. Retention finds its boundary by position (prune_events).
        indexes = [
            models.Index(fields=["project_id", "position"], name="event_project_position"),
            models.Index(fields=["run_id", "position"], name="event_run_position"),
            models.Index(fields=["shard", "position"], name="event_shard_position"),
            # What the sequencer scans: only rows still waiting for a position (few, briefly).
            models.Index(
                fields=["id"],
                condition=models.Q(position__isnull=True),
                name="event_unpositioned",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.position} {self.type}"


class EventLogState(models.Model):
    """One row: how far retention has pruned the log, so resume knows what it cannot replay."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    pruned_through = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"pruned through #{self.pruned_through}"

    @classmethod
    def pruned_through_id(cls) -> int:
        """The newest position retention deleted (0: none)."""
        return cls.objects.filter(pk=1).values_list("pruned_through", flat=True).first() or 0
