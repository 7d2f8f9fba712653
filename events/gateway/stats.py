"""Socket stats across processes: each process publishes its own to Redis, GET /api/ws/stats/
(`views.py`) sums them.

One Redis hash per process (`stats_key_prefix() + PROCESS_ID`, field "stats"), refreshed every
`WS_STATS_INTERVAL` and expiring after `WS_STATS_TTL`, so a killed process drops out of the
sum within the TTL and a stopped one at once (its key is deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from django.conf import settings

from events import metrics

logger = logging.getLogger(__name__)

PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}"


class Reporting(Protocol):
    """A hub, as the stats see it."""

    def stats(self) -> dict[str, Any]: ...


def stats_key_prefix() -> str:
    """Where each process publishes its socket stats, one key per process."""
    return f"{settings.REDIS_PREFIX}:wsstats:"


def empty_stats() -> dict[str, Any]:
    return {
        "connections": {"total": 0, "authenticated": 0},
        "subscriptions": {"byType": Counter(), "byCategory": Counter()},
        "messages": {"sent": 0, "coalesced": 0, "dropped": 0},
        "events": {"received": 0, "discarded": 0},
    }


def local_stats(hubs: Iterable[Reporting]) -> dict[str, Any]:
    """Stats of the given hubs (this process's running ones), summed."""
    total = empty_stats()
    for hub in hubs:
        merge_stats(total, hub.stats())
    return total


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Add `part` into `total` (both in the shape of `empty_stats`); returns `total`."""
    for key in ("total", "authenticated"):
        total["connections"][key] += part["connections"][key]
    for key in ("byType", "byCategory"):
        total["subscriptions"][key] = Counter(total["subscriptions"][key]) + Counter(
            part["subscriptions"][key]
        )
    for key in ("sent", "coalesced", "dropped"):
        total["messages"][key] += part["messages"][key]
    # Events taken in and discarded (no local socket may see them); absent from the stats of
    # a process that predates them, and only whole counts are added.
    events = part.get("events")
    for key in ("received", "discarded"):
        value = events.get(key) if isinstance(events, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            total["events"][key] += value
    return total


async def publish_loop(snapshot: Callable[[], dict[str, Any]]) -> None:
    """Forever: publish `snapshot()` (this process's stats) to Redis; on cancel, delete it.

    A private client with one connection (not the channel layer's pool) and short timeouts:
    a slow Redis delays only this task.
    """
    import redis.asyncio as aioredis  # only where stats are shared (REDIS_URL set)

    key = stats_key_prefix() + PROCESS_ID
    interval = settings.WS_STATS_INTERVAL
    ttl = max(1, round(settings.WS_STATS_TTL))
    client = aioredis.Redis.from_url(
        str(settings.REDIS_URL),
        socket_connect_timeout=2,
        socket_timeout=2,
        single_connection_client=True,
    )
    failing = False
    try:
        while True:
            try:
                blob = json.dumps(snapshot())
                async with client.pipeline(transaction=False) as pipe:
                    pipe.hset(key, "stats", blob)
                    pipe.expire(key, ttl)
                    await pipe.execute()
                if failing:
                    logger.info("event hub: publishing socket stats to Redis again")
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.STATS_PUBLISH_ERRORS.inc()
                if not failing:  # once per outage, not every interval
                    logger.warning(
                        "event hub: cannot publish socket stats to Redis (%s); retrying",
                        type(exc).__name__,
                    )
                failing = True
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.delete(key), 1.0)
        with contextlib.suppress(Exception):
            await client.aclose()
