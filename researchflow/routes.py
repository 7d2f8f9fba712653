"""One URL helper shared by the API's route tables."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path
from rest_framework.views import APIView


def route(pattern: str, view: type[APIView], name: str) -> list[URLPattern]:
    """`pattern` with and without its trailing slash; both resolve, one is documented.

    `POST /api/runs` is how the seed's API spells it: without the slashless twin, Django's
    APPEND_SLASH turns such a POST into a 500 in DEBUG and a body-dropping redirect in
    production. The twin is left out of the OpenAPI schema.
    """
    undocumented: Any = type(view.__name__, (view,), {"schema": None})
    return [
        path(f"{pattern}/", view.as_view(), name=name),
        path(pattern, undocumented.as_view()),
    ]
