"""`load_run` where the real app is not needed: the REST address derived from the socket's URL,
a scripted HTTP(S) server on loopback for the answers the app cannot be made to give (a
redirect, a 503, TLS with the caller's context), and nothing listening.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_socket_behaviour import self_signed
from test_watch_snapshot import snapshot

from devtools.servers import free_port
from researchflow_client import AuthFailed, ClientError, InvalidURL, ServerUnavailable, load_run
from researchflow_client.snapshot import api_url

TOKEN = "tok_" + "s3cr3t" * 6
RUN = snapshot().id
BODY = snapshot().model_dump_json(by_alias=True).encode()


@pytest.mark.parametrize(
    ("ws_url", "rest_url"),
    [
        ("ws://localhost:3001/ws", "http://localhost:3001/api/runs/run_1/"),
        ("wss://rf.example.org/ws", "https://rf.example.org/api/runs/run_1/"),
        (
            "wss://rf.example.org:8443/research/ws/",
            "https://rf.example.org:8443/research/api/runs/run_1/",
        ),
        ("ws://[::1]:3001/ws?client=cli", "http://[::1]:3001/api/runs/run_1/"),
    ],
)
def test_it_derives_the_rest_address_from_the_sockets_url(ws_url: str, rest_url: str) -> None:
    assert api_url(ws_url, "/api/runs/run_1/") == rest_url


@pytest.mark.parametrize("ws_url", ["ws://localhost:3001/", "ws://localhost:3001/socket"])
def test_it_refuses_a_socket_url_whose_path_does_not_end_in_ws(ws_url: str) -> None:
    with pytest.raises(InvalidURL, match="must end in /ws"):
        load_run(ws_url, token=TOKEN, run_id=RUN)


def test_with_nothing_listening_it_raises_server_unavailable() -> None:
    port = free_port()
    with pytest.raises(ServerUnavailable) as caught:
        load_run(f"ws://127.0.0.1:{port}/ws", token=TOKEN, run_id=RUN, timeout=5)
    assert caught.value.url == f"http://127.0.0.1:{port}/api/runs/{RUN}/"
    assert TOKEN not in str(caught.value)


class Scripted(ThreadingHTTPServer):
    """Answers every GET with `status`, `headers` and `body`; records each request's path and
    headers."""

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.answer = (status, body, headers or {})
        self.requests: list[tuple[str, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers)))
        status, body, headers = self.server.answer
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serving(server: Scripted) -> Iterator[Scripted]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def http(request: pytest.FixtureRequest) -> Iterator[Scripted]:
    yield from serving(Scripted(*request.param))


def url_of(server: Scripted, scheme: str = "ws", prefix: str = "") -> str:
    return f"{scheme}://localhost:{server.server_address[1]}{prefix}/ws"


@pytest.mark.parametrize("http", [(200, BODY)], indirect=True)
def test_it_sends_the_token_in_the_authorization_header_under_the_path_prefix(
    http: Scripted,
) -> None:
    run = load_run(url_of(http, prefix="/rf"), token=TOKEN, run_id=RUN)
    assert run == snapshot()
    [(path, headers)] = http.requests
    assert path == f"/rf/api/runs/{RUN}/"
    assert headers["Authorization"] == f"Token {TOKEN}"


@pytest.mark.parametrize(
    "http", [(302, b"", {"Location": "http://elsewhere.invalid/api/runs/x/"})], indirect=True
)
def test_it_does_not_follow_a_redirect_which_could_carry_the_token_elsewhere(
    http: Scripted,
) -> None:
    with pytest.raises(ClientError, match=r"HTTP 302.*not followed") as caught:
        load_run(url_of(http), token=TOKEN, run_id=RUN, timeout=5)
    assert len(http.requests) == 1
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "http", [(503, b'{"detail": "busy"}', {"Retry-After": "1"})], indirect=True
)
def test_a_server_error_is_server_unavailable(http: Scripted) -> None:
    with pytest.raises(ServerUnavailable, match="HTTP 503"):
        load_run(url_of(http), token=TOKEN, run_id=RUN)


@pytest.mark.parametrize("http", [(200, b'{"id": "run_1", "status": "running"}')], indirect=True)
def test_an_answer_that_is_not_a_run_is_a_client_error_naming_the_fields(http: Scripted) -> None:
    with pytest.raises(ClientError, match=r"not a run .*projectId: missing") as caught:
        load_run(url_of(http), token=TOKEN, run_id=RUN)
    assert not isinstance(caught.value, AuthFailed | ServerUnavailable)


def test_over_https_it_uses_the_given_ssl_context(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path)
    server = Scripted(200, BODY)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    for running in serving(server):
        assert load_run(url_of(running, "wss"), token=TOKEN, run_id=RUN, ssl=client_ctx).id == RUN
        # Without the context, the system's CAs do not trust this certificate.
        with pytest.raises(ServerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            load_run(url_of(running, "wss"), token=TOKEN, run_id=RUN)
