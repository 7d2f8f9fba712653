"""Origin policy for `/ws`: a page on another site cannot open an authenticated socket.

Browsers always send `Origin` on a WebSocket handshake, and always attach cookies. So:
- with an `Origin`, it must be one of ours (a host in ALLOWED_HOSTS, or an origin listed in
  CSRF_TRUSTED_ORIGINS), else the handshake is refused with 403;
- without an `Origin` the client is not a browser: it may connect, but its cookies are dropped,
  so it must authenticate with a token in the `auth` message.
This is stricter than Channels' AllowedHostsOriginValidator, which refuses every client that
sends no Origin (command-line and server-side clients included).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.auth import AuthMiddleware
from channels.security.websocket import WebsocketDenier
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host


def origin_allowed(origin: str) -> bool:
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    domain, _port = split_domain_port(parts.netloc)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


class OriginPolicyMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        headers = scope.get("headers", [])
        origin = next((v.decode("latin1") for k, v in headers if k == b"origin"), None)
        if origin is None:
            scope = dict(scope, headers=[(k, v) for k, v in headers if k != b"cookie"])
        elif not origin_allowed(origin):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


class SocketSessionMiddleware(SessionMiddleware):
    """channels' SessionMiddleware, minus its `send` wrapper.

    The wrapper exists to save a modified session on an HTTP response; a socket never saves one,
    yet it read `scope["session"]` through a LazyObject on every `websocket.send` — measured at
    65 % of the server's CPU during fan-out (docs/benchmarks.md). The session is still resolved
    for the scope, so the session cookie authenticates the socket as before.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


class AnonymousWithoutCookie:
    """No session cookie (every non-browser client): anonymous at once, with no session or user
    look-up in a database thread on the accept path."""

    def __init__(self, with_session: Any, inner: Any) -> None:
        self.with_session = with_session
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if settings.SESSION_COOKIE_NAME in scope.get("cookies", {}):
            return await self.with_session(scope, receive, send)
        return await self.inner(dict(scope, user=AnonymousUser()), receive, send)


def socket_auth_stack(inner: Any) -> Any:
    """What `AuthMiddlewareStack(inner)` does for sockets, without its per-frame costs."""
    return CookieMiddleware(
        AnonymousWithoutCookie(SocketSessionMiddleware(AuthMiddleware(inner)), inner)
    )
