"""The Server-Sent Events transport: `GET /events/stream` over HTTP/1.1, on asyncio streams.

For networks whose proxies refuse WebSocket upgrades (`RunEvents(..., transport="sse")`). Only
the standard library: one request per connection (`Connection: close`), the body read as it
arrives (chunked or not), and the SSE wire format parsed as browsers parse it (WHATWG HTML,
"Server-sent events"). The token goes in the `Authorization` header, never in the URL.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_EVENT_BYTES = 1 << 20  # the server's frames are at most 64 KiB; this leaves room


class StreamError(Exception):
    """The stream could not be read (malformed HTTP, a line too long, the connection lost)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names, last value wins
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    async def read_body(self, limit: int = 64 * 1024) -> bytes:
        """The whole (small) body of a refusal."""
        out = b""
        async for chunk in self.chunks():
            out += chunk
            if len(out) > limit:
                break
        return out

    async def chunks(self) -> AsyncIterator[bytes]:
        reader = self.reader
        if not self.chunked:
            length = self.headers.get("content-length")
            if length is not None:
                if int(length):
                    yield await reader.readexactly(int(length))
                return
            while chunk := await reader.read(65536):
                yield chunk
            return
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise StreamError("the connection closed inside a chunked body")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise StreamError("a malformed chunk size") from None
            if size == 0:
                return  # the last chunk: the server ended the response
            yield await reader.readexactly(size)
            await reader.readexactly(2)  # CRLF after the chunk

    def close(self) -> None:
        self.writer.close()


async def request(
    url: str,
    *,
    headers: dict[str, str],
    ssl: ssl_module.SSLContext | None,
    open_timeout: float,
) -> Response:
    """Send `GET url` and read the response head (within `open_timeout` seconds)."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    context = (ssl or ssl_module.create_default_context()) if secure else None
    async with asyncio.timeout(open_timeout):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, limit=MAX_EVENT_BYTES
        )
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin1"))
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except BaseException:
            writer.close()
            raise
    if len(head) > MAX_HEAD_BYTES:
        writer.close()
        raise StreamError("the response head is too long")
    status_line, *header_lines = head.decode("latin1").split("\r\n")
    try:
        _version, status, *_ = status_line.split(" ", 2)
        code = int(status)
    except ValueError:
        writer.close()
        raise StreamError("a malformed status line") from None
    found: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return Response(code, found, reader, writer)


@dataclass(frozen=True, slots=True)
class Message:
    event: str
    data: str
    id: str | None


async def messages(chunks: AsyncIterator[bytes]) -> AsyncIterator[Message | None]:
    """SSE messages from a body, and None for each comment (a keepalive: proof of life)."""
    buffer = ""
    data: list[str] = []
    name = ""
    last_id: str | None = None
    async for chunk in chunks:
        buffer += chunk.decode("utf-8", errors="replace")
        *lines, buffer = buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if len(buffer) > MAX_EVENT_BYTES:  # an unfinished line: bounded
            raise StreamError("a line over 1 MiB")
        for line in lines:
            if not line:
                if data:
                    yield Message(name or "message", "\n".join(data), last_id)
                data, name = [], ""
                continue
            if line.startswith(":"):
                yield None
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "event":
                name = value
            elif field == "id":
                last_id = value
