"""Event-system HTTP routes (mounted under /api/): history, socket tokens, socket stats.

Each also answers without its trailing slash (see `runs/api/urls.py` for why); the slashless
twin is left out of the schema.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET
from rest_framework.views import APIView

from . import views
from .asyncapi import asyncapi_document

app_name = "events"


def route(pattern: str, view: type[APIView], name: str) -> list[URLPattern]:
    undocumented: Any = type(view.__name__, (view,), {"schema": None})
    return [
        path(f"{pattern}/", view.as_view(), name=name),
        path(pattern, undocumented.as_view()),
    ]


@require_GET
def asyncapi_json(request: HttpRequest) -> JsonResponse:
    """The AsyncAPI 3.0 document of /ws, generated from the event models. Public, like the
    OpenAPI schema: it describes shapes, never data."""
    return JsonResponse(asyncapi_document())


urlpatterns = [
    path("asyncapi.json", asyncapi_json, name="asyncapi"),
    *route("events", views.EventListView, "event-list"),
    *route("ws/token", views.SocketTokenView, "ws-token"),
    *route("ws/stats", views.SocketStatsView, "ws-stats"),
]
