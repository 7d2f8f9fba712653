"""Who may use the session cookie on `/ws`: the origin policy (Cross-Site WebSocket Hijacking).

Browsers send `Origin` on every WebSocket handshake and attach the site's cookies to it, from
any page: SameSite=Lax does not help, because a page on another port of the same host is the
same *site*. So the cookie may authenticate a socket only when the page that opened it is ours:

- `Origin` exactly our public origin — (scheme, host, port) as a browser serialises it
  (events/gateway/origins.py). The host is the handshake's `Host` header, which must pass
  ALLOWED_HOSTS; the scheme is the one the client used (`ws` → http, `wss` → https), or the
  trusted proxy's `X-Forwarded-Proto` when TRUSTED_PROXY_COUNT > 0. So a server reached as
  `127.0.0.1:3001` trusts `http://127.0.0.1:3001` and neither `http://localhost:3001`,
  `https://127.0.0.1:3001`, `http://127.0.0.1:9999` nor `http://127.0.0.1`.
- or `Origin` listed in WS_ALLOWED_ORIGINS (exact origins, no wildcards): a front-end served
  from another origin, or a public origin the server cannot see behind an untrusted proxy.
  CSRF_TRUSTED_ORIGINS deliberately does not count: trusting an origin to *send* a form (CSRF)
  is weaker than letting it *read* the user's event stream, and it may hold wildcards
  (`https://*.example.org`) that would hand the stream to every subdomain.

A handshake with any other `Origin` (or with more than one) is refused with 403 rather than
admitted anonymously. A page from a foreign origin has no use for this socket except through
the user's cookie (a client holding a token need not be a browser page, and a front-end that
is one is listed in WS_ALLOWED_ORIGINS); refusing makes a misconfigured origin visible at once
(a 403 in the browser, not a socket that is silently unauthenticated), and a hostile page
cannot hold sockets, per-process resources and auth-timeout timers open from every visitor's
browser.

A handshake without `Origin` is not from a browser: it may connect, but its cookies are
dropped, so it must authenticate with a token in the `auth` message. (Channels'
AllowedHostsOriginValidator refuses those too, command-line and server-side clients included.)
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from channels.auth import AuthMiddleware, get_user
from channels.security.websocket import WebsocketDenier
from channels.sessions import InstanceSessionWrapper, SessionMiddleware
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.http import parse_cookie
from django.http.request import split_domain_port, validate_host

from .credentials import SessionRef
from .origins import Origin, forwarded_value, host_origin, parse_origin


def server_origin(host: str | None, scheme: str, forwarded_proto: str | None) -> Origin | None:
    """Our public origin as the client sees it, from the handshake; None if the Host is missing,
    malformed or not in ALLOWED_HOSTS (then only WS_ALLOWED_ORIGINS can match)."""
    if host is None:
        return None
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:  # as django.http.HttpRequest.get_host
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed):
        return None
    web_scheme = "https" if scheme == "wss" else "http"
    if settings.TRUSTED_PROXY_COUNT and forwarded_proto is not None:
        proto = (forwarded_value(forwarded_proto, settings.TRUSTED_PROXY_COUNT) or "").lower()
        if proto in ("https", "wss"):
            web_scheme = "https"
        elif proto in ("http", "ws"):
            web_scheme = "http"
        else:
            return None
    return host_origin(host, web_scheme)


def origin_trusted(origin: str, own: Origin | None) -> bool:
    """May a socket opened from a page at `origin` use the session cookie?"""
    parsed = parse_origin(origin)
    if parsed is None:
        return False
    if own is not None and parsed == own:
        return True
    return any(parse_origin(entry) == parsed for entry in settings.WS_ALLOWED_ORIGINS)


class SocketSessionMiddleware(SessionMiddleware):
    """channels' SessionMiddleware, minus its `send` wrapper.

    The wrapper exists to save a modified session on an HTTP response; a socket never saves one,
    yet the wrapper reads `scope["session"]` through a LazyObject on every `websocket.send`.
    Nothing may stand between the consumer and the server's `send` per frame: fan-out calls it
    once per socket per event, so any per-frame wrapper costs more than the frame itself. The
    session is still resolved for the scope, so the session cookie authenticates the socket.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


