"""The event log: a transactional outbox and the source of truth for resume.

An `Event` row is written in the same transaction as the change that caused it; its integer id
is the envelope's `id`. Ids are handed out under a lock held to commit (see `bus.lock_log`), so
the committed ids form a prefix with no later gap: a client that saw id N and asks for `> N`
can never miss an event that committed late.
"""

from __future__ import annotations

from django.db import models


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=40)
    # Plain ids rather than foreign keys: the log outlives the rows it talks about (a deleted
    # run keeps its history until retention prunes it) and `events` stays independent of `runs`.
    project_id = models.CharField(max_length=32)
    run_id = models.CharField(max_length=32, blank=True, default="")
    payload = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["project_id", "id"], name="event_project_id"),
            models.Index(fields=["run_id", "id"], name="event_run_id"),
            models.Index(fields=["created_at"], name="event_created_at"),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.type}"


class EventLogState(models.Model):
    """One row: how far retention has pruned the log, so resume knows what it cannot replay."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    pruned_through = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"pruned through #{self.pruned_through}"

    @classmethod
    def pruned_through_id(cls) -> int:
        return cls.objects.filter(pk=1).values_list("pruned_through", flat=True).first() or 0
