"""WebSocket routes, and the refusal every other socket path gets.

channels' URLRouter raises `ValueError("No route found for path ...")` for an unknown path: the
server answered 500 and logged a traceback quoting the path, once per probe. `known_paths_only`
stands in front of the whole socket stack (before the origin policy and any session look-up)
and refuses such a handshake with a plain close, which both servers answer with 403: no
exception, no log line of ours, and no database work for a path nobody serves.
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path

from .consumer import RunEventsConsumer

websocket_urlpatterns = [path("ws", RunEventsConsumer.as_asgi())]


def _routed(routes: list[URLPattern], scope: dict[str, Any]) -> bool:
    """Whether channels' URLRouter (as the outermost router) would find a route: the same
    root_path handling, leading slashes stripped, the same pattern match."""
    full = scope.get("path")
    if not isinstance(full, str):
        return False
    root_path = scope.get("root_path", "")
    if root_path and not full.startswith(root_path):
        return False
    rest = full[len(root_path) :].lstrip("/")
    return any(route.pattern.match(rest) for route in routes)


def known_paths_only(inner: Any, routes: list[URLPattern] = websocket_urlpatterns) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or _routed(routes, scope):
            return await inner(scope, receive, send)
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})

    return app
