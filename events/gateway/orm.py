"""ORM calls from the gateway's event loop: in a worker thread, with a fresh connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


def in_worker_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Like channels' database_sync_to_async, but not thread-sensitive: the hub's periodic
    reads must not queue behind (or hold up) the consumers' ORM calls on the one sync thread."""

    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(wrapped, thread_sensitive=False)
