"""Bench-only: the project's ASGI app served by uvicorn with proposed changes switched on one
at a time, so bench/fanout.py can measure what each is worth before anyone edits the project.
Not used by the project; the real entry point stays `manage.py serve`. Each switch below is
off unless given, so the variant without switches is the project as it serves; a switch the
project has since adopted is a no-op (docs/benchmarks.md has what each was worth when tried).

    python bench/_variant_server.py --port P [--no-session-send-wrapper] [--ws websockets-sansio]

--no-session-send-wrapper: the websocket stack as in researchflow/asgi.py, but channels'
  SessionMiddleware does not wrap `send` for WebSocket scopes. Its wrapper only ever acts on
  `http.response.start` (session save and cookie), yet it runs on every `websocket.send`
  (two LazyObject lookups and `is_empty()` per frame).
--ws: uvicorn's WebSocket implementation (default "websockets-sansio", as `serve.py` runs;
  "websockets" is the legacy one).
--gc-freeze: move start-up objects out of the cyclic GC's reach and collect less often.
--plain-settings: the consumer reads settings from a plain namespace (no LazyObject per read).
--persistent-db: keep SQLite connections open (CONN_MAX_AGE=None).
--tracemalloc: diagnostics for bench/connections.py --tracemalloc (per-socket memory by line).
Every other uvicorn option is the one `manage.py serve --server uvicorn` uses.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "researchflow.settings")


def build_app(no_session_send_wrapper: bool) -> Any:
    from researchflow.asgi import application, django_asgi_app

    if not no_session_send_wrapper:
        return application
    from channels.routing import ProtocolTypeRouter, URLRouter

    from events.gateway.routing import websocket_urlpatterns
    from events.gateway.security import socket_auth_stack

    # The project's own stack (events.gateway.security.socket_auth_stack) has no such wrapper:
    # the switch measures nothing new and stays so that recorded commands still run.
    socket_stack = socket_auth_stack(URLRouter(websocket_urlpatterns))
    return ProtocolTypeRouter({"http": django_asgi_app, "websocket": socket_stack})


def install_tracemalloc() -> None:
    """A watcher thread (uvloop keeps Python signal handlers from running): touching
    /tmp/rf-bench-tracemalloc-<pid>.trigger once takes the baseline, twice writes the growth
    by line to /tmp/rf-bench-tracemalloc-<pid>.txt."""
    import threading
    import time
    import tracemalloc

    tracemalloc.start(4)
    trigger = Path(f"/tmp/rf-bench-tracemalloc-{os.getpid()}.trigger")
    out = Path(f"/tmp/rf-bench-tracemalloc-{os.getpid()}.txt")

    def snapshot() -> Any:
        return tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )

    def watch() -> None:
        base = None
        for _ in range(36_000):  # bounded: an hour at most
            time.sleep(0.1)
            if not trigger.exists():
                continue
            trigger.unlink()
            if base is None:
                base = snapshot()
                continue
            snap = snapshot()
            lines = []
            for key in ("lineno", "traceback"):
                stats = snap.compare_to(base, key)[: 25 if key == "lineno" else 6]
                lines.append(f"== growth by {key} ==")
                for stat in stats:
                    head = f"{stat.size_diff / 1024:10.1f} KiB {stat.count_diff:8d} blocks"
                    if key == "lineno":
                        lines.append(f"{head}  {stat.traceback[0]}")
                    else:
                        lines.append(head)
                        lines += [f"      {frame}" for frame in stat.traceback]
            out.write_text("\n".join(lines) + "\n")
            return

    threading.Thread(target=watch, name="tracemalloc-watch", daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", default="websockets-sansio")  # as serve.py runs
    parser.add_argument("--no-session-send-wrapper", action="store_true")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after start-up and a larger gen-0 threshold (fewer, shorter pauses)",
    )
    parser.add_argument(
        "--plain-settings",
        action="store_true",
        help="events.gateway.consumer reads a plain snapshot of settings, not LazySettings",
    )
    parser.add_argument(
        "--persistent-db",
        action="store_true",
        help="CONN_MAX_AGE=None for SQLite (settings.py gives it 0: a new connection per call)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace allocations (see install_tracemalloc)",
    )
    args = parser.parse_args()
    if args.tracemalloc:
        install_tracemalloc()
    import uvicorn
    from django.conf import settings

    app = build_app(args.no_session_send_wrapper)
    if args.plain_settings:
        import types

        import events.gateway.consumer as consumers

        # Django's `settings` is a LazyObject: every attribute read runs a Python-level
        # __getattribute__; _enqueue reads WS_SEND_QUEUE once per delivery.
        consumers.settings = types.SimpleNamespace(  # type: ignore[assignment]
            **{name: getattr(settings, name) for name in dir(settings) if name.isupper()}
        )
    if args.persistent_db:
        settings.DATABASES["default"]["CONN_MAX_AGE"] = None  # before any connection exists
    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()  # Django, DRF, pydantic models...: never scanned again
        gc.set_threshold(50_000, 20, 100)
    from events.gateway.management.commands.serve import uvicorn_options

    options = uvicorn_options(compression=False) | {"ws": args.ws}
    uvicorn.run(app, host="127.0.0.1", port=args.port, **options)


if __name__ == "__main__":
    main()
