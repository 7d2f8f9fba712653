"""WebSocket routes, and the refusal every other socket path gets.

channels' URLRouter raises `ValueError("No route found for path ...")` for an unknown path: the
server answered 500 and logged a traceback quoting the path, once per probe. `known_paths_only`
stands in front of the whole socket stack (before the origin policy and any session look-up)
and refuses such a handshake with a plain close, which both servers answer with 403: no
exception, no log line of ours, and no database work for a path nobody serves.

Every layer between the server and the consumer that `await`s the next one keeps its frame
(and the scope and locals it holds) alive as long as the socket: ~350 bytes each. So the
layers here are plain functions that return the next layer's coroutine (`known_paths_only`,
`route_sockets` in place of channels' URLRouter, `consumer_app` in place of `as_asgi()`):
the consumer's own `__call__` is the only frame of the stack an idle socket keeps, besides the
server's and ProtocolTypeRouter's. Each is marked `_asgi_single_callable` for asgiref.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.urls import URLPattern, path

from .consumer import RunEventsConsumer

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _single_callable(app: Any) -> Any:
    app._asgi_single_callable = True  # an ASGI 3 app, though no coroutine function
    return app


@_single_callable
def consumer_app(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
    """`RunEventsConsumer.as_asgi()` without an awaiting frame: a consumer per socket."""
    return RunEventsConsumer()(scope, receive, send)


websocket_urlpatterns = [path("ws", consumer_app)]


def _route(routes: list[URLPattern], scope: dict[str, Any]) -> URLPattern | None:
    """The route channels' URLRouter (as the outermost router) would take: the same root_path
    handling, leading slashes stripped, the same pattern match."""
    full = scope.get("path")
    if not isinstance(full, str):
        return None
    root_path = scope.get("root_path", "")
    if root_path and not full.startswith(root_path):
        return None
    rest = full[len(root_path) :].lstrip("/")
    return next((route for route in routes if route.pattern.match(rest)), None)


async def _refuse(receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


def known_paths_only(inner: Any, routes: list[URLPattern] = websocket_urlpatterns) -> App:
    @_single_callable
    def app(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        if scope["type"] != "websocket" or _route(routes, scope) is not None:
            return inner(scope, receive, send)
        return _refuse(receive, send)

    return app


def route_sockets(routes: list[URLPattern] = websocket_urlpatterns) -> App:
    """channels' URLRouter for these routes, without its frame and its scope copy (the
    consumer reads neither `url_route` nor `path_remaining`)."""

    @_single_callable
    def app(scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        route = _route(routes, scope)
        if route is None:
            raise ValueError("No route found for this socket path")
        return route.callback(scope, receive, send)

    return app
