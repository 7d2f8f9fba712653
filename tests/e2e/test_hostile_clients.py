"""Hostile clients against a live server (daphne and uvicorn, DEBUG=0, `manage.py serve`): what
they can make the server log, answer or keep open. Loopback only; every loop bounded."""

from __future__ import annotations

import random
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.servers import AppServer
from tests import hostile

pytestmark = [pytest.mark.e2e]

HANDSHAKE_TIMEOUT = 1.0
HOSTILE_WORDS = ("John", "Smith", "SSN", "123-45", "Jane", "BREW")
ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def app(request: Any) -> Iterator[AppServer]:
    env = {
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "WS_HANDSHAKE_TIMEOUT": str(HANDSHAKE_TIMEOUT),
    }
    with AppServer(request.param, env=env, seed=False) as server:
        yield server


class LogWindow:
    """The server's output from now on, read once a sentinel request's log line shows that
    everything logged before it has been written (the server logs in order)."""

    def __init__(self, app: AppServer) -> None:
        self.app = app
        self.start = app.log.stat().st_size

    def read(self, timeout: float = 15) -> str:
        run_id = "run_" + "".join(secrets.choice(ID_ALPHABET) for _ in range(20))
        http(self.app, "GET", f"/api/runs/{run_id}/")  # 401, logged with its id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.app.log.read_bytes()[self.start :].decode("utf-8", "replace")
            if run_id in text:
                return text[: text.index(run_id)]
            time.sleep(0.05)
        raise AssertionError("the sentinel request was never logged")


def http(app: AppServer, method: str, path: str, body: bytes | None = None) -> int:
    req = urllib.request.Request(app.url + path, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def assert_clean(text: str) -> None:
    found = [word for word in HOSTILE_WORDS if word in text]
    assert not found, f"hostile request text reached the log: {found}\n{text[-3000:]}"
    assert "Traceback" not in text


def test_it_logs_hostile_http_requests_without_their_text(app: AppServer) -> None:
    window = LogWindow(app)
    statuses = [
        http(app, "GET", "/api/runs/John%20Smith%20SSN%20123-45-6789/"),
        http(app, "GET", "/Jane%20Doe%20SSN%20123-45-6789"),
        http(app, "GET", "/api/auth/token/John%20Smith"),
        http(app, "GET", "/api/auth/token/"),
        http(app, "POST", "/api/auth/token/", b"{SSN 123-45-6789"),
    ]
    with socket.create_connection(("127.0.0.1", app.port), timeout=5) as sock:
        sock.sendall(b"GET /John%20Smith HTTP/1.1\r\nHost: SSN-123-45-6789.example\r\n\r\n")
        statuses.append(int(hostile.read_head(sock).split(b" ", 2)[1]))
    assert statuses == [401, 404, 404, 405, 400, 400]
    text = window.read()
    assert "Not Found: GET /<redacted>" in text
    assert_clean(text)


def test_it_refuses_unknown_socket_paths_plainly(app: AppServer) -> None:
    window = LogWindow(app)
    statuses = [
        hostile.handshake_status(app.port, f"/ws/John%20Smith%20SSN%20123-45-{i:04d}")
        for i in range(20)
    ]
    assert statuses == [403] * 20
    text = window.read()
    assert_clean(text)
    assert len(text.splitlines()) <= 20
    assert hostile.handshake_status(app.port, "/ws") == 101  # the real path still serves


def test_it_survives_a_frame_fuzz_with_at_most_one_line_per_socket(app: AppServer) -> None:
    window = LogWindow(app)
    rng = random.Random(20261201)
    frames = sockets = 0
    deadline = time.monotonic() + 120
    while frames < 2000 and time.monotonic() < deadline:
        sock = hostile.open_ws(app.port)
        sockets += 1
        try:
            for _ in range(rng.randrange(1, 20)):
                sock.sendall(hostile.frame(hostile.fuzz_payload(rng, 64 * 1024)))
                frames += 1
        except OSError:
            pass  # the server closed this one (1007, 1009): the next socket carries on
        finally:
            sock.close()
    assert frames >= 2000
    text = window.read()
    assert "Traceback" not in text and " ERROR " not in text
    assert len(text.splitlines()) <= sockets
    assert hostile.handshake_status(app.port, "/ws") == 101


def test_it_closes_handshakes_not_completed_in_time(app: AppServer) -> None:
    closed_after = hostile.slow_clients(
        app.port, trickling=20, silent=20, give_up=HANDSHAKE_TIMEOUT + 10, interval=0.2
    )
    still_open = sum(1 for t in closed_after if t is None)
    assert still_open == 0, f"{still_open} of 40 slow handshakes still open"
    assert max(t for t in closed_after if t is not None) <= HANDSHAKE_TIMEOUT + 3
    assert hostile.handshake_status(app.port, "/ws") == 101
