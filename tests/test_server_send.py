"""The gateway's `_send_now` drives a server's ASGI `send` coroutine by hand and relies on it
finishing in one step (StopIteration on the first `send(None)`) while the transport is
writable. These run each server live, as `manage.py serve` configures it, with an app that
sends frames the same way (tests/one_step_send_app.py) and reports what happened."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import websockets

from devtools.servers import AppServer

pytestmark = pytest.mark.e2e


class ProbeServer(AppServer):
    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "tests.one_step_send_app"),
            *("--server", self.server, "--port", str(self.port)),
        ]


@pytest.fixture(params=["daphne", "uvicorn"])
def probe(request: pytest.FixtureRequest) -> Iterator[ProbeServer]:
    with ProbeServer(request.param, migrate=False, seed=False) as server:
        yield server


async def _ask(url: str, command: str) -> tuple[int, str]:
    """(frames before the report, the report)."""
    frames = 0
    async with websockets.connect(url, max_size=None) as client:
        await client.send(command)
        while True:
            message = await client.recv()
            assert isinstance(message, str)
            if not message.startswith(('{"type":"frame"', "xxxx")):
                return frames, message
            frames += 1


async def test_it_sends_a_frame_to_a_writable_transport_in_one_step(probe: ProbeServer) -> None:
    frames, report = await _ask(probe.ws_url, "burst 50")
    assert frames == 50
    assert report == "one-step 50/50", f"{probe.server}: {report} (log: {probe.log.read_text()})"


async def test_the_probe_sees_uvicorn_suspend_under_back_pressure() -> None:
    # The other side of the same contract: past the transport's high-water mark uvicorn's send
    # waits (and _send_now hands it to a writer task). daphne buffers without bound.
    with ProbeServer("uvicorn", migrate=False, seed=False) as server:
        frames, report = await _ask(server.ws_url, "flood 2000")
    assert report.startswith("suspended-at "), report
    assert frames == int(report.split()[1]) + 1  # the suspended frame was still delivered
