"""Who may see what: the domain's look-ups for the realtime gateway, small and synchronous.

The gateway calls these from worker threads (`database_sync_to_async`); they read memberships
and runs and nothing else, so the gateway depends on the domain's models only through here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .models import Membership, Project, Run


def member_projects(user: Any) -> frozenset[str] | None:
    """The projects whose events `user` may see: its memberships; None means every project
    (staff)."""
    if user.is_staff:
        return None
    return frozenset(Membership.objects.filter(user=user).values_list("project_id", flat=True))


def memberships(user_ids: Iterable[int]) -> dict[int, frozenset[str]]:
    """Each user's projects, in one query (users without a membership map to an empty set)."""
    found: dict[int, set[str]] = {uid: set() for uid in user_ids}
    for uid, project_id in Membership.objects.filter(user_id__in=list(found)).values_list(
        "user_id", "project_id"
    ):
        found[uid].add(project_id)
    return {uid: frozenset(projects) for uid, projects in found.items()}


def run_project(run_id: str) -> str | None:
    """The project a run belongs to, or None if there is no such run."""
    return Run.objects.filter(pk=run_id).values_list("project_id", flat=True).first()


def project_exists(project_id: str) -> bool:
    return Project.objects.filter(pk=project_id).exists()
