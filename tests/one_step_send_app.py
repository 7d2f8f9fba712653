"""A probe ASGI app for tests/test_server_send.py: does a server's `send()` finish in one step?

The gateway's consumer drives the ASGI `send` coroutine by hand (`coro.send(None)`) and counts
on StopIteration when the transport is writable, so a frame costs no task. This app does the
same for each frame it is asked to send and reports how many finished in one step.

    python -m tests.one_step_send_app --server daphne|uvicorn --port P

It runs under the server the way `manage.py serve` does: the same uvicorn options, the
running server's patches installed (events.gateway.servers.install_for).

Messages: "burst N" -> N small frames, then "one-step K/N"; "flood N" -> up to N 64 KiB frames
until one suspends, then "suspended-at I" (or "never-suspended").
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Coroutine, Generator
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "researchflow.settings")
django.setup()

from events.gateway import servers  # noqa: E402

if __name__ != "__main__":  # loaded by the server, as researchflow.asgi is
    servers.install_for(servers.serving())


class _Rest:
    """Await the rest of a coroutine that was driven by hand and suspended."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro, self.yielded = coro, yielded

    def __await__(self) -> Generator[Any, Any, None]:
        yielded = self.yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # handed to the coroutine, as a task would
                try:
                    yielded = self.coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    yielded = self.coro.send(sent)
                except StopIteration:
                    return


async def _send_by_hand(send: Any, text: str) -> bool:
    """Send one frame as the consumer's `_send_now` does; True if it finished in one step."""
    coro = send({"type": "websocket.send", "text": text})
    try:
        yielded = coro.send(None)
    except StopIteration:
        return True
    await _Rest(coro, yielded)
    return False


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        command, count = message["text"].split()
        if command == "burst":
            one_step = 0
            for i in range(int(count)):
                one_step += await _send_by_hand(send, f'{{"type":"frame","n":{i}}}')
            await send({"type": "websocket.send", "text": f"one-step {one_step}/{count}"})
        elif command == "flood":
            report = "never-suspended"
            for i in range(int(count)):
                if not await _send_by_hand(send, "x" * 65_536):
                    report = f"suspended-at {i}"
                    break
            await send({"type": "websocket.send", "text": report})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=sorted(servers.PATCHES), required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.server == "daphne":
        from daphne.cli import CommandLineInterface

        app = "tests.one_step_send_app:application"
        CommandLineInterface().run(["-b", "127.0.0.1", "-p", str(args.port), "-v", "0", app])
        return
    import uvicorn

    from events.gateway.management.commands.serve import uvicorn_options

    servers.install_for("uvicorn")

    options = uvicorn_options(compression=False) | {"log_level": "error"}
    uvicorn.run(application, host="127.0.0.1", port=args.port, **options)


if __name__ == "__main__":
    main()
