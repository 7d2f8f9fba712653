"""ASGI entry point: HTTP through Django (except `/events/stream`, the Server-Sent Events
stream, events/gateway/sse.py), `/ws` through the origin policy, the session auth middleware
and the run-events consumer (events/gateway/security.py)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "researchflow.settings")
django_asgi_app = get_asgi_application()  # sets up Django before the consumer imports models

from channels.routing import ProtocolTypeRouter  # noqa: E402

from events.gateway import layers, servers  # noqa: E402
from events.gateway.routing import known_paths_only, route_sockets  # noqa: E402
from events.gateway.security import socket_auth_stack  # noqa: E402
from events.gateway.sse import event_stream, with_event_stream  # noqa: E402

# Patches of the running server's internals and the channels release layers.py copies from,
# each checked against the installed release: a mismatch stops the start here.
servers.install_for(servers.serving())
layers.check()

if os.environ.get("RESEARCHFLOW_GC_TUNING") == "1":  # set by `manage.py serve`, in every worker
    import gc

    # Everything imported so far (Django, DRF, pydantic models) lives as long as the process:
    # freeze it out of the collector, and collect less often. A generation-2 collection walks
    # every socket's objects and stops the loop while it does: with a thousand sockets that is
    # ~100 ms, which no steady-rate latency target survives.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

application = ProtocolTypeRouter(
    {
        # GET /events/stream (Server-Sent Events) behind the same cookie and session stack as
        # the socket; every other path is Django's.
        "http": with_event_stream(socket_auth_stack(event_stream), django_asgi_app),
        "websocket": known_paths_only(socket_auth_stack(route_sockets())),
    }
)
