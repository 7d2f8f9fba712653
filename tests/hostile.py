"""Raw-socket hostile clients for the end-to-end checks (loopback only, bounded counts): bare
WebSocket handshakes to any path, hand-built (masked) frames, header tricklers."""

from __future__ import annotations

import base64
import os
import random
import socket
import struct
import time


def handshake_request(port: int, path: str = "/ws", origin: str | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_head(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def handshake_status(port: int, path: str) -> int:
    """The HTTP status a WebSocket handshake to `path` gets (0: closed without an answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(handshake_request(port, path))
        head = read_head(sock)
    if not head:
        return 0
    return int(head.split(b" ", 2)[1])


def open_ws(port: int, path: str = "/ws") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(handshake_request(port, path))
    head = read_head(sock)
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(head[:40].decode("latin-1", "replace"))
    return sock


def frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A client frame (masked, as RFC 6455 requires of clients)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def fuzz_payload(rng: random.Random, max_size: int) -> bytes:
    """One hostile text-frame payload: invalid UTF-8, malformed JSON, oversized, or random."""
    kind = rng.randrange(5)
    if kind == 0:  # invalid UTF-8 (a lone continuation byte, a truncated sequence, 0xff)
        return (
            b'{"type":"ping","x":"'
            + rng.choice([b"\x80", b"\xc3", b"\xff", b"\xed\xa0\x80"])
            + b'"}'
        )
    if kind == 1:  # malformed JSON
        return rng.choice(
            [b"{", b'{"type":', b"[1,2", b'{"type":"auth","payload":{"lastEventId":1e300}}', b"nul"]
        )
    if kind == 2:  # oversized
        return (
            b'{"type":"ping","payload":{"x":"' + b"a" * (max_size + rng.randrange(1, 1024)) + b'"}}'
        )
    if kind == 3:  # well-formed but hostile values
        return rng.choice(
            [
                b'{"type":"auth","payload":{"eventTypes":'
                + b'["run.created"]' * 0
                + b"["
                + b",".join([b'"run.created"'] * 65)
                + b"]}}",
                b'{"type":"resume","payload":{"lastEventId":true}}',
                b'{"type":"subscribe","payload":{"eventType":"<script>"}}',
            ]
        )
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))


def slow_clients(
    port: int, *, trickling: int, silent: int, give_up: float, interval: float = 0.5
) -> list[float | None]:
    """Open `trickling` connections that send a handshake one byte every `interval` s (never
    completing it) and `silent` ones that send nothing; return how long each stayed open before
    the server closed it (None: still open after `give_up` s)."""
    import selectors

    request = handshake_request(port)
    socks = [
        socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(trickling + silent)
    ]
    start = time.monotonic()
    closed_after: list[float | None] = [None] * len(socks)
    sent = [0] * len(socks)
    sel = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
    next_byte = start
    try:
        while time.monotonic() - start < give_up and None in closed_after:
            now = time.monotonic()
            if now >= next_byte:
                next_byte = now + interval
                for i in range(trickling):
                    if closed_after[i] is None and sent[i] < len(request) - 4:
                        try:
                            socks[i].send(request[sent[i] : sent[i] + 1])
                            sent[i] += 1
                        except OSError:
                            closed_after[i] = now - start
            for key, _ in sel.select(timeout=min(0.1, max(0.0, next_byte - time.monotonic()))):
                i = key.data
                try:
                    data = socks[i].recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data == b"" and closed_after[i] is None:
                    closed_after[i] = time.monotonic() - start
                    sel.unregister(socks[i])
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    return closed_after
