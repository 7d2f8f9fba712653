"""Operations endpoints: `/healthz`, `/readyz` and `/metrics`.

- `/healthz`: the process answers (liveness). No database, no Redis: a slow dependency must
  not get a healthy process restarted.
- `/readyz`: the database and the channel layer answer within `READINESS_TIMEOUT` (readiness);
  503 names the failed check, and says `shutting_down` once a graceful shutdown has begun so
  a balancer stops sending new sockets here.
- `/metrics`: Prometheus exposition (every worker's series in multiprocess mode), for staff
  (session or `Authorization: Token <api token>`) or a scraper presenting
  `Authorization: Bearer <METRICS_TOKEN>`; anyone else gets 403.

Failure bodies name the check and the exception type only: a driver's message can carry a
host name or a user name, and none of it helps a load balancer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from events import metrics
from events.gateway import shutdown

logger = logging.getLogger(__name__)


# --- liveness ------------------------------------------------------------------------------


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


# --- readiness -----------------------------------------------------------------------------


def _database_ping() -> None:
    close_old_connections()  # a connection dropped by the server is replaced, not reported
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        close_old_connections()


async def _check_database() -> None:
    # Its own thread, not Django's shared sync thread: a hung database must not queue
    # every other sync view behind the probe.
    await sync_to_async(_database_ping, thread_sensitive=False)()


async def _check_channel_layer() -> None:
    timeout = settings.READINESS_TIMEOUT
    if settings.REDIS_URL:
        # The pub/sub layer has no cheap round trip of its own; a PING on a private
        # connection shows Redis answers, which is what the layer needs.
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(
            str(settings.REDIS_URL), socket_connect_timeout=timeout, socket_timeout=timeout
        )
        try:
            await client.ping()
        finally:
            await client.aclose()
        return
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("readyz.")
    await layer.send(channel, {"type": "readyz.ping"})
    await layer.receive(channel)


async def _run_check(check: Callable[[], Awaitable[None]]) -> str:
    try:
        await asyncio.wait_for(check(), settings.READINESS_TIMEOUT)
    except TimeoutError:
        return "timeout"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": _check_database,
    "channelLayer": _check_channel_layer,
}


@never_cache
@require_safe
async def readyz(request: HttpRequest) -> JsonResponse:
    names = list(CHECKS)
    results = await asyncio.gather(*(_run_check(CHECKS[name]) for name in names))
    checks = dict(zip(names, results, strict=True))
    failed = [name for name, result in checks.items() if result != "ok"]
    body: dict[str, Any] = {"status": "ok", "checks": checks}
    if shutdown.draining():
        body["status"] = "shutting_down"
    elif failed:
        body["status"] = "unavailable"
        body["failed"] = failed
        logger.warning("readyz: %s", ", ".join(f"{name} {checks[name]}" for name in failed))
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)


# --- metrics -------------------------------------------------------------------------------


def may_read_metrics(request: HttpRequest) -> bool:
    """Staff (session or API token), or the scraper's bearer token (compared in constant time).

    A presented but wrong credential is a refusal, never a fall-through to the session.
    """
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "bearer":
        expected = settings.METRICS_TOKEN
        return bool(expected and credentials) and hmac.compare_digest(
            credentials.encode(), str(expected).encode()
        )
    if scheme == "token":
        try:
            user, _token = TokenAuthentication().authenticate_credentials(credentials)
        except AuthenticationFailed:
            return False
        return bool(user.is_active and user.is_staff)
    if scheme:
        return False  # Basic, Digest, …: not ours
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not may_read_metrics(request):
        return JsonResponse(
            {
                "detail": "metrics are for staff or a scraper with the metrics token",
                "code": "permission_denied",
                "errors": {},
            },
            status=403,
        )
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
