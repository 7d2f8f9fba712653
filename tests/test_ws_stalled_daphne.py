"""daphne lets go of a client that stops reading as uvicorn does: its send waits once the
transport holds WS_TRANSPORT_BUFFER_BYTES (servers/daphne_send_buffer.py), a missing pong
closes it with 4008, which it reads if it reads again within WS_CLOSE_TIMEOUT, and then the
connection is reset (servers/daphne_stalled_peer.py). The byte bounds themselves are tested
on both servers in test_ws_stalled.py.

The source checks read daphne's, autobahn's and Twisted's files, so an upgrade that changes
what the patches rely on fails here first.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
from collections.abc import Iterator

import pytest

from devtools.servers import AppServer
from events.gateway import servers
from events.gateway.servers import daphne_close, daphne_send_buffer, daphne_stalled_peer
from tests.test_ws_stalled_peer import (
    BOUND,
    CLOSE_TIMEOUT,
    EVENTS,
    METRICS_TOKEN,
    _metric,
    _read_to_the_end,
    _server_has_connection,
    _stalled_behind_a_replay,
    _until,
)


def _shipped(cls: type, method: str) -> str:
    """A method's source as the library ships it (read from the class's file: the class
    attribute may be a patch's wrapper in this process)."""
    source = textwrap.dedent(inspect.getsource(cls))
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == method:
            segment = ast.get_source_segment(source, item)
            assert segment is not None
            return segment
    raise AssertionError(f"{cls.__qualname__} has no {method}()")


def test_daphne_twisted_and_autobahn_still_work_the_way_the_patches_were_written_for() -> None:
    from autobahn.twisted.websocket import WebSocketAdapterProtocol
    from autobahn.websocket.protocol import WebSocketProtocol
    from daphne import http_protocol, server, ws_protocol
    from twisted.internet.abstract import FileDescriptor

    assert daphne_send_buffer.WRITTEN_FOR == {"daphne": "4.2.3", "twisted": "26.10.0"}
    assert daphne_stalled_peer.WRITTEN_FOR == {"daphne": "4.2.3", "autobahn": "26.10.2"}
    # daphne: the ASGI send is handle_reply; the upgrade hands the TCP transport (on which
    # the HTTP channel is the producer) to the WebSocket protocol through makeConnection.
    assert "send=partial(self.handle_reply, protocol)" in inspect.getsource(server.Server)
    assert "protocol.handle_reply(message)" in _shipped(server.Server, "handle_reply")
    upgrade = inspect.getsource(http_protocol.WebRequest.process)
    assert "protocol.makeConnection(transport)" in upgrade
    assert "connectionMade" not in ws_protocol.WebSocketProtocol.__dict__ or (
        ws_protocol.WebSocketProtocol.connectionMade.__module__.startswith("events.")
    )
    assert "self._connectionMade()" in _shipped(WebSocketAdapterProtocol, "connectionMade")
    on_close = _shipped(ws_protocol.WebSocketProtocol, "onClose")
    assert 'if not self.muted and hasattr(self, "application_queue")' in on_close
    assert "self.sendClose(code=code)" in _shipped(ws_protocol.WebSocketProtocol, "serverClose")
    # Twisted: write() pauses a streaming producer above bufferSize, doWrite resumes it once
    # the buffer is empty, connectionLost stops it; abort resets (SO_LINGER 0).
    assert "self._maybePauseProducer()" in _shipped(FileDescriptor, "write")
    assert "> self.bufferSize" in _shipped(FileDescriptor, "_isSendBufferFull")
    assert "self.producer.resumeProducing()" in _shipped(FileDescriptor, "doWrite")
    assert "self.producer.stopProducing()" in _shipped(FileDescriptor, "connectionLost")
    # autobahn: a missing pong aborts; a close we write arms closeHandshakeTimeout, read then.
    assert "self.dropConnection(abort=True)" in _shipped(WebSocketProtocol, "onAutoPingTimeout")
    send_close = _shipped(WebSocketProtocol, "sendCloseFrame")
    assert "self.state = WebSocketProtocol.STATE_CLOSING" in send_close
    assert "self.closedByMe and self.closeHandshakeTimeout > 0" in send_close
    assert "self.dropConnection(abort=True)" in _shipped(
        WebSocketProtocol, "onCloseHandshakeTimeout"
    )


class _Producer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


