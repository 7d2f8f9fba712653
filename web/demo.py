"""The staff "Start demo run" button: drive `run_demo` in a background daemon thread.

The runner talks to this same server over HTTP (like any outside worker would), so the events
it causes flow through the normal REST → signal → event log → socket path. It runs in a
thread rather than a subprocess because it only waits on HTTP (no CPU, no database), and a
daemon thread dies with the server instead of outliving it.
"""

from __future__ import annotations

import logging
import threading

from runs.demo import DemoError, run_demo

logger = logging.getLogger(__name__)

# A button press is cheap; a few dozen concurrent runners hammering the server is not.
MAX_CONCURRENT = 3
DEFAULT_PACE = 0.5

_lock = threading.Lock()
_running = 0


class TooManyDemoRuns(Exception):
    """MAX_CONCURRENT demo runners are already driving runs."""


def running() -> int:
    with _lock:
        return _running


def start_demo(
    base_url: str,
    token: str,
    *,
    project_id: str | None = None,
    pace: float = DEFAULT_PACE,
) -> threading.Thread:
    """Start one demo run in a daemon thread and return the (started) thread."""
    global _running
    with _lock:
        if _running >= MAX_CONCURRENT:
            raise TooManyDemoRuns(f"{MAX_CONCURRENT} demo runs are already in progress")
        _running += 1
    thread = threading.Thread(
        target=_drive,
        args=(base_url, token, project_id, pace),
        name="researchflow-demo-run",
        daemon=True,
    )
    try:
        thread.start()
    except BaseException:
        _release()
        raise
    return thread


def _release() -> None:
    global _running
    with _lock:
        _running -= 1


def _drive(base_url: str, token: str, project_id: str | None, pace: float) -> None:
    try:
        # Looked up at call time (module global), so tests can monkeypatch `web.demo.run_demo`.
        run_id = run_demo(base_url, token, project_id=project_id, pace=pace, log=_log_step)
        logger.info("demo run %s finished", run_id)
    except DemoError as exc:
        logger.warning("demo run stopped: %s", exc)
    except Exception:
        # A daemon thread's traceback would otherwise go to stderr without context.
        logger.exception("demo run crashed")
    finally:
        _release()


def _log_step(line: str) -> None:
    logger.info("demo: %s", line)
