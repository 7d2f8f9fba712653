"""The periodic credential re-check of every open socket, one batch per interval.

A removed member, a deactivated user, a revoked token or an ended session (logout, expiry,
password change) stops receiving within `WS_REAUTH_INTERVAL`: the re-check reads every socket
user's standing in one query batch and each socket applies its own (`apply_standing`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Set
from typing import Any, Protocol

from django.conf import settings

from . import credentials
from .orm import in_worker_thread

logger = logging.getLogger(__name__)


class Rechecked(Protocol):
    """What the re-check needs of a socket."""

    user_id: int | None

    def credential_key(self) -> Any: ...  # a REST token key or a session ref

    def apply_standing(self, standing: Any, valid: set[Any]) -> None: ...


async def recheck_loop(sockets: Set[Rechecked]) -> None:
    """Forever: every interval, re-check the users of `sockets` (a live set: the hub's own)."""
    recheck = in_worker_thread(credentials.recheck)  # looked up per loop: tests replace it
    while True:
        await asyncio.sleep(settings.WS_REAUTH_INTERVAL)
        subs = [s for s in tuple(sockets) if s.user_id is not None]
        if not subs:
            continue
        try:
            standing, valid = await recheck(
                {uid for s in subs if (uid := s.user_id) is not None},
                {k for s in subs if (k := s.credential_key())},
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("event hub: credential re-check failed; will retry")
            continue
        for sub in subs:
            # A socket that left (or logged out) during the query is not touched.
            if sub in sockets and sub.user_id is not None:
                sub.apply_standing(standing.get(sub.user_id), valid)
