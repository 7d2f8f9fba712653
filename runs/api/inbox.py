"""`GET /api/approvals/inbox/`: the approvals waiting for the user, across all their projects.

"Waiting for me" means *may decide*, the same rule the decide endpoints enforce
(`permissions.DECIDE_ROLES`): every pending approval of a run that is still in progress
(created or running) in a project where the user is an owner or a member; staff: every project.
Assignees are a hint to people, not a permission (any owner or member may decide), so an
approval assigned to someone else is in the inbox too, with `assignedToMe` false;
`?assigned=me` narrows the list to the approvals that name the user. A viewer's inbox is empty.
A pending approval of a finished run waits on nothing and is left out (it can still be decided
through `POST /api/approvals/<id>/grant/`).

Most urgent first: priority (CRITICAL → LOW), then the longest waiting, then id, so pages are
stable. Paginated like the other lists (`limit` ≤ 1000, `offset`); `count` is the number
waiting, which is what the dashboard's badge shows on load before events move it.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Case, Exists, IntegerField, OuterRef, QuerySet, Value, When
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from events.schemas import Priority
from runs.models import Approval, ApprovalStatus, RunStatus

from . import serializers as s
from .exceptions import field_error
from .permissions import decidable_project_ids, is_object_id
from .views import ERROR_RESPONSES, ApiView, Pagination

# Lower sorts first: the most urgent approval heads the inbox.
PRIORITY_ORDER = (Priority.CRITICAL, Priority.HIGH, Priority.MEDIUM, Priority.LOW)
WAITING_RUN_STATUSES = (RunStatus.CREATED, RunStatus.RUNNING)
ASSIGNED_CHOICES = ("me",)


def inbox_for(user: Any) -> QuerySet[Approval]:
    """The pending approvals `user` may decide, of runs still in progress, most urgent first,
    each annotated with `assigned_to_me`."""
    approvals = Approval.objects.filter(
        status=ApprovalStatus.PENDING, run__status__in=WAITING_RUN_STATUSES
    )
    projects = decidable_project_ids(user)
    if projects is not None:
        approvals = approvals.filter(run__project_id__in=projects)
    assigned = Approval.assigned_to.through.objects.filter(
        approval_id=OuterRef("pk"), user_id=user.pk
    )
    urgency = Case(
        *(When(priority=p.value, then=Value(i)) for i, p in enumerate(PRIORITY_ORDER)),
        default=Value(len(PRIORITY_ORDER)),
        output_field=IntegerField(),
    )
    return (
        approvals.select_related("run", "run__project", "decided_by")
        .prefetch_related("assigned_to")
        .annotate(assigned_to_me=Exists(assigned), urgency=urgency)
        .order_by("urgency", "requested_at", "id")
    )


class ApprovalInboxView(ApiView):
    @extend_schema(
        parameters=[
            OpenApiParameter("project", str, description="Only this project's approvals"),
            OpenApiParameter(
                "assigned",
                str,
                enum=list(ASSIGNED_CHOICES),
                description="`me`: only approvals assigned to you",
            ),
            OpenApiParameter("limit", int, description="Page size, at most 1000 (default 100)"),
            OpenApiParameter("offset", int, description="Items to skip"),
        ],
        responses={
            200: inline_serializer(
                "InboxPage",
                {
                    "count": serializers.IntegerField(help_text="How many approvals wait"),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": s.InboxApprovalSerializer(many=True),
                },
            ),
            **ERROR_RESPONSES,
        },
        description="Pending approvals you may decide (owner or member of the run's project; "
        "staff: all), of runs still in progress, across all your projects; most urgent "
        "first, then the longest waiting. Paginated (`limit` ≤ 1000, `offset`). Decide one "
        "with `POST /api/approvals/{id}/grant/` or `/deny/`.",
    )
    def get(self, request: Request) -> Response:
        approvals = inbox_for(request.user)
        project = request.query_params.get("project")
        if project is not None:
            if not is_object_id(project, "prj"):
                raise field_error("project", "not a project id")
            approvals = approvals.filter(run__project_id=project)
        assigned = request.query_params.get("assigned")
        if assigned is not None:
            if assigned not in ASSIGNED_CHOICES:
                raise field_error(
                    "assigned", f"unknown value (expected one of {', '.join(ASSIGNED_CHOICES)})"
                )
            approvals = approvals.filter(assigned_to=request.user.pk)
        paginator = Pagination()
        page = paginator.paginate_queryset(approvals, request, view=self)
        return paginator.get_paginated_response(s.InboxApprovalSerializer(page, many=True).data)
