"""`python -m researchflow_client watch` as a real subprocess, where no server is needed: usage
errors exit 2, nothing listening exits 4, and the token never comes from (or goes to) the
command line or the output. `Watcher` is also what the live tests drive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from devtools.servers import free_port

CLIENT_DIR = Path(__file__).resolve().parent.parent  # clients/python
SECRET = "tok_" + "s3cr3t" * 6


class Watcher:
    """The watcher in a subprocess; its stdout and stderr lines collected as they come."""

    def __init__(self, *args: str, token: str | None = SECRET, env: dict[str, str] | None = None):
        environ = {k: v for k, v in os.environ.items() if not k.startswith("RESEARCHFLOW_")}
        # This checkout's package, whatever the venv has installed (editable elsewhere).
        environ["PYTHONPATH"] = str(CLIENT_DIR)
        environ["PYTHONUNBUFFERED"] = "1"
        if token is not None:
            environ["RESEARCHFLOW_TOKEN"] = token
        environ.update(env or {})
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "researchflow_client", "watch", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=environ,
            text=True,
            encoding="utf-8",
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def wait_until(self, predicate: Callable[[Watcher], bool], limit: float = 20) -> None:
        deadline = time.monotonic() + limit
        while not predicate(self):
            if self.proc.poll() is not None:
                for reader in self._readers:
                    reader.join(5)
                if predicate(self):
                    return
                raise AssertionError(
                    f"the watcher exited with {self.proc.returncode} first; stderr: {self.err}"
                )
            assert time.monotonic() < deadline, f"stdout {self.out[-5:]}, stderr {self.err}"
            time.sleep(0.02)

    def finish(self, limit: float = 30) -> int:
        """Its exit code, once it exits by itself (and its output is all read)."""
        try:
            code = self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                f"the watcher did not exit within {limit}s; stdout {self.out[-5:]}, "
                f"stderr {self.err}"
            ) from None
        for reader in self._readers:
            reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def watch(*args: str, limit: float = 30, **kwargs: object) -> Watcher:
    """Run the watcher to its end; the finished Watcher (`.code`, `.out`, `.err`)."""
    watcher = Watcher(*args, **kwargs)  # type: ignore[arg-type]
    watcher.code = watcher.finish(limit)  # type: ignore[attr-defined]
    return watcher


def no_secret(lines: Sequence[str]) -> bool:
    return not any(SECRET in line for line in lines)


# --- usage errors: 2 -------------------------------------------------------------------------


def test_it_exits_2_without_a_token() -> None:
    w = watch("--run", "run_x", "--url", "ws://127.0.0.1:9/ws", token=None)
    assert w.code == 2
    assert w.out == []
    assert w.err == [
        "researchflow watch: error: no token: set RESEARCHFLOW_TOKEN or pass --token-file "
        "(get one with POST /api/auth/token/)"
    ]


def test_it_exits_2_for_a_url_that_is_not_a_websocket_url() -> None:
    w = watch("--run", "run_x", "--url", "http://localhost:3001/")
    assert w.code == 2
    assert "the scheme must be ws:// or wss://" in w.err[-1]
    assert no_secret(w.err)


def test_it_exits_2_for_a_token_in_the_url() -> None:
    w = watch("--run", "run_x", "--url", f"ws://localhost:3001/ws?token={SECRET}")
    assert w.code == 2
    assert "a token does not belong in the URL" in w.err[-1]


def test_it_exits_2_without_a_run_or_a_project() -> None:
    w = watch("--url", "ws://127.0.0.1:9/ws")
    assert w.code == 2
    assert "one of the arguments --run --project is required" in w.err[-1]


def test_it_exits_2_for_an_unreadable_token_file(tmp_path: Path) -> None:
    w = watch("--run", "run_x", "--token-file", str(tmp_path / "missing"), token=None)
    assert w.code == 2
    assert w.err[-1].endswith("No such file or directory")


def test_it_reads_the_token_file_and_warns_when_others_may_read_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    token_file.chmod(0o644)
    port = free_port()
    w = watch(
        "--run",
        "run_x",
        "--url",
        f"ws://127.0.0.1:{port}/ws",
        "--token-file",
        str(token_file),
        "--max-retries",
        "0",
        token=None,
    )
    assert w.code == 4  # it got past the token, to the (absent) server
    assert f"{token_file} is readable by other users; chmod 600 it" in w.err[0]
    assert no_secret(w.err)


@pytest.mark.parametrize("given", [["--token", SECRET], [f"--token={SECRET}"]])
def test_it_refuses_a_token_argument_without_echoing_it(given: list[str]) -> None:
    w = watch("--run", "run_x", *given)
    assert w.code == 2
    assert w.err[-1].endswith(
        "--token is not accepted: a command line is visible to other users; "
        "set RESEARCHFLOW_TOKEN or use --token-file"
    )
    assert no_secret(w.err)


@pytest.mark.parametrize("given", [["--tok", SECRET], [f"--tokn={SECRET}"]])
def test_it_names_an_unknown_option_without_echoing_its_value(given: list[str]) -> None:
    w = watch("--run", "run_x", *given)
    assert w.code == 2
    assert "unrecognized arguments: --tok" in w.err[-1]
    assert no_secret(w.err)


# --- nothing listening: 4 --------------------------------------------------------------------


def test_it_exits_4_after_its_retries_when_nothing_listens() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    started = time.monotonic()
    w = watch("--run", "run_x", "--url", url, "--max-retries", "2", "--retry-delay", "0.05")
    assert w.code == 4
    assert time.monotonic() - started < 20
    assert w.out == []
    retries = [line for line in w.err if "reconnecting in" in line]
    assert [("retry 1 of 2" in retries[0]), ("retry 2 of 2" in retries[1])] == [True, True]
    assert w.err[-1].startswith(
        f"researchflow watch: error: cannot reach the ResearchFlow server at {url} after 3"
    )
    assert no_secret(w.err)


def test_its_url_defaults_from_the_environment() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    w = watch("--run", "run_x", "--max-retries", "0", env={"RESEARCHFLOW_WS_URL": url})
    assert w.code == 4
    assert url in w.err[-1]


@pytest.mark.parametrize("flag", ["--help"])
def test_its_help_lists_the_exit_codes(flag: str) -> None:
    w = watch(flag)
    assert w.code == 0
    text = "\n".join(w.out)
    for line in ("0    the run completed", "1    the run failed", "130  interrupted"):
        assert line in text
    assert "RESEARCHFLOW_TOKEN" in text
