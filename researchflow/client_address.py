"""The client's address of an HTTP request: the one place that decides which address to trust.

`settings.TRUSTED_PROXY_COUNT` (n) says how many reverse proxies stand in front of the server:

- n = 0 (the default): the client is the socket peer (`REMOTE_ADDR`); `X-Forwarded-For` is
  ignored, because anyone can send it.
- n > 0: each trusted proxy appends the address it received the request from to
  `X-Forwarded-For` (nginx: `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for`), so
  the n-th entry from the right is the one the outermost trusted proxy wrote: the address that
  connected to it. Entries further left were written by the client and prove nothing.

What must stay true: the answer is never an address the client chose. A header that is missing,
shorter than n entries, or whose n-th entry from the right is not an IP address falls back to
the socket peer (then a trusted proxy's address: coarse, but not attacker-chosen); so does a
header whose entries written by the trusted proxies (the last n) are not all IP addresses. Counting
from the right only protects when the server is reachable through the proxies alone (bind it
to 127.0.0.1 or a private network): a client that reaches it directly writes the whole header.

For rate limits, `rate_limit_key()` groups an IPv6 address by its /64 network: one host is
usually given a whole /64 and can rotate through it at will.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from django.conf import settings

MAX_FORWARDED_ENTRIES = 64  # a longer header is garbage or an attack; only its tail matters


def _ip(text: str) -> str | None:
    """`text` as a canonical IP address string, or None if it is not one."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):  # "[2001:db8::1]"
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_address(meta: Mapping[str, Any], trusted_proxies: int | None = None) -> str:
    """The client address of a request, from its `request.META` (see the module docstring).

    Returns "" only when not even the socket peer is known (a test client without one).
    """
    count = settings.TRUSTED_PROXY_COUNT if trusted_proxies is None else trusted_proxies
    peer = str(meta.get("REMOTE_ADDR") or "")
    peer = _ip(peer) or peer
    if count <= 0:
        return peer
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    if not isinstance(forwarded, str) or not forwarded:
        return peer
    entries = forwarded.rsplit(",", MAX_FORWARDED_ENTRIES)[-MAX_FORWARDED_ENTRIES:]
    if len(entries) < count:
        return peer
    # The last `count` entries were all written by trusted proxies; if any is not an address,
    # the chain is not what we were told, and none of it is believed.
    trusted = [_ip(entry) for entry in entries[-count:]]
    if any(address is None for address in trusted):
        return peer
    return trusted[0] or peer


def rate_limit_key(address: str) -> str:
    """The unit a per-address limit counts: the address itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)
