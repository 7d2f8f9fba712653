"""Which shard of the event stream a project's events travel in: a leaf, pure code.

Events travel over the channel layer in K groups (`WS_EVENT_SHARDS`), and every server process
listens only to the shards of the projects its sockets may see. A project's shard is
`crc32(project_id) % K`.

What must stay true: the function is the same in every process and every release (crc32 is
fixed; Python's `hash()` is salted per process and would route a project differently in each),
and K is the same in every process of a deployment and in the log rows they write (each row
stores its shard; a hub repairs a shard's gap by reading that column). Changing K means
stopping every server process and worker, then starting them with the new value: the shard
chains then continue from the newest row of each shard number, whatever K wrote it.
"""

from __future__ import annotations

import zlib

from django.conf import settings


def count() -> int:
    """K: how many shards (`WS_EVENT_SHARDS`)."""
    return int(settings.WS_EVENT_SHARDS)


def shard_of(project_id: str, shards: int | None = None) -> int:
    """The shard of `project_id` among `shards` (default: K)."""
    return zlib.crc32(project_id.encode()) % (shards or count())
