"""Put the log hygiene filter on uvicorn's own log handlers.

uvicorn's access and WebSocket lines carry the request path, and it logs a client's invalid
UTF-8 frame with a traceback: researchflow.log_hygiene's filter rewrites those on uvicorn's
own handlers (which `uvicorn.run` configured before the app, and so Django's LOGGING, was
loaded), leaving their format and levels as they are.

What must stay true (tests/test_log_hygiene.py reads the source): uvicorn's messages have the
formats log_hygiene matches (UVICORN_ACCESS_FORMAT, UVICORN_WS_PREFIX, UVICORN_INVALID_UTF8),
logged through the "uvicorn", "uvicorn.error" and "uvicorn.access" loggers.
"""

from __future__ import annotations

import logging

from researchflow.log_hygiene import RequestTextFilter

from .versions import require

WRITTEN_FOR = {"uvicorn": "0.54.0"}
CHECKED_BY = "tests/test_log_hygiene.py"

LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def install() -> None:
    """Idempotent: a handler that has the filter already is left alone."""
    require(__name__, WRITTEN_FOR, CHECKED_BY)
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RequestTextFilter) for f in handler.filters):
                handler.addFilter(RequestTextFilter())