async def test_the_gate_holds_a_send_while_paused_and_passes_every_call_on() -> None:
    inner = _Producer()
    gate = daphne_send_buffer.WriteGate(inner)
    await gate.writable()  # not paused: returns at once
    gate.pauseProducing()
    waiting = asyncio.ensure_future(gate.writable())
    await asyncio.sleep(0)
    assert not waiting.done()
    gate.resumeProducing()
    await asyncio.wait_for(waiting, 1)
    gate.pauseProducing()
    waiting = asyncio.ensure_future(gate.writable())
    await asyncio.sleep(0)
    gate.stopProducing()  # the connection is gone: the send goes on (and finds it closed)
    await asyncio.wait_for(waiting, 1)
    assert inner.calls == ["pause", "resume", "pause", "stop"]


async def test_a_send_held_by_the_gate_runs_once_it_opens_or_never_if_cancelled() -> None:
    sent: list[str] = []

    async def reply(text: str) -> None:
        sent.append(text)

    gate = daphne_send_buffer.WriteGate(None)
    gate.pauseProducing()
    held = asyncio.ensure_future(daphne_send_buffer._after_writable(gate, reply("a")))
    await asyncio.sleep(0)
    assert sent == []
    gate.resumeProducing()
    await asyncio.wait_for(held, 1)
    assert sent == ["a"]
    gate.pauseProducing()
    never = reply("b")
    held = asyncio.ensure_future(daphne_send_buffer._after_writable(gate, never))
    await asyncio.sleep(0)
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held
    assert sent == ["a"] and never.cr_frame is None  # closed, not left un-awaited


# --- live ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keepalive_server() -> Iterator[AppServer]:
    # Only the keepalive can close a stalled socket here (replayed frames are not counted
    # against the app's bounds). daphne checks its sockets' pings every 2 s.
    with AppServer(
        "daphne",
        env={
            "REDIS_URL": "",
            "METRICS_TOKEN": METRICS_TOKEN,
            "WS_TRANSPORT_BUFFER_BYTES": str(BOUND),
            "WS_SOCKET_SNDBUF": str(BOUND),
            "WS_SEND_QUEUE": "100000",
            "WS_SEND_BUFFER_BYTES": str(1 << 30),
            "WS_PING_INTERVAL": "1",
            "WS_PING_TIMEOUT": "1",
            "WS_HEARTBEAT_TIMEOUT": "600",
            "WS_RATE_LIMIT": "1000",
            "WS_GAP_CHECK_INTERVAL": "0.05",
            "WS_CLOSE_TIMEOUT": str(CLOSE_TIMEOUT),
        },
    ) as app:
        yield app


@pytest.mark.e2e
async def test_under_daphne_a_missing_pong_closes_a_stalled_socket_with_4008(
    keepalive_server: AppServer,
) -> None:
    app = keepalive_server
    before = _metric(app, "researchflow_ws_slow_consumer_closes_total")
    published, ws = await _stalled_behind_a_replay(app)
    await _until(
        lambda: _metric(app, "researchflow_ws_slow_consumer_closes_total") > before,
        30,
        "the server closes the stalled socket as a slow consumer",
    )
    # The consumer left at once, while the client still reads nothing.
    assert _metric(app, "researchflow_ws_sockets_open") == 0
    ids, code = await _read_to_the_end(ws)
    assert code == 4008  # daphne alone: an abort, no close code at all
    assert ws.close_reason == "slow consumer"
    assert ids == published[: len(ids)]
    assert 0 < len(ids) < EVENTS


@pytest.mark.e2e
async def test_under_daphne_a_client_that_never_reads_again_is_reset_after_the_close_timeout(
    keepalive_server: AppServer,
) -> None:
    app = keepalive_server
    published, ws = await _stalled_behind_a_replay(app)
    client_port = ws.local_address[1]
    assert _server_has_connection(app.port, client_port)
    await _until(
        lambda: not _server_has_connection(app.port, client_port),
        CLOSE_TIMEOUT + 30,
        "the server drops its end of the connection",
    )
    ids, code = await _read_to_the_end(ws)
    assert code == 1006
    assert ids == published[: len(ids)]


def test_the_patches_are_installed_for_daphne_after_the_close_they_wrap() -> None:
    order = servers.PATCHES["daphne"]
    assert daphne_send_buffer in order and daphne_stalled_peer in order
    assert daphne_send_buffer not in servers.PATCHES["uvicorn"]
    assert order.index(daphne_close) < order.index(daphne_stalled_peer)  # wraps its serverClose
