"""The REST API for projects, runs, stages, artifacts and approvals.

Every change goes through `runs.services` (lock, check, save, event in one transaction); the
views only find the object (404 when the user cannot see it), check the role (403 for a
viewer), validate the body (400) and serialize the result. Errors: see `runs.api.exceptions`.

Decisions others rely on:
- `POST /api/runs/` with a `projectId` the user cannot see (or that does not exist) answers
  400 `{"errors": {"projectId": ["project not found"]}}`: the same words for both, so it says
  nothing about other people's projects.
- Approval assignees must be owners or members of the run's project, or staff (viewers cannot
  decide, so assigning them would leave an approval nobody on the list can act on). Any owner
  or member may grant or deny, not only assignees.
- Request bodies are JSON only and at most `MAX_BODY_BYTES` (413 above).
- Adding a member tells the project's owner whether the username exists (see
  `ProjectMembersView`); nobody else learns it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar, NoReturn

from django.contrib.auth import authenticate, get_user_model
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from researchflow.login_throttle import lockout_message
from runs import services
from runs.models import Approval, Membership, Project, Run, RunStatus, Stage

from . import serializers as s
from .exceptions import PayloadTooLarge, field_error
from .permissions import (
    DECIDE_ROLES,
    OWNER_ROLES,
    USERNAME_RE,
    WRITE_ROLES,
    get_visible_project,
    is_object_id,
    projects_visible_to,
    require_role,
    visible_project_ids,
)
from .throttles import LoginFailureThrottle

MAX_BODY_BYTES = 256 * 1024
# SQLite integers are 64-bit: an offset beyond this would overflow in the query, not just miss.
MAX_OFFSET = 2**62


# --- plumbing ------------------------------------------------------------------------------


class BoundedJSONParser(JSONParser):
    """JSON only, at most MAX_BODY_BYTES, and never a 500 on hostile input.

    DRF's JSONParser streams the body without a size limit (Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE only guards `request.body`), and a deeply nested document
    raises RecursionError, which DRF does not catch.
    """

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        try:
            if declared and int(declared) > MAX_BODY_BYTES:
                raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
        except ValueError:
            pass
        raw = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            # json's messages give a position, never content.
            reason = str(exc) if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            raise exceptions.ParseError(f"malformed JSON: {reason}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class Pagination(LimitOffsetPagination):
    max_limit = 1000

    def get_offset(self, request: Request) -> int:
        return min(super().get_offset(request), MAX_OFFSET)


class ApiView(APIView):
    parser_classes = [BoundedJSONParser]
    renderer_classes = [JSONRenderer]


def _body(request: Request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _optional_body(
    request: Request,
    serializer_class: type[serializers.Serializer],
) -> dict[str, Any]:
    """For endpoints whose body is optional: no body is `{}`."""
    data = {} if request.data is None else request.data
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


ERROR_RESPONSES: dict[int | str, Any] = {
    400: OpenApiResponse(description="Invalid input: `{detail, code, errors}`"),
    401: OpenApiResponse(description="Not authenticated"),
    403: OpenApiResponse(description="Your role in the project does not allow this"),
    404: OpenApiResponse(description="Not found, or not in a project you belong to"),
}
TRANSITION_RESPONSES: dict[int | str, Any] = {
    **ERROR_RESPONSES,
    409: OpenApiResponse(description="Illegal transition; `detail` says why"),
}


# --- look-ups ------------------------------------------------------------------------------


def _runs_for(user: Any) -> QuerySet[Run]:
    ids = visible_project_ids(user)
    runs = Run.objects.select_related("created_by")
    return runs if ids is None else runs.filter(project_id__in=ids)


def _detailed(runs: QuerySet[Run]) -> QuerySet[Run]:
    return runs.prefetch_related(
        Prefetch("stages", queryset=Stage.objects.order_by("position")),
        "artifacts",
        Prefetch(
            "approvals",
            queryset=Approval.objects.select_related("decided_by").prefetch_related("assigned_to"),
        ),
    )


def _get_run(user: Any, run_id: str) -> Run:
    if not is_object_id(run_id, "run"):
        raise exceptions.NotFound("run not found")
    run = _runs_for(user).filter(pk=run_id).first()
    if run is None:
        raise exceptions.NotFound("run not found")
    return run


def _run_detail(run_id: str) -> dict[str, Any]:
    run = _detailed(Run.objects.select_related("created_by")).get(pk=run_id)
    return dict(s.RunDetailSerializer(run).data)


def _writable_run(user: Any, run_id: str) -> Run:
    run = _get_run(user, run_id)
    require_role(user, run.project_id, WRITE_ROLES, "change runs")
    return run


def _writable_stage(user: Any, stage_id: str) -> Stage:
    stage = None
    if is_object_id(stage_id, "stg"):
        stages = Stage.objects.select_related("run")
        ids = visible_project_ids(user)
        if ids is not None:
            stages = stages.filter(run__project_id__in=ids)
        stage = stages.filter(pk=stage_id).first()
    if stage is None:
        raise exceptions.NotFound("stage not found")
    require_role(user, stage.run.project_id, WRITE_ROLES, "change runs")
    return stage


def _writable_approval(user: Any, approval_id: str) -> Approval:
    approval = None
    if is_object_id(approval_id, "gov"):
        approvals = Approval.objects.select_related("run")
        ids = visible_project_ids(user)
        if ids is not None:
            approvals = approvals.filter(run__project_id__in=ids)
        approval = approvals.filter(pk=approval_id).first()
    if approval is None:
        raise exceptions.NotFound("approval not found")
    require_role(user, approval.run.project_id, DECIDE_ROLES, "decide approvals")
    return approval


def _stage_data(stage_id: str) -> dict[str, Any]:
    return dict(s.StageSerializer(Stage.objects.get(pk=stage_id)).data)


def _approval_data(approval_id: str) -> dict[str, Any]:
    approval = (
        Approval.objects.select_related("decided_by")
        .prefetch_related("assigned_to")
        .get(pk=approval_id)
    )
    return dict(s.ApprovalSerializer(approval).data)


# --- auth ----------------------------------------------------------------------------------


class TokenView(ApiView):
    """DRF's ObtainAuthToken, JSON only: `{"username", "password"}` → `{"token"}`.

    Password guessing: failed logins per username and per client address are limited
    (`researchflow.login_throttle`, shared with the login forms); over the limit → 429
    `throttled` with `Retry-After`, the same for existing and unknown usernames.
    """

    authentication_classes: Any = []  # no session → no CSRF on this POST
    permission_classes: Any = []
    throttle_classes: Any = [LoginFailureThrottle]

    def throttled(self, request: Request, wait: float | None) -> NoReturn:
        seconds = max(1, math.ceil(wait or 1))
        exc = exceptions.Throttled(detail=lockout_message(seconds))
        setattr(exc, "wait", seconds)  # noqa: B010 (→ Retry-After; DRF's handler reads it)
        raise exc

    @extend_schema(
        request=s.TokenRequestSerializer,
        responses={
            200: s.TokenSerializer,
            400: ERROR_RESPONSES[400],
            429: OpenApiResponse(description="Too many failed logins; see `Retry-After`"),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = _body(request, s.TokenRequestSerializer)
        user = authenticate(
            request=request._request, username=data["username"], password=data["password"]
        )
        if user is None or not user.is_active:
            raise exceptions.ValidationError(
                {"body": ["Unable to log in with provided credentials."]}
            )
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


# --- projects ------------------------------------------------------------------------------


def _projects_with_role(user: Any) -> QuerySet[Project]:
    role = Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1]
    return projects_visible_to(user).annotate(my_role=Subquery(role)).order_by("name", "id")


class ProjectListView(ApiView):
    @extend_schema(responses={200: s.ProjectSerializer(many=True), **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(_projects_with_role(request.user), request, view=self)
        data = s.ProjectSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        request=s.ProjectCreateSerializer,
        responses={201: s.ProjectDetailSerializer, **ERROR_RESPONSES},
    )
    def post(self, request: Request) -> Response:
        data = _body(request, s.ProjectCreateSerializer)
        project = services.create_project(data["name"], owner=request.user)
        return Response(_project_detail(request, project.pk), status=status.HTTP_201_CREATED)


def _project_detail(request: Request, project_id: str) -> dict[str, Any]:
    project = (
        _projects_with_role(request.user)
        .prefetch_related(
            Prefetch(
                "memberships",
                queryset=Membership.objects.select_related("user").order_by("user__username"),
            )
        )
        .get(pk=project_id)
    )
    return dict(s.ProjectDetailSerializer(project, context={"request": request}).data)


class ProjectDetailView(ApiView):
    @extend_schema(responses={200: s.ProjectDetailSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, project_id: str) -> Response:
        project = get_visible_project(request.user, project_id)
        return Response(_project_detail(request, project.pk))


class ProjectMembersView(ApiView):
    """Add a member or change a role.

    An unknown username answers 400 `{"errors": {"username": ["no active user with this
    username"]}}`, so a project owner learns whether a username exists. Decided acceptable for
    this product (docs/security/logins.md): members are colleagues on one server; usernames are
    not secrets — every member already sees them in member lists, `createdBy`, `assignedTo` and
    `decidedBy`; the owner needs to know that a mistyped name added nobody, and answering both
    alike would need an invitation flow; a known username is worth nothing to a guesser, whose
    attempts the login throttle limits per username. What stays true: the owner check comes
    before the username is looked up (anyone else gets the same 403/404 whatever the name), and
    unknown and deactivated usernames get the same answer.
    """

    @extend_schema(
        request=s.MemberInputSerializer,
        responses={
            200: s.ProjectDetailSerializer,
            201: s.ProjectDetailSerializer,
            **TRANSITION_RESPONSES,
        },
        description="Add a member (201) or change a member's role (200). Owners only. "
        "Demoting the last owner answers 409.",
    )
    def post(self, request: Request, project_id: str) -> Response:
        project = get_visible_project(request.user, project_id)
        require_role(request.user, project, OWNER_ROLES, "manage members")
        data = _body(request, s.MemberInputSerializer)
        user = data["username"]
        existed = Membership.objects.filter(project=project, user=user).exists()
        services.set_member(project, user, data["role"])
        code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
        return Response(_project_detail(request, project.pk), status=code)


class ProjectMemberView(ApiView):
    @extend_schema(
        request=None,
        responses={204: None, **TRANSITION_RESPONSES},
        description="Remove a member. Owners only. Removing the last owner answers 409.",
    )
    def delete(self, request: Request, project_id: str, username: str) -> Response:
        project = get_visible_project(request.user, project_id)
        require_role(request.user, project, OWNER_ROLES, "manage members")
        user = None
        if USERNAME_RE.match(username):
            user = get_user_model().objects.filter(username=username).first()
        if user is None or not Membership.objects.filter(project=project, user=user).exists():
            raise exceptions.NotFound("no member with this username in this project")
        services.remove_member(project, user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- runs ----------------------------------------------------------------------------------


class RunListView(ApiView):
    @extend_schema(
        parameters=[
            OpenApiParameter("project", str, description="Only runs of this project id"),
            OpenApiParameter(
                "status", str, enum=[c.value for c in RunStatus], description="Only this status"
            ),
        ],
        responses={200: s.RunSerializer(many=True), **ERROR_RESPONSES},
        description="Runs in your projects, newest first, paginated (`limit` ≤ 1000, `offset`).",
    )
    def get(self, request: Request) -> Response:
        runs = _runs_for(request.user).order_by("-created_at", "-id")
        project = request.query_params.get("project")
        if project is not None:
            if not is_object_id(project, "prj"):
                raise field_error("project", "not a project id")
            runs = runs.filter(project_id=project)
        run_status = request.query_params.get("status")
        if run_status is not None:
            if run_status not in RunStatus.values:
                raise field_error(
                    "status", f"unknown value (expected one of {', '.join(RunStatus.values)})"
                )
            runs = runs.filter(status=run_status)
        paginator = Pagination()
        page = paginator.paginate_queryset(runs, request, view=self)
        return paginator.get_paginated_response(s.RunSerializer(page, many=True).data)

    @extend_schema(
        request=s.RunCreateSerializer,
        responses={201: s.RunDetailSerializer, **ERROR_RESPONSES},
        description="Create a run with its stages. Owners and members of the project. "
        "A projectId you cannot see answers 400 `projectId: project not found`.",
    )
    def post(self, request: Request) -> Response:
        data = _body(request, s.RunCreateSerializer)
        project = projects_visible_to(request.user).filter(pk=data["projectId"]).first()
        if project is None:
            raise field_error("projectId", "project not found")
        require_role(request.user, project, WRITE_ROLES, "create runs")
        run = services.create_run(
            project,
            data["name"],
            data["stages"],
            created_by=request.user,
            estimated_duration=data.get("estimatedDuration"),
        )
        return Response(_run_detail(run.pk), status=status.HTTP_201_CREATED)


class RunDetailView(ApiView):
    @extend_schema(responses={200: s.RunDetailSerializer, **ERROR_RESPONSES})
    def get(self, request: Request, run_id: str) -> Response:
        run = _get_run(request.user, run_id)
        return Response(_run_detail(run.pk))


class RunStartView(ApiView):
    @extend_schema(request=None, responses={200: s.RunDetailSerializer, **TRANSITION_RESPONSES})
    def post(self, request: Request, run_id: str) -> Response:
        run = _writable_run(request.user, run_id)
        services.start_run(run.pk)
        return Response(_run_detail(run.pk))


class RunCompleteView(ApiView):
    @extend_schema(request=None, responses={200: s.RunDetailSerializer, **TRANSITION_RESPONSES})
    def post(self, request: Request, run_id: str) -> Response:
        run = _writable_run(request.user, run_id)
        services.complete_run(run.pk)
        return Response(_run_detail(run.pk))


class RunFailView(ApiView):
    @extend_schema(
        request=s.RunFailSerializer,
        responses={200: s.RunDetailSerializer, **TRANSITION_RESPONSES},
        description="Fail a created or running run; its running stages fail with it.",
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = _writable_run(request.user, run_id)
        data = _body(request, s.RunFailSerializer)
        services.fail_run(run.pk, data["errorCode"], data.get("failedStageId"))
        return Response(_run_detail(run.pk))


class RunArtifactsView(ApiView):
    @extend_schema(
        request=s.ArtifactCreateSerializer,
        responses={201: s.ArtifactSerializer, **TRANSITION_RESPONSES},
        description="Record an artifact's metadata (never its content) while the run runs.",
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = _writable_run(request.user, run_id)
        data = _body(request, s.ArtifactCreateSerializer)
        artifact = services.add_artifact(
            run.pk,
            kind=data["kind"],
            name=data["name"],
            size_bytes=data["sizeBytes"],
            content_type=data["contentType"],
            checksum=data.get("checksum") or "",
            stage_id=data.get("stageId"),
        )
        return Response(s.ArtifactSerializer(artifact).data, status=status.HTTP_201_CREATED)


class RunApprovalsView(ApiView):
    @extend_schema(
        request=s.ApprovalCreateSerializer,
        responses={201: s.ApprovalSerializer, **TRANSITION_RESPONSES},
        description="Request a governance approval. `assignedTo`: usernames of owners or "
        "members of the run's project, or staff.",
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = _writable_run(request.user, run_id)
        data = _body(request, s.ApprovalCreateSerializer)
        assignees = _assignees(run, data.get("assignedTo") or [])
        approval = services.request_approval(
            run.pk,
            governance_type=data["governanceType"],
            priority=data["priority"],
            assigned_to=assignees,
        )
        return Response(_approval_data(approval.pk), status=status.HTTP_201_CREATED)


def _assignees(run: Run, usernames: list[str]) -> list[Any]:
    wanted = list(dict.fromkeys(usernames))  # keep order, drop repeats
    users = {u.username: u for u in get_user_model().objects.filter(username__in=wanted)}
    bad: list[str] = []
    found: list[Any] = []
    for index, name in enumerate(wanted):
        user = users.get(name)
        if user is None or services.membership_role(run.project_id, user) not in WRITE_ROLES:
            # Position, not the name: the same answer for "no such user" and "not a member".
            bad.append(f"item {index}: not an owner or member of this project")
        else:
            found.append(user)
    if bad:
        raise exceptions.ValidationError({"assignedTo": bad})
    return found


# --- stages --------------------------------------------------------------------------------


class StageStartView(ApiView):
    @extend_schema(request=None, responses={200: s.StageSerializer, **TRANSITION_RESPONSES})
    def post(self, request: Request, stage_id: str) -> Response:
        stage = _writable_stage(request.user, stage_id)
        services.start_stage(stage.pk)
        return Response(_stage_data(stage.pk))


class StageProgressView(ApiView):
    @extend_schema(
        request=s.ProgressSerializer,
        responses={200: s.StageSerializer, **TRANSITION_RESPONSES},
        description="Report progress (0-100, never backwards) of a running stage.",
    )
    def post(self, request: Request, stage_id: str) -> Response:
        stage = _writable_stage(request.user, stage_id)
        data = _body(request, s.ProgressSerializer)
        services.report_progress(
            stage.pk,
            data["progress"],
            items_processed=data.get("itemsProcessed"),
            items_total=data.get("itemsTotal"),
            status_message=data.get("statusMessage"),
        )
        return Response(_stage_data(stage.pk))


class StageCompleteView(ApiView):
    @extend_schema(request=None, responses={200: s.StageSerializer, **TRANSITION_RESPONSES})
    def post(self, request: Request, stage_id: str) -> Response:
        stage = _writable_stage(request.user, stage_id)
        services.complete_stage(stage.pk)
        return Response(_stage_data(stage.pk))


class StageFailView(ApiView):
    @extend_schema(
        request=s.StageFailSerializer,
        responses={200: s.StageSerializer, **TRANSITION_RESPONSES},
    )
    def post(self, request: Request, stage_id: str) -> Response:
        stage = _writable_stage(request.user, stage_id)
        data = _body(request, s.StageFailSerializer)
        services.fail_stage(stage.pk, data["errorCode"])
        return Response(_stage_data(stage.pk))


# --- approvals -----------------------------------------------------------------------------


class _DecisionView(ApiView):
    granted: ClassVar[bool]

    @extend_schema(
        request=s.DecisionSerializer,
        responses={200: s.ApprovalSerializer, **TRANSITION_RESPONSES},
        description="Decide a pending approval (owners and members). Body optional.",
    )
    def post(self, request: Request, approval_id: str) -> Response:
        approval = _writable_approval(request.user, approval_id)
        data = _optional_body(request, s.DecisionSerializer)
        services.decide_approval(
            approval.pk,
            granted=self.granted,
            decided_by=request.user,
            reason_code=data.get("reasonCode"),
        )
        return Response(_approval_data(approval.pk))


class ApprovalGrantView(_DecisionView):
    granted = True


class ApprovalDenyView(_DecisionView):
    granted = False
