"""REST API routes (mounted under /api/). OpenAPI 3 at /api/schema/, Swagger UI at /api/docs/.

Ids in paths are matched loosely (`str`) and checked in the views, so a malformed id answers
our JSON 404 rather than Django's HTML one.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views

app_name = "api"

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="auth-token"),
    path("projects/", views.ProjectListView.as_view(), name="project-list"),
    path("projects/<str:project_id>/", views.ProjectDetailView.as_view(), name="project-detail"),
    path(
        "projects/<str:project_id>/members/",
        views.ProjectMembersView.as_view(),
        name="project-members",
    ),
    path(
        "projects/<str:project_id>/members/<str:username>/",
        views.ProjectMemberView.as_view(),
        name="project-member",
    ),
    path("runs/", views.RunListView.as_view(), name="run-list"),
    path("runs/<str:run_id>/", views.RunDetailView.as_view(), name="run-detail"),
    path("runs/<str:run_id>/start/", views.RunStartView.as_view(), name="run-start"),
    path("runs/<str:run_id>/complete/", views.RunCompleteView.as_view(), name="run-complete"),
    path("runs/<str:run_id>/fail/", views.RunFailView.as_view(), name="run-fail"),
    path("runs/<str:run_id>/artifacts/", views.RunArtifactsView.as_view(), name="run-artifacts"),
    path("runs/<str:run_id>/approvals/", views.RunApprovalsView.as_view(), name="run-approvals"),
    path("stages/<str:stage_id>/start/", views.StageStartView.as_view(), name="stage-start"),
    path(
        "stages/<str:stage_id>/progress/",
        views.StageProgressView.as_view(),
        name="stage-progress",
    ),
    path(
        "stages/<str:stage_id>/complete/",
        views.StageCompleteView.as_view(),
        name="stage-complete",
    ),
    path("stages/<str:stage_id>/fail/", views.StageFailView.as_view(), name="stage-fail"),
    path(
        "approvals/<str:approval_id>/grant/",
        views.ApprovalGrantView.as_view(),
        name="approval-grant",
    ),
    path(
        "approvals/<str:approval_id>/deny/",
        views.ApprovalDenyView.as_view(),
        name="approval-deny",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]
