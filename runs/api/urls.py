"""REST API routes (mounted under /api/). OpenAPI 3 at /api/schema/, Swagger UI at /api/docs/.

Ids in paths are matched loosely (`str`) and checked in the views, so a malformed id answers
our JSON 404 rather than Django's HTML one.

Every route also answers without its trailing slash (`POST /api/runs`, as the seed's API
spells it): otherwise CommonMiddleware's APPEND_SLASH turns such a POST into a 500 in DEBUG
and a body-dropping redirect in production. The slashless twin is left out of the schema.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from researchflow.routes import route

from . import event_log, inbox, views

app_name = "api"


urlpatterns = [
    *route("events", event_log.EventListView, "event-list"),
    *route("auth/token", views.TokenView, "auth-token"),
    *route("projects", views.ProjectListView, "project-list"),
    *route("projects/<str:project_id>", views.ProjectDetailView, "project-detail"),
    *route("projects/<str:project_id>/members", views.ProjectMembersView, "project-members"),
    *route(
        "projects/<str:project_id>/members/<str:username>",
        views.ProjectMemberView,
        "project-member",
    ),
    *route("runs", views.RunListView, "run-list"),
    *route("runs/<str:run_id>", views.RunDetailView, "run-detail"),
    *route("runs/<str:run_id>/start", views.RunStartView, "run-start"),
    *route("runs/<str:run_id>/complete", views.RunCompleteView, "run-complete"),
    *route("runs/<str:run_id>/fail", views.RunFailView, "run-fail"),
    *route("runs/<str:run_id>/artifacts", views.RunArtifactsView, "run-artifacts"),
    *route("runs/<str:run_id>/approvals", views.RunApprovalsView, "run-approvals"),
    *route("stages/<str:stage_id>/start", views.StageStartView, "stage-start"),
    *route("stages/<str:stage_id>/progress", views.StageProgressView, "stage-progress"),
    *route("stages/<str:stage_id>/complete", views.StageCompleteView, "stage-complete"),
    *route("stages/<str:stage_id>/fail", views.StageFailView, "stage-fail"),
    *route("approvals/inbox", inbox.ApprovalInboxView, "approval-inbox"),
    *route("approvals/<str:approval_id>/grant", views.ApprovalGrantView, "approval-grant"),
    *route("approvals/<str:approval_id>/deny", views.ApprovalDenyView, "approval-deny"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
