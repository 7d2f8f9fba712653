"""Who may see and change what, in one place.

Visibility first, then role: an object in a project the user does not belong to answers 404
(its existence is nobody else's business); a project member without the needed role gets 403.
Staff see and change everything (`services.membership_role` treats them as owners).
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from runs import services
from runs.models import Membership, Project, Role

READ_ROLES = frozenset({Role.OWNER, Role.MEMBER, Role.VIEWER})
WRITE_ROLES = frozenset({Role.OWNER, Role.MEMBER})
OWNER_ROLES = frozenset({Role.OWNER})
# Who may grant or deny an approval: any owner or member of the run's project (not only its
# assignees), and staff. The decide endpoints and the approvals inbox both use this.
DECIDE_ROLES = WRITE_ROLES

# Our ids are `<prefix>_<20 base-36 chars>`; anything else cannot exist, and refusing it before
# the query keeps odd bytes (NUL, megabyte strings) away from the database.
OBJECT_ID_RE = re.compile(r"^[a-z]{3}_[0-9a-z]{1,40}$")
USERNAME_RE = re.compile(r"^[\w.@+-]{1,150}$")


def is_object_id(value: object, prefix: str | None = None) -> bool:
    if not isinstance(value, str) or not OBJECT_ID_RE.match(value):
        return False
    return prefix is None or value.startswith(prefix + "_")


def projects_visible_to(user: Any) -> QuerySet[Project]:
    """The projects the user belongs to (any role); every project for staff. A QuerySet for
    the REST API and the pages; a socket's own set (`Viewer.visible_projects`, a frozenset
    narrowed by its scope) is a different thing."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def visible_project_ids(user: Any) -> QuerySet[Project, str] | None:
    """Ids of the visible projects as a subquery; None means all (staff)."""
    if getattr(user, "is_staff", False) and getattr(user, "is_active", False):
        return None
    return projects_visible_to(user).values_list("id", flat=True)


def decidable_project_ids(user: Any) -> QuerySet[Any, str] | None:
    """Ids of the projects whose approvals the user may decide (role in DECIDE_ROLES), as a
    subquery; None means all (staff). An inactive or anonymous user decides nothing."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return Project.objects.none().values_list("id", flat=True)
    if user.is_staff:
        return None
    return Membership.objects.filter(user=user, role__in=DECIDE_ROLES).values_list(
        "project_id", flat=True
    )


def get_visible_project(user: Any, project_id: str) -> Project:
    if not is_object_id(project_id, "prj"):
        raise NotFound("project not found")
    project = projects_visible_to(user).filter(pk=project_id).first()
    if project is None:
        raise NotFound("project not found")
    return project


def require_role(user: Any, project: Project | str, roles: frozenset[str], action: str) -> str:
    """The user's role if it is one of `roles`; else 403 naming what was refused."""
    role = services.membership_role(project, user)
    if role is None:
        # Only reachable when the caller skipped the visibility check: still say nothing.
        raise NotFound()
    if role not in roles:
        raise PermissionDenied(f"your role in this project ({role}) cannot {action}")
    return role


class IsStaff(BasePermission):
    """Staff only; everyone else authenticated gets 403 (anonymous 401, as everywhere)."""

    message = "staff only"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.is_active)
