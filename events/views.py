"""HTTP views of the event system: the event history, socket tokens and socket stats.

Errors use the API's one shape (`{detail, code, errors}`, REST_FRAMEWORK's exception handler).

`GET /api/events/` — the logged events the user may see (projects they belong to; staff: all),
in id order, paginated by cursor::

    {"results": [{"id", "type", "timestamp", "payload"}, ...],   # the WebSocket envelopes
     "next": "https://…/api/events/?after=1234&…" | null,       # null: nothing more right now
     "lastEventId": 1300}                                       # newest visible id, filters ignored

A dashboard loads its state over REST, remembers `lastEventId`, then opens the socket with
`auth.lastEventId` set to it: no event is missed between the two.

`GET /api/ws/stats/` (staff) — socket statistics::

    {"local": <this process: connections, subscriptions, messages, …>,
     "cluster": null                                  # no REDIS_URL: one process, see local
               | {<the same keys, summed over every process that published stats>,
                  "processes": N, "skipped": K},      # K unreadable entries left out
     "clusterError": "…"}                             # only when Redis could not be read
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections import Counter
from typing import Any

from django.conf import settings
from django.db.models import Max
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import exceptions, serializers
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from . import access, hub
from .models import Event
from .schemas import EVENT_CATEGORIES, EVENT_TYPES, iso_timestamp

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR = 2**62  # beyond any id, and inside a 64-bit SQL integer
STATS_KEY_PATTERN = "researchflow:wsstats:*"  # hash keys written by each process's hub
STATS_FIELD = "stats"

_PROJECT_ID_RE = re.compile(r"^prj_[0-9a-z]{1,40}$")
_RUN_ID_RE = re.compile(r"^run_[0-9a-z]{1,40}$")
_INT_RE = re.compile(r"^[0-9]{1,19}$")


class EventsView(APIView):
    renderer_classes: Any = [JSONRenderer]


# --- history -------------------------------------------------------------------------------


def _int_param(raw: str, name: str, low: int, high: int, errors: dict[str, list[str]]) -> int:
    if not _INT_RE.match(raw) or not low <= int(raw) <= high:
        errors[name] = [f"must be an integer from {low} to {high}"]
        return low
    return int(raw)


class EventListView(EventsView):
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
    def get(self, request: Request) -> Response:
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

        visible = access.visible_projects(request.user)
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
        rows = list(events.order_by("position")[: limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        next_url = None
        if more:
            next_url = replace_query_param(request.build_absolute_uri(), "after", rows[-1].position)
        return Response(
            {
                "results": [
                    {
                        "id": row.position,
                        "type": row.type,
                        "timestamp": iso_timestamp(row.created_at),
                        "payload": row.payload,
                    }
                    for row in rows
                ],
                "next": next_url,
                "lastEventId": last_event_id,
            }
        )


# --- sockets -------------------------------------------------------------------------------


class SocketTokenView(EventsView):
    permission_classes: Any = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={
            200: inline_serializer(
                "SocketToken",
                {"token": serializers.CharField(), "expiresIn": serializers.IntegerField()},
            ),
            401: OpenApiResponse(description="Not authenticated"),
        },
        description="A short-lived token for the `/ws` `auth` message (`expiresIn` seconds).",
    )
    def post(self, request: Request) -> Response:
        return Response(
            {
                "token": access.make_socket_token(request.user),
                "expiresIn": settings.WS_SOCKET_TOKEN_MAX_AGE,
            }
        )


def _empty_stats() -> dict[str, Any]:
    return {
        "connections": {"total": 0, "authenticated": 0},
        "subscriptions": {"byType": Counter(), "byCategory": Counter()},
        "messages": {"sent": 0, "coalesced": 0, "dropped": 0},
    }


def _redis_client() -> Any:
    import redis  # only needed when REDIS_URL is set

    return redis.Redis.from_url(
        str(settings.REDIS_URL), socket_connect_timeout=2, socket_timeout=2, decode_responses=False
    )


def _valid_part(part: Any) -> bool:
    """Counts must be numbers (not bools, not strings): merge_stats would add anything."""
    if not isinstance(part, dict):
        return False
    try:
        numbers = [
            *(part["connections"][k] for k in ("total", "authenticated")),
            *(part["messages"][k] for k in ("sent", "coalesced", "dropped")),
            *part["subscriptions"]["byType"].values(),
            *part["subscriptions"]["byCategory"].values(),
        ]
    except (KeyError, TypeError, AttributeError):
        return False
    return all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)


def cluster_stats() -> dict[str, Any]:
    """Sum the stats every process's hub publishes to Redis; skip what cannot be read."""
    total = _empty_stats()
    processes = skipped = 0
    client = _redis_client()
    try:
        for key in client.scan_iter(match=STATS_KEY_PATTERN, count=500):
            try:
                raw = client.hget(key, STATS_FIELD)
                part = json.loads(raw) if raw is not None else None
            except Exception:  # a key of another type (WRONGTYPE), bad JSON, bad encoding
                part = None
            if not isinstance(part, dict) or not _valid_part(part):
                skipped += 1
                continue
            candidate = copy.deepcopy(total)
            try:
                hub.merge_stats(candidate, part)
            except Exception:
                skipped += 1
                continue
            total = candidate
            processes += 1
    finally:
        client.close()
    return {**total, "processes": processes, "skipped": skipped}


class SocketStatsView(EventsView):
    permission_classes: Any = [IsAdminUser]

    @extend_schema(
        responses={
            200: inline_serializer(
                "SocketStats",
                {
                    "local": serializers.DictField(),
                    "cluster": serializers.DictField(allow_null=True),
                },
            ),
            401: OpenApiResponse(description="Not authenticated"),
            403: OpenApiResponse(description="Staff only"),
        },
        description="Socket statistics of this process and, with Redis, of all processes.",
    )
    def get(self, request: Request) -> Response:
        body: dict[str, Any] = {"local": hub.local_stats(), "cluster": None}
        if settings.REDIS_URL:
            try:
                body["cluster"] = cluster_stats()
            except Exception as exc:
                # Connection refused, timeout, auth: the local numbers are still worth showing.
                logger.warning("ws stats: cannot read Redis (%s)", type(exc).__name__)
                body["clusterError"] = f"cannot read stats from Redis ({type(exc).__name__})"
        return Response(body)
