"""Log hygiene: no log line carries text a client chose, except ids in the project's format.

A request path is client text: `GET /api/runs/John%20Smith%20SSN%20123-45-6789/` made Django log
"Not Found: /api/runs/John Smith SSN 123-45-6789/", and uvicorn's access and WebSocket lines
carry the path and query string too. `RequestTextFilter` (installed on every handler in
`settings.LOGGING`) rewrites such records before any handler formats them:

- Django's request records (`django.request`, `django.security.*`: they carry `request` and
  `status_code`) become "<status> <reason>: <METHOD> <safe path>", without the exception's text
  or traceback below 500 (a DisallowedHost message quotes the Host header). A 5xx keeps its
  traceback: that is our failure, and the one place its cause is recorded.
- uvicorn's access lines and its `"WebSocket <path>"` lines get the safe path in place of the
  path (the query string is dropped).
- uvicorn's "Invalid UTF-8 sequence received from client." is logged with `logger.exception`
  (ERROR and a traceback) for a client's malformed frame; it becomes one WARNING line without
  a traceback. uvicorn has already closed that socket with 1007, so it is once per socket.

A safe path keeps a segment only if it is an id (`run_` + 20 base-36 characters, see
`runs.models.new_id`) or a literal segment of one of our own URL patterns (`api`, `runs`,
`members`...); anything else becomes `<redacted>`, runs of those collapse into one, and the
result is bounded. The method is kept only if it is a standard one.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from http import HTTPStatus
from typing import Any

REDACTED = "<redacted>"
MAX_SEGMENTS = 12
ID_RE = re.compile(r"(?:prj|run|stg|art|gov)_[0-9a-z]{20}")
_LITERAL_RE = re.compile(r"[A-Za-z0-9_.-]+")
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

# uvicorn's messages whose arguments carry a path (uvicorn 0.54; tests/test_log_hygiene.py
# reads uvicorn's source and fails if these formats change under us).
UVICORN_ACCESS_FORMAT = '%s - "%s %s HTTP/%s" %d'  # client, method, path?query, version, status
UVICORN_WS_PREFIX = '%s - "WebSocket %s"'  # client, path?query, then " 403", " [accepted]"...
UVICORN_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."


def safe_method(method: object) -> str:
    return method if isinstance(method, str) and method in METHODS else "OTHER"


def safe_path(path: object) -> str:
    """The path with every segment that is neither an id nor one of our route words redacted."""
    if not isinstance(path, str):
        return REDACTED
    path = path.split("?", 1)[0]
    words = _route_words()
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "" or ID_RE.fullmatch(segment) or segment in words:
            out.append(segment)
        elif not out or out[-1] != REDACTED:
            out.append(REDACTED)
        if len(out) >= MAX_SEGMENTS:
            out.append("…")
            break
    return "/" + "/".join(out)


@cache
def _route_words() -> frozenset[str]:
    """Literal segments of the project's URL patterns: our text, safe to log."""
    words = {"ws", "static", "events", "stream"}  # /ws, /static/, /events/stream (the SSE stream)
    try:
        from django.urls import get_resolver

        stack = list(get_resolver().url_patterns)
    except Exception:  # settings not configured (a bare server process): ids only
        return frozenset(words)
    while stack:
        entry = stack.pop()
        words.update(
            part
            for part in str(entry.pattern).strip("^$").split("/")
            if _LITERAL_RE.fullmatch(part)
        )
        stack.extend(getattr(entry, "url_patterns", ()))
    return frozenset(words)


class RequestTextFilter(logging.Filter):
    """Rewrites records that would carry request text (see the module docstring). Never drops
    a record: what happened is still logged, only in a safe form."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if request is not None and hasattr(request, "path"):
            self._django(record, request)
        elif record.name.startswith("uvicorn"):
            self._uvicorn(record)
        return True

    @staticmethod
    def _django(record: logging.LogRecord, request: Any) -> None:
        status = getattr(record, "status_code", None)
        try:
            reason = HTTPStatus(int(status)).phrase if status is not None else "Request"
        except ValueError:
            reason = "Response"
        label = record.name.rsplit(".", 1)[-1] if record.name.startswith("django.security.") else ""
        record.msg = "%s %s: %s %s" + (" (%s)" if label else "")
        record.args = (status, reason, safe_method(request.method), safe_path(request.path)) + (
            (label,) if label else ()
        )
        if status is None or int(status) < 500:
            record.exc_info = None
            record.exc_text = None

    @staticmethod
    def _uvicorn(record: logging.LogRecord) -> None:
        msg, args = record.msg, record.args
        if msg == UVICORN_INVALID_UTF8:
            record.msg = "ws: invalid UTF-8 in a text frame; the socket was closed with 1007"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = None
            record.exc_text = None
            return
        if not isinstance(msg, str) or not isinstance(args, tuple):
            return
        if msg == UVICORN_ACCESS_FORMAT and len(args) == 5:
            record.args = (args[0], safe_method(args[1]), safe_path(args[2]), *args[3:])
        elif msg.startswith(UVICORN_WS_PREFIX) and len(args) >= 2:
            record.args = (args[0], safe_path(args[1]), *args[2:])
