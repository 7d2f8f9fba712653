"""Event-core routes (mounted under /api/): the AsyncAPI document of the socket protocol."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_GET

from .asyncapi import asyncapi_document

app_name = "events"


@require_GET
def asyncapi_json(request: HttpRequest) -> JsonResponse:
    """The AsyncAPI 3.0 document of /ws, generated from the event models. Public, like the
    OpenAPI schema: it describes shapes, never data."""
    return JsonResponse(asyncapi_document())


urlpatterns = [path("asyncapi.json", asyncapi_json, name="asyncapi")]
