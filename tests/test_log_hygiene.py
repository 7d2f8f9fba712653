"""No log line carries request text a client chose (paths, methods, Host), only ids and our own
route words: researchflow/log_hygiene.py, on every handler of settings.LOGGING and uvicorn's."""

from __future__ import annotations

import inspect
import io
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.websockets import websockets_sansio_impl

from researchflow import log_hygiene
from researchflow.log_hygiene import RequestTextFilter, safe_path

HOSTILE_WORDS = ("John", "Smith", "SSN", "123-45-6789", "Jane", "BREW", "evil")
A_RUN_ID = "run_0123456789abcdefghij"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the project's console handler writes (after its filters), captured."""
    handlers = [
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, RequestTextFilter) for f in h.filters)
    ]
    assert handlers, "settings.LOGGING's console handler has no RequestTextFilter"
    out = io.StringIO()
    previous = [h.setStream(out) for h in handlers if isinstance(h, logging.StreamHandler)]
    try:
        yield out
    finally:
        for handler, stream in zip(handlers, previous, strict=False):
            if isinstance(handler, logging.StreamHandler) and stream is not None:
                handler.setStream(stream)


def assert_clean(text: str) -> None:
    found = [word for word in HOSTILE_WORDS if word in text]
    assert not found, f"hostile request text reached the log: {found}\n{text}"


@pytest.mark.django_db
def test_it_logs_a_404_for_a_hostile_api_path_without_the_path(
    world: Any, log_output: io.StringIO
) -> None:
    response = world.client(world.alice).get("/api/runs/John%20Smith%20SSN%20123-45-6789/")
    assert response.status_code == 404
    text = log_output.getvalue()
    assert "404 Not Found: GET /api/runs/<redacted>/" in text
    assert_clean(text)


@pytest.mark.django_db
def test_it_keeps_ids_in_the_projects_format(world: Any, log_output: io.StringIO) -> None:
    assert world.client(world.alice).get(f"/api/runs/{A_RUN_ID}/").status_code == 404
    assert f"GET /api/runs/{A_RUN_ID}/" in log_output.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/John%20Smith%20SSN%20123-45-6789", 404),
        ("GET", "/api/John%20Smith/SSN%20123-45-6789/", 404),
        ("PUT", "/api/runs/John%20Smith%20SSN%20123-45-6789/start/", 405),
        ("BREW", "/api/runs/", 405),
        ("POST", "/api/projects/Jane%20Doe%20SSN%20123-45-6789/members/", 404),
    ],
)
def test_it_logs_hostile_requests_without_their_text(
    world: Any, log_output: io.StringIO, method: str, path: str, status: int
) -> None:
    response = world.client(world.alice).generic(method, path, "{}", "application/json")
    assert response.status_code == status
    text = log_output.getvalue()
    assert f" {status} " in text or text.startswith(f"{status} ")
    assert_clean(text)


@pytest.mark.django_db
def test_it_logs_a_bad_request_without_the_body_or_path(
    world: Any, log_output: io.StringIO
) -> None:
    response = world.client(None).post(
        "/api/auth/token/", "{SSN 123-45-6789", content_type="application/json"
    )
    assert response.status_code == 400
    assert "400 Bad Request: POST /api/auth/token/" in log_output.getvalue()
    assert_clean(log_output.getvalue())


@pytest.mark.django_db
def test_it_logs_a_disallowed_host_without_the_host_or_a_traceback(
    client: Any, log_output: io.StringIO
) -> None:
    response = client.get("/John%20Smith/", HTTP_HOST="evil.John-Smith-SSN-123-45-6789.example")
    assert response.status_code == 400
    text = log_output.getvalue()
    assert "(DisallowedHost)" in text and "Traceback" not in text
    assert_clean(text)


def test_a_safe_path_keeps_ids_and_route_words_and_bounds_the_rest() -> None:
    assert safe_path(f"/api/runs/{A_RUN_ID}/start/") == f"/api/runs/{A_RUN_ID}/start/"
    assert safe_path("/api/runs/John Smith/x y/?q=SSN") == "/api/runs/<redacted>/"
    assert safe_path("/api/runs/run_short/") == "/api/runs/<redacted>/"
    long = safe_path("/api" * 1000)
    assert len(long) < 100 and long.endswith("…")


def _record(name: str, level: int, msg: str, args: tuple[Any, ...], exc: bool = False) -> Any:
    exc_info = None
    if exc:
        try:
            b"\xff".decode()
        except UnicodeDecodeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def _formatted(record: logging.LogRecord) -> str:
    assert RequestTextFilter().filter(record) is True  # rewritten, never dropped
    return logging.Formatter("%(levelname)s %(message)s").format(record)


def test_it_rewrites_uvicorns_access_lines() -> None:
    record = _record(
        "uvicorn.access",
        logging.INFO,
        log_hygiene.UVICORN_ACCESS_FORMAT,
        ("127.0.0.1:5000", "BREW", "/api/runs/John Smith?SSN=123-45-6789", "1.1", 404),
    )
    line = _formatted(record)
    assert line == 'INFO 127.0.0.1:5000 - "OTHER /api/runs/<redacted> HTTP/1.1" 404'


def test_it_rewrites_uvicorns_websocket_lines() -> None:
    record = _record(
        "uvicorn.error", logging.INFO, '%s - "WebSocket %s" 403', ("127.0.0.1:5000", "/ws/Jane")
    )
    assert _formatted(record) == 'INFO 127.0.0.1:5000 - "WebSocket /ws/<redacted>" 403'


def test_it_logs_invalid_utf8_as_one_warning_without_a_traceback() -> None:
    record = _record("uvicorn.error", logging.ERROR, log_hygiene.UVICORN_INVALID_UTF8, (), True)
    line = _formatted(record)
    assert line.startswith("WARNING ws: invalid UTF-8") and "\n" not in line


def test_uvicorn_still_logs_what_the_filter_expects() -> None:
    """The filter matches uvicorn 0.54's message formats; if an upgrade changes them, this
    fails (not the log hygiene, silently)."""
    http_source = inspect.getsource(httptools_impl)
    ws_source = inspect.getsource(websockets_sansio_impl)
    assert f"'{log_hygiene.UVICORN_ACCESS_FORMAT}'" in http_source
    assert f"'{log_hygiene.UVICORN_WS_PREFIX} 403'" in ws_source
    assert f'self.logger.exception("{log_hygiene.UVICORN_INVALID_UTF8}")' in ws_source


def test_uvicorns_handlers_carry_the_filter() -> None:
    from events.gateway.servers import uvicorn_logs

    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger("uvicorn.access").addHandler(handler)
    try:
        uvicorn_logs.install()
        assert any(isinstance(f, RequestTextFilter) for f in handler.filters)
    finally:
        logging.getLogger("uvicorn.access").removeHandler(handler)
