"""Regenerate docs/watcher.png: the terminal watcher on a real demo run, mid-run.

    .venv/bin/python -m devtools.watcher_screenshot [--out docs/watcher.png]

A daphne server of its own (`AppServer`), a demo run driven to its end over the REST API at a
human pace (`runs.demo.run_demo`, what `manage.py demo_run` does), then the watcher's own
session, state and view follow that run from the start through the real client and socket,
and stop at the moment the picture shows (the third stage at 60 %). The view is recorded by
rich (`Console(record=True)`), exported as SVG, and turned into a PNG by Debian's headless
Chromium through Playwright (nothing is downloaded: the same browser as the dashboard tests).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from devtools.servers import DEMO_PASSWORDS, ROOT, AppServer

sys.path.insert(0, str(ROOT / "clients" / "python"))  # this checkout's client package

from researchflow_client.events import Event
from researchflow_client.watch.session import Target, follow
from researchflow_client.watch.sinks import LiveView
from researchflow_client.watch.state import Note, WatchState
from runs.demo import run_demo

CHROMIUM = "/usr/bin/chromium"
WIDTH = 104  # terminal columns
STOP_STAGE, STOP_PERCENT = 2, 60  # the moment shown: the third stage at 60 %


class _Enough(Exception):
    """The picture's moment was reached."""


class StopAt(LiveView):
    """The watcher's live view, stopping the session once the moment is drawn."""

    def event(self, event: Event, notes: list[Note]) -> None:
        super().event(event, notes)
        for run in self.state.runs.values():
            stages = run.ordered_stages()
            if len(stages) > STOP_STAGE and stages[STOP_STAGE].progress >= STOP_PERCENT:
                raise _Enough


def record(app: AppServer, token: str, run_id: str) -> Console:
    console = Console(
        record=True, file=io.StringIO(), width=WIDTH, color_system="truecolor", force_jupyter=False
    )
    console.print(
        Text.assemble(
            ("$ ", "bold green"),
            f"python -m researchflow_client watch --run {run_id}",
        )
    )
    state = WatchState()
    view = StopAt(console, state, run_id=run_id, caption=f"run {run_id} on {app.ws_url}")

    async def session() -> None:
        try:
            await follow(Target(app.ws_url, token, run_id=run_id), state, view)
        except _Enough:
            pass
        finally:
            view.close()

    asyncio.run(session())
    return console


def to_png(svg: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    html = f"<html><body style='margin:0;background:#fff'>{svg}</body></html>"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1000, "height": 600}, device_scale_factor=2)
        page.set_content(html)
        page.locator("svg").first.screenshot(path=str(out))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "watcher.png")
    parser.add_argument("--svg", type=Path, default=None, help="also keep the SVG here")
    parser.add_argument("--pace", type=float, default=0.25, help="seconds between demo steps")
    args = parser.parse_args()
    with AppServer("daphne") as app:
        token = app.token("admin", DEMO_PASSWORDS["admin"])
        run_id = run_demo(app.url, token, pace=args.pace, log=lambda line: None)
        console = record(app, token, run_id)
    svg = console.export_svg(title="researchflow watch")
    if args.svg is not None:
        args.svg.write_text(svg, encoding="utf-8")
    to_png(svg, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
