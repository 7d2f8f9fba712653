"""HTTP views of the realtime gateway: socket tokens and socket stats.

`POST /api/ws/token/` — a short-lived token for the `/ws` `auth` message.

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
from typing import Any

from django.conf import settings
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import credentials, stats
from .hub import Hub

logger = logging.getLogger(__name__)

STATS_FIELD = "stats"


class GatewayView(APIView):
    renderer_classes: Any = [JSONRenderer]


# --- sockets -------------------------------------------------------------------------------


class SocketTokenView(GatewayView):
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
                "token": credentials.make_socket_token(request.user),
                "expiresIn": settings.WS_SOCKET_TOKEN_MAX_AGE,
            }
        )


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
    total = stats.empty_stats()
    processes = skipped = 0
    client = _redis_client()
    try:
        for key in client.scan_iter(match=stats.stats_key_prefix() + "*", count=500):
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
                stats.merge_stats(candidate, part)
            except Exception:
                skipped += 1
                continue
            total = candidate
            processes += 1
    finally:
        client.close()
    return {**total, "processes": processes, "skipped": skipped}


class SocketStatsView(GatewayView):
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
        body: dict[str, Any] = {"local": stats.local_stats(Hub.running()), "cluster": None}
        if settings.REDIS_URL:
            try:
                body["cluster"] = cluster_stats()
            except Exception as exc:
                # Connection refused, timeout, auth: the local numbers are still worth showing.
                logger.warning("ws stats: cannot read Redis (%s)", type(exc).__name__)
                body["clusterError"] = f"cannot read stats from Redis ({type(exc).__name__})"
        return Response(body)
