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

from channels.security.websocket import WebsocketDenier
from django.conf import settings
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
