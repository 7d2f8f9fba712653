"""The in-memory channel layer (the embedded default), without its per-message overheads.

channels' `InMemoryChannelLayer.group_send` starts a task per group member and collects them
with `asyncio.as_completed`, and `send` deep-copies every message. Here the one group member
is the process's event hub, and the hub's messages are flat dicts of strings and numbers
(`LoggedEvent.to_message`), or lists of them (`events.gateway.transport.layer_message`). Every
published event passes through here, on the hub's loop in the publishing process, so it must
stay free of a task, a future or a `deepcopy` per message: those would cost more than the
hub's own work per event.

Same semantics: an in-memory `send` never waits (a full channel raises `ChannelFull` at
once), so sending to the members in turn is what the tasks did, in group order; a shallow
copy of a dict whose values are all immutable is a deep copy, and so is copying dicts and
lists of them level by level. Upstream skips a full channel
silently; here it is counted too (`researchflow_channel_layer_errors_total{op="channel_full"}`)
— the hub repairs what a full channel lost from the log either way.

What must stay true (tests/test_layers.py reads upstream's source): `send` and `group_send`
below are channels 4.3's with the two changes above, and lean on its internals (`channels`,
`groups`, `expiry`, `get_capacity`, `_clean_expired`). So the class refuses any other channels
release (`check`, run at start by researchflow/asgi.py and again when a layer is built).
"""

from __future__ import annotations

import asyncio
import time
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as _UpstreamInMemoryChannelLayer

from events import metrics

from .servers.versions import require

WRITTEN_FOR = {"channels": "4.3.2"}
CHECKED_BY = "tests/test_layers.py"


def check() -> None:
    require(__name__, WRITTEN_FOR, CHECKED_BY)


_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})


def _copy(message: dict[str, Any]) -> dict[str, Any]:
    for value in message.values():
        if type(value) not in _IMMUTABLE:
            return _copy_nested(message)
    return dict(message)


def _copy_nested(value: Any) -> Any:
    """A deep copy of dicts and lists of immutables (the hub's "rf.batch": a list of flat
    event messages) without deepcopy's memo and dispatch; anything else goes to deepcopy."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is dict:
        return {key: _copy_nested(item) for key, item in value.items()}
    if kind is list:
        return [_copy_nested(item) for item in value]
    return deepcopy(value)


class InMemoryChannelLayer(_UpstreamInMemoryChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check()
        super().__init__(*args, **kwargs)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        # As upstream (channels 4.3), with `_copy` for `deepcopy`.
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            queue.put_nowait((time.time() + self.expiry, _copy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                await self.send(channel, message)
            except ChannelFull:
                metrics.LAYER_ERRORS.labels(op="channel_full").inc()
