"""A throw-away PostgreSQL cluster for the benchmarks (initdb + pg_ctl in a temp dir, run as
the `postgres` OS user when we are root), durable by default: fsync and synchronous commit on,
as production runs, so a commit's cost includes its WAL flush.

    with BenchPostgres() as pg:
        pg.url  # postgres://rf:rf@127.0.0.1:PORT/researchflow
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchPostgres:
    def __init__(self, *, durable: bool = True, max_connections: int = 100) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed (scripts/system-deps.sh installs it)")
        self.bin = Path(bins[-1])
        self.version = self.bin.parent.name
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rf-benchpg-"))
        self.data = self.dir / "data"
        self.url = f"postgres://rf:rf@127.0.0.1:{self.port}/researchflow"
        self.durable = durable
        self.max_connections = max_connections

    def _run(self, *cmd: str, env: dict[str, str] | None = None) -> None:
        args = list(cmd)
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

    def __enter__(self) -> BenchPostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text("rf\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "rf", "--pwfile", str(pwfile),
            "-A", "md5", "--no-sync",
        )  # fmt: skip
        durability = "" if self.durable else "-c fsync=off -c synchronous_commit=off "
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 {durability}"
            f"-c max_connections={self.max_connections}",
            "start",
        )  # fmt: skip
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "rf",
             "researchflow"],
            check=True,
            env=dict(os.environ, PGPASSWORD="rf"),
        )  # fmt: skip
        return self

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
