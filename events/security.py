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
from channels.sessions import InstanceSessionWrapper, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import parse_cookie
from django.http.request import split_domain_port, validate_host


def origin_allowed(origin: str) -> bool:
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    domain, _port = split_domain_port(parts.netloc)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


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


class SocketGate:
    """The origin policy, the cookies and, without a session cookie, the anonymous user, in one
    scope copy.

    This replaces a chain of three middlewares (the origin policy, channels' CookieMiddleware and
    an anonymous-user shortcut) that copied the scope three times, the cookie-less one with its
    header list too; every copy stayed alive as long as the socket, held by the frame awaiting
    the next layer (~2 KiB per idle socket, docs/benchmarks.md). A session cookie still goes
    through `with_session` (session, then user, in a database thread); any other socket is
    anonymous at once, with no look-up on the accept path.
    """

    def __init__(self, with_session: Any, inner: Any) -> None:
        self.with_session = with_session
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if "headers" not in scope:  # as CookieMiddleware: required for HTTP and WebSocket
            raise ValueError("SocketGate needs a scope with headers (HTTP or WebSocket)")
        headers = scope["headers"]
        origin: bytes | None = None
        cookie: bytes | None = None
        for name, value in headers:  # the first of each, as before
            if name == b"origin":
                if origin is None:
                    origin = value
            elif name == b"cookie" and cookie is None:
                cookie = value
        if scope["type"] == "websocket":
            if origin is None:
                # Not a browser: drop its cookies, header included, so nothing downstream
                # sees them; the header list is copied only when there is one to drop.
                if cookie is not None:
                    headers = [(k, v) for k, v in headers if k != b"cookie"]
                return await self.inner(
                    dict(scope, headers=headers, cookies={}, user=AnonymousUser()), receive, send
                )
            if not origin_allowed(origin.decode("latin1")):
                return await WebsocketDenier()(scope, receive, send)
        cookies = parse_cookie(cookie.decode("latin1")) if cookie is not None else {}
        if settings.SESSION_COOKIE_NAME in cookies:
            return await self.with_session(dict(scope, cookies=cookies), receive, send)
        return await self.inner(dict(scope, cookies=cookies, user=AnonymousUser()), receive, send)


def socket_auth_stack(inner: Any) -> Any:
    """What `OriginValidator` + `AuthMiddlewareStack(inner)` do for sockets, without their
    per-frame and per-socket costs."""
    return SocketGate(SocketSessionMiddleware(AuthMiddleware(inner)), inner)
