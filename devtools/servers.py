"""Real servers for end-to-end tests and benchmarks: redis-server, PostgreSQL, and the app itself
under daphne or uvicorn, each on a free loopback port, each stopped when the block ends.

    with RedisServer() as redis, AppServer(env={"REDIS_URL": redis.url}) as app:
        app.url  # http://127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/system-deps.sh installs it)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            _stop(self.proc)


class PostgresServer:
    """A throw-away cluster in a temp dir (initdb + pg_ctl), run as the `postgres` OS user
    when we are root, since PostgreSQL refuses to run as root.

    Tests want it fast (`durable=False`: no fsync, no synchronous commit); benchmarks want it
    as production runs it (`durable=True`: a commit's cost includes its WAL flush)."""

    def __init__(
        self, *, durable: bool = False, max_connections: int = 200, options: str = ""
    ) -> None:
        self.durable = durable
        self.max_connections = max_connections
        self.options = options  # more `-c name=value` server settings
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rf-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgres://rf:rf@127.0.0.1:{self.port}/researchflow"
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (scripts/system-deps.sh installs it)")
        self.bin = Path(bins[-1])
        self.version = self.bin.parent.name  # the PostgreSQL major version

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text("rf\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "rf",
            "--pwfile",
            str(pwfile),
            "-A",
            "md5",
            "--no-sync",
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
            + (
                ""
                if self.durable
                else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            )
            + f"-c max_connections={self.max_connections} {self.options}",
            "start",
        )
        env = dict(os.environ, PGPASSWORD="rf")
        subprocess.run(
            [
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "rf",
                "researchflow",
            ],
            check=True,
            env=env,
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            mode = "fast" if self.durable else "immediate"
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class AppServer:
    """The project under daphne or uvicorn, with its own database unless one is given."""

    def __init__(
        self,
        server: str = "daphne",
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        extra_args: list[str] | None = None,
        migrate: bool = True,
        seed: bool = True,
    ) -> None:
        self.server = server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.tmp = Path(tempfile.mkdtemp(prefix="rf-app-"))
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "researchflow.settings",
            "DEBUG": "1",
            "RESEARCHFLOW_VAR_DIR": str(self.tmp),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.env.setdefault("DATABASE_URL", f"sqlite:///{self.tmp / 'db.sqlite3'}")
        self.workers = workers
        self.extra_args = extra_args or []
        self.migrate = migrate
        self.seed = seed
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.tmp / "server.log"

    def manage(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def command(self) -> list[str]:
        """The server's command line (a benchmark variant overrides it)."""
        cmd = [PYTHON, "manage.py", "serve", "--server", self.server, "--port", str(self.port)]
        if self.workers != 1:
            cmd += ["--workers", str(self.workers)]
        return cmd + self.extra_args

    def start(self) -> AppServer:
        if self.migrate:
            self.manage("migrate", "--noinput")
        if self.seed:
            self.manage("seed_demo")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for_port(self.port, 30, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc is None:
            return 0
        code = _stop(self.proc, sig, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # uvicorn worker children, if any
        return code

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- REST helpers --------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Token {token}")
        with urllib.request.urlopen(req, timeout=15) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def event_ids(self, token: str, after: int = 0, **filters: str) -> list[int]:
        """Ids of the logged events the token's user may see after `after` and matching
        `filters` (`run=`, `project=`), in log order: every page of `GET /api/events/`."""
        ids: list[int] = []
        while True:
            query = urllib.parse.urlencode({**filters, "after": after, "limit": 1000})
            page = self.api("GET", f"/api/events/?{query}", token=token)
            ids += [event["id"] for event in page["results"]]
            if not page["next"]:
                return ids
            after = ids[-1]

    def token(self, username: str, password: str) -> str:
        return str(
            self.api("POST", "/api/auth/token/", {"username": username, "password": password})[
                "token"
            ]
        )


DEMO_PASSWORDS = {"admin": "admin-dev-pass", "alice": "alice-dev-pass", "bob": "bob-dev-pass"}