class SocketAuthMiddleware(AuthMiddleware):
    """channels' AuthMiddleware, which also records what the hub's re-check needs to end the
    socket with its session (logout, flush, expiry, password change): `scope["session_ref"]`,
    the session key and the session's auth hash. Read from the session data that `get_user`
    has just loaded in its database thread, so no query runs on the event loop. Neither value
    may ever be logged: the key is a bearer credential."""

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        user = await get_user(scope)
        scope["user"]._wrapped = user
        if user.is_authenticated:
            session = scope["session"]
            scope["session_ref"] = SessionRef(
                session.session_key, user.pk, session.get(HASH_SESSION_KEY) or ""
            )


class SocketGate:
    """The origin policy, the cookies and, without a session cookie, the anonymous user, in one
    scope copy.

    One copy, not one per middleware: every scope copy a middleware makes stays alive as long
    as the socket (held by the frame awaiting the next layer), so each extra layer that copies
    the scope, or its header list, is per-socket memory. The header list is copied only when a
    cookie must be dropped. A session cookie still goes
    through `with_session` (session, then user, in a database thread); any other socket is
    anonymous at once, with no look-up on the accept path.

    `__call__` is a plain method returning the next layer's coroutine, not a coroutine of its
    own: an awaiting frame (~350 bytes, with the locals it holds) would stay alive as long as
    the socket. Marked `_asgi_single_callable` for asgiref (an ASGI 3 app that is no coroutine
    function); a server sees only the coroutine function around it (ProtocolTypeRouter).
    """

    _asgi_single_callable = True

    def __init__(self, with_session: Any, inner: Any) -> None:
        self.with_session = with_session
        self.inner = inner

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        if "headers" not in scope:  # as CookieMiddleware: required for HTTP and WebSocket
            raise ValueError("SocketGate needs a scope with headers (HTTP or WebSocket)")
        headers = scope["headers"]
        origin: bytes | None = None
        origins = 0
        cookie: bytes | None = None
        host: bytes | None = None
        proto: list[bytes] = []
        for name, value in headers:  # the first of each (origin: exactly one)
            if name == b"origin":
                origins += 1
                if origin is None:
                    origin = value
            elif name == b"cookie":
                if cookie is None:
                    cookie = value
            elif name == b"host":
                if host is None:
                    host = value
            elif name == b"x-forwarded-proto":
                proto.append(value)
        if scope["type"] == "websocket":
            if origin is None:
                # Not a browser: drop its cookies, header included, so nothing downstream
                # sees them; the header list is copied only when there is one to drop.
                if cookie is not None:
                    headers = [(k, v) for k, v in headers if k != b"cookie"]
                return self.inner(
                    dict(scope, headers=headers, cookies={}, user=AnonymousUser()), receive, send
                )
            own = server_origin(
                host.decode("latin1") if host is not None else None,
                scope.get("scheme", "ws"),
                b",".join(proto).decode("latin1") if proto else None,
            )
            if origins != 1 or not origin_trusted(origin.decode("latin1"), own):
                return WebsocketDenier()(scope, receive, send)
        cookies = parse_cookie(cookie.decode("latin1")) if cookie is not None else {}
        if settings.SESSION_COOKIE_NAME in cookies:
            return self.with_session(dict(scope, cookies=cookies), receive, send)
        return self.inner(dict(scope, cookies=cookies, user=AnonymousUser()), receive, send)


def socket_auth_stack(inner: Any) -> Any:
    """What `OriginValidator` + `AuthMiddlewareStack(inner)` do for sockets, without their
    per-frame and per-socket costs."""
    return SocketGate(SocketSessionMiddleware(SocketAuthMiddleware(inner)), inner)
