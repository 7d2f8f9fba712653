"""The socket URL a client accepts (`check_url`), shared by the stream, the REST snapshot and
the watcher's command line."""

from __future__ import annotations

import ssl as ssl_module
import urllib.parse

from .errors import InvalidURL


def check_url(url: str, ssl: ssl_module.SSLContext | None = None) -> str:
    """`url` if the client can connect to it, else InvalidURL saying why."""
    if not isinstance(url, str) or not url:
        raise InvalidURL(str(url), "no URL given")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        raise InvalidURL(url, f"cannot parse it ({exc})") from None
    if parts.scheme not in ("ws", "wss"):
        hint = (
            " (http:// is the REST API; the socket is ws://…/ws)" if "http" in parts.scheme else ""
        )
        raise InvalidURL(url, f"the scheme must be ws:// or wss://{hint}")
    if not parts.hostname:
        raise InvalidURL(url, "no host")
    if parts.username or parts.password:
        raise InvalidURL(url, "credentials do not belong in the URL: pass token=")
    query = urllib.parse.parse_qs(parts.query)
    if any(key.lower() in ("token", "access_token", "auth") for key in query):
        raise InvalidURL(
            url, "a token does not belong in the URL (it would be logged): pass token="
        )
    if ssl is not None and parts.scheme != "wss":
        raise InvalidURL(url, "an SSL context was given but the URL is ws://; use wss://")
    return url
