"""Live servers for the client's end-to-end tests, one per module and server kind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.servers import AppServer

# Small enough that a revoked token closes its socket within a test's patience.
LIVE_ENV = {"WS_REAUTH_INTERVAL": "0.2", "WS_GAP_CHECK_INTERVAL": "0.2"}


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def app(request: pytest.FixtureRequest) -> Iterator[AppServer]:
    """The app under daphne, then under uvicorn: every test using it runs against both."""
    with AppServer(request.param, env=LIVE_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def daphne() -> Iterator[AppServer]:
    """One daphne server, for behaviour that does not depend on the server kind."""
    with AppServer("daphne", env=LIVE_ENV) as server:
        yield server
