from __future__ import annotations

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """The realtime gateway: `/ws`, the per-process hub, and the hand-off of committed events
    to the channel layer. It stands on the event core and registers itself with it here; the
    core never imports it."""

    name = "events.gateway"
    label = "gateway"
    verbose_name = "Realtime gateway"

    def ready(self) -> None:
        from events.bus import event_bus

        from .transport import hand_off

        event_bus.add_sink(hand_off)
