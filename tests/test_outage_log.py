"""Channel-layer failures: one warning when a run of failures starts, one when it ends, the
rest counted (events/gateway/transport.py's Outage)."""

from __future__ import annotations

import logging
from typing import Any

from events.gateway.transport import Outage
from tests.ws_helpers import metric

SERIES = "researchflow_channel_layer_errors_total"


def test_it_logs_a_run_of_failures_once_and_its_recovery_once(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="events.gateway.transport")
    before = metric(SERIES, {"op": "send"})
    outage = Outage("event hub", "send")
    for _ in range(50):
        outage.failed(ConnectionError("down"))
    outage.succeeded()
    outage.succeeded()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "send failing (ConnectionError)" in messages[0]
    assert "recovered after 50 failed attempt(s)" in messages[1]
    assert all(r.exc_info is None for r in caplog.records)
    assert metric(SERIES, {"op": "send"}) == before + 50


def test_it_adds_the_traceback_only_with_debug_logging(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="events.gateway.transport")
    outage = Outage("event hub", "send")
    outage.failed(ConnectionError("down"))
    assert caplog.records[0].exc_info is not None
