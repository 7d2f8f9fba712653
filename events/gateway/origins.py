"""Web origins as browsers serialise them: parsing, the server's own origin, comparison.

Pure functions, no Django import: `researchflow/settings.py` validates `WS_ALLOWED_ORIGINS` with
`parse_origin` before Django is set up, and the socket origin policy (`events/gateway/security.py`)
compares with the same code.

An origin is the triple (scheme, host, port). Browsers send it on a WebSocket handshake as
`scheme://host[:port]` with the scheme and host in lower case, the host in ASCII (IDN as
punycode), IPv6 in brackets, and the port left out when it is the scheme's default. Comparing
triples rather than strings makes `http://x` equal `http://x:80` and `HTTP://X` equal
`http://x`; anything a browser would not send (userinfo, a path, a leading-zero port, raw
Unicode, `null`, another scheme) parses to None and so never matches. A trailing dot is kept:
`localhost.` and `localhost` are different origins to a browser, so they are here.
"""

from __future__ import annotations

import re
from typing import NamedTuple

DEFAULT_PORTS = {"http": 80, "https": 443}

# A host as a browser serialises it: an ASCII name (letters, digits, `-`, `_`, dots; punycode
# for IDN) or a bracketed IPv6 literal. No `@`, `/`, `%`, `\`, space: nothing that lets one
# parser see a different host than another (`http://127.0.0.1:3001@evil.com`).
_HOST = r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_-][a-z0-9_.-]*)"
# A port as a browser serialises it: decimal, no sign, no leading zero (`:03001` is refused).
_PORT = r"(?::(?P<port>[1-9][0-9]{0,4}))?"
_ORIGIN_RE = re.compile(rf"(?P<scheme>https?)://{_HOST}{_PORT}", re.ASCII | re.IGNORECASE)
_HOST_RE = re.compile(rf"{_HOST}{_PORT}", re.ASCII | re.IGNORECASE)


class Origin(NamedTuple):
    scheme: str  # "http" or "https", lower case
    host: str  # lower case, trailing dot kept, IPv6 in brackets
    port: int  # explicit, also when it is the scheme's default

    def serialise(self) -> str:
        if self.port == DEFAULT_PORTS[self.scheme]:
            return f"{self.scheme}://{self.host}"
        return f"{self.scheme}://{self.host}:{self.port}"


def parse_origin(value: str) -> Origin | None:
    """An `Origin` header value (or an allow-list entry) → its triple, or None when it is not
    an http(s) origin a browser could have sent (`null`, `file://`, a path, userinfo…)."""
    if len(value) > 300:
        return None
    match = _ORIGIN_RE.fullmatch(value)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
    if port > 65535:
        return None
    return Origin(scheme, match["host"].lower(), port)


def host_origin(host_header: str, scheme: str) -> Origin | None:
    """The origin a browser shows for a page fetched with this `Host` header over `scheme`
    ("http" or "https"): the server's own public origin. None for a malformed Host."""
    if scheme not in DEFAULT_PORTS or len(host_header) > 300:
        return None
    match = _HOST_RE.fullmatch(host_header)
    if match is None:
        return None
    port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
    if port > 65535:
        return None
    return Origin(scheme, match["host"].lower(), port)


def forwarded_value(header: str, trusted_proxies: int) -> str | None:
    """The value of a comma-joined X-Forwarded-* header set by the outermost trusted proxy:
    each proxy appends (or overwrites with) its own, so the one `trusted_proxies` from the right
    is the first a trusted proxy wrote; anything left of it came from the client."""
    values = [v.strip() for v in header.split(",") if v.strip()]
    if not values or trusted_proxies < 1:
        return None
    return values[-trusted_proxies] if len(values) >= trusted_proxies else values[0]
