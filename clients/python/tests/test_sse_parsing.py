"""The SSE wire format and the HTTP body framing of `researchflow_client.sse`, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from researchflow_client import sse


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def parse(*parts: bytes) -> list[sse.Message | None]:
    async def collect() -> list[sse.Message | None]:
        return [m async for m in sse.messages(_chunks(*parts))]

    return asyncio.run(collect())


def test_it_parses_events_split_anywhere() -> None:
    text = b'retry: 2000\n\nid: 7\nevent: run.started\ndata: {"id":7}\n\n: keepalive\n\n'
    whole = parse(text)
    for cut in range(1, len(text)):
        assert parse(text[:cut], text[cut:]) == whole
    assert whole == [sse.Message("run.started", '{"id":7}', "7"), None]


def test_it_joins_data_lines_and_accepts_crlf_and_no_space() -> None:
    assert parse(b"event:x\r\ndata:a\r\ndata: b\r\n\r\n") == [sse.Message("x", "a\nb", None)]


def test_an_event_without_data_is_not_dispatched() -> None:
    assert parse(b"event: nothing\n\nid: 3\n\n") == []


def test_it_refuses_an_endless_line() -> None:
    with pytest.raises(sse.StreamError):
        parse(b"data: " + b"x" * (sse.MAX_EVENT_BYTES + 1))


def test_it_reads_a_chunked_body_to_its_last_chunk() -> None:
    async def read() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        reader.feed_eof()
        response = sse.Response(200, {"transfer-encoding": "chunked"}, reader, None)  # type: ignore[arg-type]
        return [chunk async for chunk in response.chunks()]

    assert asyncio.run(read()) == [b"hello", b" world"]


def test_a_chunked_body_cut_short_is_an_error() -> None:
    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"5\r\nhello\r\n")
        reader.feed_eof()
        response = sse.Response(200, {"transfer-encoding": "chunked"}, reader, None)  # type: ignore[arg-type]
        async for _ in response.chunks():
            pass

    with pytest.raises(sse.StreamError):
        asyncio.run(read())
