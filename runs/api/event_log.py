"""`GET /api/events/`: the logged events the user may see (projects they belong to; staff:
all), in log order, paginated by cursor::

    {"results": [{"id", "type", "timestamp", "payload"}, ...],   # the WebSocket envelopes
     "next": "https://…/api/events/?after=1234&…" | null,       # null: nothing more right now
     "lastEventId": 1300}                                       # newest visible id, filters ignored

A dashboard loads its state over REST, remembers `lastEventId`, then opens the socket with
`auth.lastEventId` set to it: no event is missed between the two. Errors use the API's one
shape (`{detail, code, errors}`).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Max, TextField
from django.db.models.functions import Cast
from django.http import HttpResponse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from events.models import Event
from events.schemas import EVENT_CATEGORIES, EVENT_TYPES, iso_timestamp
from researchflow.memory import release_free_memory
from runs import access

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR = 2**62  # beyond any id, and inside a 64-bit SQL integer
# A response body at least this large hands the heap's free memory back to the system once it
# was sent (see researchflow/memory.py): a large page is the allocation burst that leaves the
# heap fragmented; a small one costs no trim.
TRIM_AFTER_BYTES = 64 * 1024

_PROJECT_ID_RE = re.compile(r"^prj_[0-9a-z]{1,40}$")
_RUN_ID_RE = re.compile(r"^run_[0-9a-z]{1,40}$")
_INT_RE = re.compile(r"^[0-9]{1,19}$")


def _int_param(raw: str, name: str, low: int, high: int, errors: dict[str, list[str]]) -> int:
    if not _INT_RE.match(raw) or not low <= int(raw) <= high:
        errors[name] = [f"must be an integer from {low} to {high}"]
        return low
    return int(raw)


class EventListView(APIView):
    renderer_classes: Any = [JSONRenderer]

    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Only events with a larger id (cursor)"),
            OpenApiParameter("project", str, description="Only this project's events"),
            OpenApiParameter("run", str, description="Only this run's events"),
            OpenApiParameter("type", str, enum=list(EVENT_TYPES)),
            OpenApiParameter("category", str, enum=list(EVENT_CATEGORIES)),
            OpenApiParameter("limit", int, description=f"1-{MAX_LIMIT}, default {DEFAULT_LIMIT}"),
        ],
        responses={
            200: inline_serializer(
                "EventPage",
                {
                    "results": serializers.ListField(child=serializers.DictField()),
                    "next": serializers.URLField(allow_null=True),
                    "lastEventId": serializers.IntegerField(),
                },
            ),
            400: OpenApiResponse(description="A bad query parameter"),
            401: OpenApiResponse(description="Not authenticated"),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        params = request.query_params
        errors: dict[str, list[str]] = {}
        after = _int_param(params.get("after", "0"), "after", 0, MAX_CURSOR, errors)
        limit = _int_param(params.get("limit", str(DEFAULT_LIMIT)), "limit", 1, MAX_LIMIT, errors)
        event_type = params.get("type")
        if event_type is not None and event_type not in EVENT_TYPES:
            errors["type"] = [f"unknown event type (expected one of {', '.join(EVENT_TYPES)})"]
        category = params.get("category")
        if category is not None and category not in EVENT_CATEGORIES:
            errors["category"] = [
                f"unknown category (expected one of {', '.join(EVENT_CATEGORIES)})"
            ]
        project = params.get("project")
        if project is not None and not _PROJECT_ID_RE.match(project):
            errors["project"] = ["not a project id"]
        run = params.get("run")
        if run is not None and not _RUN_ID_RE.match(run):
            errors["run"] = ["not a run id"]
        if errors:
            raise exceptions.ValidationError(errors)

        visible = access.member_projects(request.user)
        events = Event.objects.all()
        if visible is not None:
            events = events.filter(project_id__in=visible)
        last_event_id = events.aggregate(last=Max("position"))["last"] or 0

        # The cursor is the log position; unpositioned rows (NULL) are not in the log yet.
        events = events.filter(position__gt=after)
        if project is not None:
            events = events.filter(project_id=project)
        if run is not None:
            events = events.filter(run_id=run)
        if event_type is not None:
            events = events.filter(type=event_type)
        if category is not None:
            events = events.filter(type__in=EVENT_CATEGORIES[category])
        # Rows as tuples with the payload as the stored JSON text, written into the body as
        # is (orjson.Fragment): no model instance, no payload dict, no intermediate str per
        # event, and one bytes object per response instead of JSONRenderer's str + its encode.
        # What a 1000-event page allocates decides how far the process's heap grows and
        # fragments under repeated large reads (docs/operations.md, "Memory").
        rows = list(
            events.order_by("position")
            .annotate(payload_text=Cast("payload", TextField()))
            .values_list("position", "type", "created_at", "payload_text")[: limit + 1]
        )
        more = len(rows) > limit
        del rows[limit:]
        next_url = None
        if more:
            next_url = replace_query_param(request.build_absolute_uri(), "after", rows[-1][0])
        body = orjson.dumps(
            {
                "results": [
                    {
                        "id": position,
                        "type": kind,
                        "timestamp": iso_timestamp(created_at),
                        "payload": orjson.Fragment(payload),
                    }
                    for position, kind, created_at, payload in rows
                ],
                "next": next_url,
                "lastEventId": last_event_id,
            }
        )
        del rows
        if len(body) >= TRIM_AFTER_BYTES:
            return _TrimmingResponse(body, from_server=isinstance(request._request, ASGIRequest))
        return HttpResponse(body, content_type="application/json")


class _TrimmingResponse(HttpResponse):
    """Once sent, the body is let go and the heap's free memory goes back to the system.

    The response object outlives the request in reference cycles (Django's, DRF's, asgiref's)
    that only a full garbage collection frees, and the server makes those rare
    (researchflow/asgi.py): a body held until then made pages pile up between passes. A
    server closes the response after sending it; a test client closes it before the test
    reads `.content`, so the body is dropped only for a request an ASGI server brought."""

    def __init__(self, body: bytes, *, from_server: bool) -> None:
        super().__init__(body, content_type="application/json")
        self._from_server = from_server

    def close(self) -> None:
        super().close()
        if self._from_server:
            self.content = b""
        release_free_memory()
