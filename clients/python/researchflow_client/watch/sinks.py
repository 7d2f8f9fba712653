"""Where the watcher's output goes: a live terminal view, or one JSON object per line.

- `LiveView` (a terminal): notes printed as lines above a `rich.live.Live` area that holds the
  run's status and a bar per stage. The area is redrawn at most every `min_interval` seconds
  (a replayed history of thousands of progress events must not cost a redraw each), and
  `tick()` draws what a burst left undrawn; everything runs on the caller's thread (no
  auto-refresh thread reading the state while it changes). On a console that is not a
  terminal, rich prints only the final frame, which is what the tests check.
- `JsonLines` (`--json`, or stdout not a terminal): each event exactly as received, one
  compact JSON object per line, flushed per line so a pipe sees it at once; nothing else on
  stdout — warnings go to stderr.
"""

from __future__ import annotations

import json
import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..events import Event
from .state import Note, WatchState
from .view import note_line, watch_view


class Sink(Protocol):
    def start(self) -> None: ...
    def event(self, event: Event, notes: list[Note]) -> None: ...
    def warn(self, message: str) -> None: ...
    def tick(self) -> None: ...
    def close(self) -> None: ...


class JsonLines:
    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def start(self) -> None:
        pass

    def event(self, event: Event, notes: list[Note]) -> None:
        self.out.write(json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":")))
        self.out.write("\n")
        self.out.flush()

    def warn(self, message: str) -> None:
        self.err.write(f"researchflow watch: {message}\n")
        self.err.flush()

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self.out.flush()


class LiveView:
    def __init__(
        self,
        console: Console,
        state: WatchState,
        *,
        run_id: str | None,
        caption: str,
        min_interval: float = 0.1,
    ) -> None:
        self.console = console
        self.state = state
        self.run_id = run_id
        self.caption = caption
        self.min_interval = min_interval
        self._live = Live(
            console=console, auto_refresh=False, transient=False, redirect_stderr=False
        )
        self._dirty = True
        self._drawn_at = 0.0
        self._started = False

    def _footer(self) -> Text:
        last = self.state.last_event_id
        text = Text(f"{self.caption}", style="dim")
        if last is not None:
            text.append(f" · last event #{last} · {self.state.events_seen} events", style="dim")
        return text

    def _draw(self) -> None:
        self._live.update(
            watch_view(self.state, self.run_id, self._footer(), self.console.width), refresh=True
        )
        self._dirty = False
        self._drawn_at = time.monotonic()

    def start(self) -> None:
        if not self._started:  # idempotent: called again after each reconnect of the session
            self._started = True
            self._live.start()
            self._draw()

    def event(self, event: Event, notes: list[Note]) -> None:
        for note in notes:
            self._live.console.print(note_line(note, self.state, with_run=self.run_id is None))
        self._dirty = True
        if not self._started:
            return
        if notes or time.monotonic() - self._drawn_at >= self.min_interval:
            self._draw()

    def warn(self, message: str) -> None:
        self.console.print(Text(message, style="yellow"))
        if self._started:
            self._draw()

    def tick(self) -> None:
        if self._dirty and self._started:
            self._draw()

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        self._live.update(watch_view(self.state, self.run_id, self._footer(), self.console.width))
        self._live.stop()  # draws the final frame (on any console) and leaves it on screen
