"""Shared pieces of the benchmarks: process helpers (/proc), the gateway under test, a fast
WebSocket client (websockets' sans-I/O protocol for the handshake; a minimal frame reader for
the hot path) and the client worker process driven over a pipe.

Loopback only. Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.servers import AppServer, RedisServer, free_port, wait_for_port  # noqa: E402

__all__ = ["AppServer", "RedisServer"]  # re-exported for the bench scripts

PYTHON = sys.executable
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
SERVER_CORE = CORES[0]
CLIENT_CORE = CORES[-1]  # the same core as the server on a 1-core box (then say so)

# ------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin(pid: int, cores: set[int] | list[int] | int) -> None:
    """Pin every thread of `pid` (threads started later inherit it)."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = {cores} if isinstance(cores, int) else set(cores)
    tasks = Path(f"/proc/{pid}/task")
    tids = [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cores)


def pin_tree(pid: int, cores: set[int] | int) -> None:
    """Pin a process and its children (uvicorn --workers, daphne has none)."""
    pin(pid, cores)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pin_tree(int(child), cores)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def io_wchar(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "usable_cores": CORES,
        "cpu": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def pct(values: list[float] | array, p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def emit_json(name: str, data: dict[str, Any]) -> None:
    """The machine-readable line: one per benchmark run, prefixed so it can be grepped."""
    print("BENCH_JSON " + json.dumps({"bench": name, **data}, sort_keys=True), flush=True)


# ------------------------------------------------------------------------------------------
# the gateway under test
# ------------------------------------------------------------------------------------------

BENCH_ENV = {
    # Production shape: DEBUG off (no query log), a fixed throw-away key, loopback hosts.
    "DEBUG": "0",
    "SECRET_KEY": "bench-only-not-secret-" + "x" * 32,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "WS_MAX_CONNECTIONS_PER_USER": "0",
    "LOG_LEVEL": "WARNING",
    "DEMO_PASSWORD": "bench-pass-123",
    # Idle sockets in the connection bench must outlive the default heartbeat / auth timers.
    "WS_HEARTBEAT_TIMEOUT": "600",
    "WS_AUTH_TIMEOUT": "600",
}


# Bench-only experiments (bench/_variant_server.py): uvicorn with one proposed fix each.
VARIANTS: dict[str, list[str]] = {
    "uv-nosess": ["--no-session-send-wrapper"],
    "uv-sansio": ["--ws", "websockets-sansio"],
    "uv-gc": ["--gc-freeze"],
    "uv-set": ["--plain-settings"],
    "uv-db": ["--persistent-db"],
    "uv-best": [
        "--no-session-send-wrapper",
        "--ws",
        "websockets-sansio",
        "--gc-freeze",
        "--plain-settings",
        "--persistent-db",
    ],
    "uv-legacy": ["--ws", "websockets"],
    "uv-tm": ["--tracemalloc"],
}


class _VariantApp(AppServer):
    def __init__(self, variant_args: list[str], **kwargs: Any) -> None:
        super().__init__("uvicorn", **kwargs)
        self.variant_args = variant_args

    def command(self) -> list[str]:
        return [
            PYTHON,
            str(ROOT / "bench" / "_variant_server.py"),
            "--port",
            str(self.port),
            *self.variant_args,
        ]


class Gateway:
    """The project's server (daphne or uvicorn, or a VARIANTS experiment) pinned to one core,
    with seed data."""

    def __init__(
        self,
        server: str,
        *,
        redis_url: str | None = None,
        compression: bool = False,
        env: dict[str, str] | None = None,
        core: int = SERVER_CORE,
    ) -> None:
        full_env = dict(BENCH_ENV)
        if redis_url:
            full_env["REDIS_URL"] = redis_url
        full_env.update(env or {})
        if server in VARIANTS:
            self.app: AppServer = _VariantApp(
                VARIANTS[server], env=full_env, migrate=False, seed=False
            )
        else:
            self.app = AppServer(
                server,
                env=full_env,
                migrate=False,
                seed=False,
                extra_args=["--compression"] if compression else [],
            )
        self.core = core
        self.pid = 0
        self.token = ""
        self.project_id = ""
        self.run_id = ""

    def __enter__(self) -> Gateway:
        self.app.manage("migrate", "--noinput")
        self.app.manage("seed_demo", "--force")
        out = self.app.manage(
            "shell",
            "-c",
            "from runs.models import Project, Run;"
            "p = Project.objects.get(name='Demo project');"
            "print(p.pk, Run.objects.filter(project=p).order_by('created_at').first().pk)",
        )
        self.project_id, self.run_id = out.split()[-2:]
        self.app.start()
        self.pid = self.app.proc.pid if self.app.proc else 0
        pin_tree(self.pid, self.core)
        self.token = self.app.token("alice", BENCH_ENV["DEMO_PASSWORD"])
        return self

    def __exit__(self, *exc: Any) -> None:
        self.app.__exit__(*exc)

    @property
    def host_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.app.port

    @property
    def env(self) -> dict[str, str]:
        return dict(self.app.env)

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.app.log.read_text()[-n:]
        return ""


class BareServer:
    """bench/bare_server.py: the floor (websockets.broadcast of a pre-encoded frame)."""

    def __init__(self, core: int = SERVER_CORE, *, ping_interval: float | None = None) -> None:
        self.port = free_port()
        self.core = core
        self.ping_interval = ping_interval
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.token = "bare"
        self.project_id = "prj_" + "b" * 20
        self.run_id = "run_" + "b" * 20

    def __enter__(self) -> BareServer:
        self.proc = subprocess.Popen(
            [
                PYTHON,
                str(ROOT / "bench" / "bare_server.py"),
                "--port",
                str(self.port),
                *(
                    ["--ping-interval", str(self.ping_interval)]
                    if self.ping_interval is not None
                    else []
                ),
            ],
            cwd=ROOT,
            start_new_session=True,
        )
        wait_for_port(self.port, 20, self.proc)
        self.pid = self.proc.pid
        pin(self.pid, self.core)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @property
    def host_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port


class Publisher:
    """bench/_publisher.py in its own process: publishes through the real EventBus (Django,
    same SQLite file, Redis layer) or triggers the bare server; driven by stdin lines."""

    def __init__(
        self,
        target: Gateway | BareServer,
        core: int = CLIENT_CORE,
        *,
        exiting: bool = False,
        stages: int = 0,
    ) -> None:
        self.target = target
        self.core = core
        self.stages = stages  # report progress on this many real stages (bench/_publisher.py)
        self.exiting = exiting  # publishes one burst, then exits (bench/_publisher.py)
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Publisher:
        if isinstance(self.target, Gateway):
            env = self.target.env
            args = ["--project", self.target.project_id, "--run", self.target.run_id]
            if self.exiting:
                args.append("--exit-after-burst")
            if self.stages:
                args += ["--stages", str(self.stages)]
        else:
            env = dict(os.environ)
            args = ["--bare", f"ws://127.0.0.1:{self.target.port}/ws"]
        self.proc = subprocess.Popen(
            [PYTHON, str(ROOT / "bench" / "_publisher.py"), *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        pin(self.proc.pid, self.core)
        ready = self._read(60)
        assert ready.get("ready"), ready
        return self

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("publisher exited")
                if line.startswith("{"):
                    return dict(json.loads(line))
        raise TimeoutError("publisher did not answer")

    def command(self, line: str, timeout: float = 120) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def burst(self, n: int) -> dict[str, Any]:
        return self.command(f"burst {n}")

    def rate(self, per_second: float, seconds: float) -> dict[str, Any]:
        return self.command(f"rate {per_second} {seconds}", timeout=seconds + 120)

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            if not self.exiting:
                with contextlib.suppress(Exception):
                    self.command("quit", timeout=10)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Profiler:
    """py-spy (pip install --target /tmp/pyspy py-spy; or PY_SPY=path) sampling a server while
    it works; on stop prints the top functions and lines by own time ("self") and by
    inclusive time. Sampling is non-blocking, so it barely disturbs the server."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        import shutil

        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        binary = os.environ.get("PY_SPY") or shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy"
        self.proc: subprocess.Popen[bytes] | None = None
        if not Path(binary).exists():
            print(f"  (no py-spy at {binary}: not profiling)", flush=True)
            return
        env = dict(os.environ, PYTHONPATH="/tmp/pyspy")
        self.proc = subprocess.Popen(
            [
                binary,
                "record",
                "-p",
                str(pid),
                "-r",
                str(rate),
                "-f",
                "raw",
                "--nonblocking",
                "-o",
                str(out),
                "-d",
                "600",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        time.sleep(1.0)

    def stop(self, top: int = 25) -> None:
        import signal

        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.out.exists():
            print(summarise_collapsed(self.out, top), flush=True)


def summarise_collapsed(path: Path, top: int = 25) -> str:
    """Own-time and inclusive-time tables from py-spy's collapsed stacks (`-f raw -l`)."""
    import re
    from collections import Counter

    own: Counter[str] = Counter()
    own_fn: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    strip_line = re.compile(r":\d+\)$")
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        total += n
        if frames:
            own[_short(frames[-1])] += n
            own_fn[strip_line.sub(")", _short(frames[-1]))] += n
        for f in {strip_line.sub(")", _short(f)) for f in frames}:
            incl[f] += n
    lines = [f"  profile {path} ({total} samples); top own time by line:"]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append("  top own time by function:")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in own_fn.most_common(top)]
    lines.append("  top inclusive time by function:")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    frame = frame.replace(str(ROOT) + "/", "")
    frame = frame.replace(str(ROOT / ".venv/lib/python3.11/site-packages") + "/", "")
    return frame.replace("/root/.pyenv/versions/3.11.7/lib/python3.11/", "")


# ------------------------------------------------------------------------------------------
# the client
# ------------------------------------------------------------------------------------------

EVENT_TYPE = "stage.progress"
CATEGORIES = ["STAGE_EVENTS"]


class Stats:
    """Per client-process tallies for the current measurement window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.latencies = array("d")
        self.last_recv = 0.0
        self.first_recv = 0.0
        self.frames = 0
        self.bytes = 0


class ClientConn(asyncio.Protocol):
    """One socket: websockets' sans-I/O ClientProtocol for the handshake and control frames;
    after `auth.success` (when no event can be in flight yet and the library's buffer is empty)
    a minimal reader for unmasked, unfragmented, uncompressed server frames takes over, so
    client parsing costs ~2 µs per frame rather than the library's ~10 µs and the client core
    keeps up with the server core. With compression negotiated the library stays in charge
    (it inflates)."""

    def __init__(self, owner: ClientPool, index: int) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.owner = owner
        self.index = index
        extensions = None
        if owner.compression:
            from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

            extensions = [ClientPerMessageDeflateFactory(client_max_window_bits=True)]
        self.proto = ClientProtocol(parse_uri(owner.url), extensions=extensions, max_size=2**20)
        self.transport: asyncio.Transport | None = None
        self.fast = False
        self.buf = bytearray()
        self.established: asyncio.Future[float] = owner.loop.create_future()
        self.authed: asyncio.Future[float] = owner.loop.create_future()
        self.closed = False
        self.last_id = 0
        self.ids: list[int] = []
        self.dups = 0
        self.deflate = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is no asyncio.Transport subclass, hence no isinstance check
        self.transport = transport  # type: ignore[assignment]
        self.proto.send_request(self.proto.connect())
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.owner.open.discard(self)
        for fut in (self.established, self.authed):
            if not fut.done():
                fut.set_exception(ConnectionError("closed before ready"))

    def data_received(self, data: bytes) -> None:
        stats = self.owner.stats
        now = time.time()
        stats.bytes += len(data)
        stats.last_recv = now
        if self.fast:
            self._fast(data, now)
            return
        from websockets.frames import Opcode
        from websockets.http11 import Response

        self.proto.receive_data(data)
        for ev in self.proto.events_received():
            if isinstance(ev, Response):
                if ev.status_code != 101:
                    self.transport.close()  # type: ignore[union-attr]
                    return
                self.deflate = any(
                    "permessage-deflate" in v
                    for v in ev.headers.get_all("Sec-WebSocket-Extensions")
                )
            elif ev.opcode is Opcode.TEXT:
                self._text(ev.data, now)
        self._flush()
        if (
            not self.fast
            and self.authed.done()
            and not self.deflate
            and not self.owner.compression
            and not self.proto.reader.buffer
        ):
            self.fast = True

    def _flush(self) -> None:
        out = self.proto.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def _fast(self, data: bytes, now: float) -> None:
        if self.buf:
            self.buf += data
            data = bytes(self.buf)
            self.buf.clear()
        view = memoryview(data)
        pos, n = 0, len(data)
        while n - pos >= 2:
            b0 = data[pos]
            ln = data[pos + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hdr = 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hdr = 10
            end = pos + hdr + ln
            if end > n:
                break
            op = b0 & 0x0F
            if op == 1 and b0 & 0xF0 == 0x80:
                self._text(view[pos + hdr : end], now)
            elif op == 9:  # ping: answer with a masked pong
                self._pong(bytes(view[pos + hdr : end]))
            elif op == 8:
                self.closed = True
            else:
                self.owner.odd_frames += 1
            pos = end
        if pos < n:
            self.buf += view[pos:]

    def _pong(self, payload: bytes) -> None:
        from websockets.frames import Frame, Opcode

        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(Frame(Opcode.PONG, payload).serialize(mask=True))

    def _text(self, raw: Any, now: float) -> None:
        import orjson

        msg = orjson.loads(raw)
        event_id = msg.get("id")
        if event_id is not None:
            stats = self.owner.stats
            stats.frames += 1
            if not stats.first_recv:
                stats.first_recv = now
            if event_id <= self.last_id:
                self.dups += 1
            else:
                self.last_id = event_id
            self.ids.append(event_id)
            sent = msg["payload"].get("itemsProcessed")
            if sent:
                stats.latencies.append(now - sent / 1e6)
            return
        kind = msg.get("type")
        if kind == "connection.established":
            if not self.established.done():
                self.established.set_result(now)
        elif kind == "auth.success":
            if not self.authed.done():
                self.authed.set_result(now)
        elif kind in ("auth.failed", "error"):
            self.owner.errors.append(str(msg.get("payload"))[:200])
            if not self.authed.done():
                self.authed.set_exception(RuntimeError(f"{kind}: {msg.get('payload')}"))

    def send_text(self, text: str) -> None:
        if self.fast:
            from websockets.frames import Frame, Opcode

            assert self.transport is not None
            self.transport.write(Frame(Opcode.TEXT, text.encode()).serialize(mask=True))
        else:
            self.proto.send_text(text.encode())
            self._flush()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def recv_from(pipe: Any, timeout: float) -> Any:
    """One answer from a client process, or TimeoutError (a bench never waits unbounded)."""
    if not pipe.poll(timeout):
        raise TimeoutError("client process did not answer")
    return pipe.recv()


def ask_all(pipes: list[Any], cmd: tuple[Any, ...], timeout: float) -> list[Any]:
    """Send `cmd` to every client process, then collect their answers in order."""
    for pipe in pipes:
        pipe.send(cmd)
    return [recv_from(pipe, timeout) for pipe in pipes]


class ClientPool:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, token: str, compression: bool
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.url = f"ws://{host}:{port}/ws"
        self.token = token
        self.compression = compression
        self.clients: list[ClientConn] = []
        self.open: set[ClientConn] = set()
        self.stats = Stats()
        self.errors: list[str] = []
        self.odd_frames = 0
        self.auth_extra: dict[str, Any] = {}  # more `auth` fields, e.g. {"projectId": …}

    async def open_many(
        self,
        n: int,
        concurrency: int,
        timeout: float,  # noqa: ASYNC109 (a deadline for many sockets, not one await)
        auth: bool = True,
    ) -> dict[str, Any]:
        sem = asyncio.Semaphore(concurrency)
        auth_msg = json.dumps(
            {
                "type": "auth",
                "payload": {"token": self.token, "eventCategories": CATEGORIES, **self.auth_extra},
            }
        )
        est_times: list[float] = []
        auth_times: list[float] = []
        failures: list[str] = []
        deadline = time.monotonic() + timeout

        async def one(i: int) -> None:
            async with sem:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    failures.append("deadline")
                    return
                t0 = time.time()
                conn: ClientConn | None = None
                try:
                    _t, conn = await asyncio.wait_for(
                        self.loop.create_connection(
                            lambda: ClientConn(self, i), self.host, self.port
                        ),
                        remaining,
                    )
                    self.clients.append(conn)
                    self.open.add(conn)
                    t_est = await asyncio.wait_for(conn.established, remaining)
                    est_times.append(t_est - t0)
                    if auth:
                        conn.send_text(auth_msg)
                        t_auth = await asyncio.wait_for(
                            conn.authed, max(0.1, deadline - time.monotonic())
                        )
                        auth_times.append(t_auth - t_est)
                except Exception as exc:
                    failures.append(type(exc).__name__ + ": " + str(exc)[:100])
                    if conn is not None:
                        conn.close()

        t0 = time.time()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.time() - t0
        return {
            "requested": n,
            "established": len(est_times),
            "authed": len(auth_times) if auth else None,
            "failed": len(failures),
            "failures_sample": sorted(set(failures))[:5],
            "elapsed_s": elapsed,
            "handshake_p50_ms": pct(est_times, 50) * 1000 if est_times else None,
            "handshake_p99_ms": pct(est_times, 99) * 1000 if est_times else None,
            "auth_p50_ms": pct(auth_times, 50) * 1000 if auth_times else None,
        }

    async def auth_all(self, concurrency: int, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        """Authenticate every open, not yet authenticated socket; `concurrency` in flight."""
        sem = asyncio.Semaphore(concurrency)
        auth_msg = json.dumps(
            {
                "type": "auth",
                "payload": {"token": self.token, "eventCategories": CATEGORIES, **self.auth_extra},
            }
        )
        done: list[float] = []
        failures: list[str] = []
        deadline = time.monotonic() + timeout

        async def one(conn: ClientConn) -> None:
            async with sem:
                t0 = time.time()
                try:
                    conn.send_text(auth_msg)
                    t = await asyncio.wait_for(conn.authed, max(0.1, deadline - time.monotonic()))
                    done.append(t - t0)
                except Exception as exc:
                    failures.append(type(exc).__name__ + ": " + str(exc)[:100])

        t0 = time.time()
        await asyncio.gather(
            *(one(c) for c in self.clients if not c.closed and not c.authed.done())
        )
        return {
            "authed": len(done),
            "failed": len(failures),
            "failures_sample": sorted(set(failures))[:5],
            "elapsed_s": time.time() - t0,
            "auth_p50_ms": pct(done, 50) * 1000 if done else None,
        }

    def arm(self) -> None:
        self.stats.reset()
        for c in self.clients:
            c.ids = []
            c.dups = 0

    def complete(self, expected: int) -> bool:
        return all(len(c.ids) >= expected for c in self.clients if not c.closed)

    def verdict(self, expected_ids: list[int]) -> dict[str, Any]:
        want = set(expected_ids)
        lost = extra = dups = closed = 0
        for c in self.clients:
            got = c.ids
            seen = set(got)
            lost += len(want - seen)
            extra += len(seen - want)
            dups += len(got) - len(seen)
            closed += c.closed
        return {"lost": lost, "extra": extra, "duplicates": dups, "closed_clients": closed}


def client_worker(
    ctl: Any,
    host: str,
    port: int,
    token: str,
    n: int,
    core: int | None,
    compression: bool,
    concurrency: int,
    auth: bool,
    connect_timeout: float,
) -> None:
    """A client process: opens `n` sockets, then obeys commands on the pipe `ctl`."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    raise_nofile()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pool = ClientPool(loop, host, port, token, compression)

    def reply(obj: Any) -> None:
        # uvloop's add_reader made the pipe non-blocking; a 2 MB latency array needs blocking.
        os.set_blocking(ctl.fileno(), True)
        ctl.send(obj)

    async def main() -> None:
        report = await pool.open_many(n, concurrency, connect_timeout, auth)
        report["errors"] = pool.errors[:3]
        reply(report)
        commands: asyncio.Queue[Any] = asyncio.Queue()
        loop.add_reader(ctl.fileno(), lambda: commands.put_nowait(ctl.recv()))
        while True:
            cmd = await commands.get()
            op = cmd[0]
            if op == "arm":
                pool.arm()
                reply({"armed": True, "cpu": time.process_time()})
            elif op == "wait":  # ("wait", expected_count, timeout_s, quiet_s)
                _, expected, timeout, quiet = cmd
                end = time.monotonic() + timeout
                while time.monotonic() < end and not pool.complete(expected):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                # a short quiet period to catch duplicates or extras
                await asyncio.sleep(quiet)
                s = pool.stats
                reply(
                    {
                        "complete": pool.complete(expected),
                        "frames": s.frames,
                        "bytes": s.bytes,
                        "first_recv": s.first_recv,
                        "last_event_recv": max((0.0,) if not s.frames else (s.last_recv,)),
                        "latencies": s.latencies.tobytes(),
                        "cpu": time.process_time(),
                        "odd_frames": pool.odd_frames,
                    }
                )
            elif op == "auth_all":
                reply(await pool.auth_all(cmd[1], cmd[2]))
            elif op == "verdict":
                reply(pool.verdict(cmd[1]))
            elif op == "count_open":
                reply(len([c for c in pool.clients if not c.closed]))
            elif op == "close":
                for c in pool.clients:
                    c.close()
                await asyncio.sleep(0.2)
                reply({"closed": True})
                return

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 3600))
    finally:
        loop.close()


class Clients:
    """`procs` client processes (each pinned to `core`) holding `n` sockets between them."""

    def __init__(
        self,
        target: Gateway | BareServer,
        n: int,
        *,
        procs: int = 1,
        core: int | None = CLIENT_CORE,
        compression: bool = False,
        concurrency: int = 100,
        auth: bool = True,
        connect_timeout: float = 120,
        worker: Any = None,
    ) -> None:
        import multiprocessing as mp

        # The client process's main: `client_worker`'s arguments and commands (bench/sse.py
        # has one for Server-Sent Events streams).
        self.worker = worker or client_worker
        self.ctx = mp.get_context("fork")
        self.target = target
        self.n = n
        self.procs = procs
        self.core = core
        self.compression = compression
        self.concurrency = concurrency
        self.auth = auth
        self.connect_timeout = connect_timeout
        self.pipes: list[Any] = []
        self.workers: list[Any] = []
        self.connect_report: dict[str, Any] = {}

    def __enter__(self) -> Clients:
        host, port = self.target.host_port
        shares = [self.n // self.procs + (i < self.n % self.procs) for i in range(self.procs)]
        t0 = time.time()
        for share in shares:
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(
                target=self.worker,
                args=(
                    child,
                    host,
                    port,
                    self.target.token,
                    share,
                    self.core,
                    self.compression,
                    max(1, self.concurrency // self.procs),
                    self.auth,
                    self.connect_timeout,
                ),
                daemon=True,
            )
            p.start()
            self.pipes.append(parent)
            self.workers.append(p)
        reports = [recv_from(pipe, self.connect_timeout + 30) for pipe in self.pipes]
        elapsed = time.time() - t0
        self.connect_report = {
            "requested": self.n,
            "established": sum(r["established"] for r in reports),
            "authed": sum(r["authed"] or 0 for r in reports) if self.auth else None,
            "failed": sum(r["failed"] for r in reports),
            "failures_sample": [f for r in reports for f in r["failures_sample"]][:5],
            "errors": [e for r in reports for e in r["errors"]][:3],
            "elapsed_s": max(r["elapsed_s"] for r in reports),
            "wall_s": elapsed,
            "handshake_p50_ms": median([r["handshake_p50_ms"] or float("nan") for r in reports]),
            "handshake_p99_ms": max((r["handshake_p99_ms"] or 0) for r in reports),
            "auth_p50_ms": median([r["auth_p50_ms"] or float("nan") for r in reports]),
        }
        return self

    def _all(self, cmd: tuple[Any, ...], timeout: float = 60) -> list[Any]:
        return ask_all(self.pipes, cmd, timeout)

    def arm(self) -> float:
        return sum(r["cpu"] for r in self._all(("arm",)))

    def wait(self, expected: int, timeout: float, quiet: float = 0.3) -> dict[str, Any]:
        reports = self._all(("wait", expected, timeout, quiet), timeout + 60)
        lat = array("d")
        for r in reports:
            lat.frombytes(r["latencies"])
        return {
            "complete": all(r["complete"] for r in reports),
            "frames": sum(r["frames"] for r in reports),
            "bytes": sum(r["bytes"] for r in reports),
            "first_recv": min((r["first_recv"] for r in reports if r["first_recv"]), default=0.0),
            "last_recv": max(r["last_event_recv"] for r in reports),
            "latencies": lat,
            "cpu": sum(r["cpu"] for r in reports),
            "odd_frames": sum(r["odd_frames"] for r in reports),
        }

    def auth_all(self, concurrency: int = 100, timeout: float = 120) -> dict[str, Any]:
        reports = self._all(("auth_all", max(1, concurrency // self.procs), timeout), timeout + 30)
        return {
            "authed": sum(r["authed"] for r in reports),
            "failed": sum(r["failed"] for r in reports),
            "failures_sample": [f for r in reports for f in r["failures_sample"]][:5],
            "elapsed_s": max(r["elapsed_s"] for r in reports),
            "auth_p50_ms": median([r["auth_p50_ms"] or float("nan") for r in reports]),
        }

    def count_open(self) -> int:
        return sum(self._all(("count_open",)))

    def verdict(self, ids: list[int]) -> dict[str, int]:
        out = {"lost": 0, "extra": 0, "duplicates": 0, "closed_clients": 0}
        for r in self._all(("verdict", ids)):
            for k in out:
                out[k] += r[k]
        return out

    def __exit__(self, *exc: Any) -> None:
        with contextlib.suppress(Exception):
            self._all(("close",), 30)
        for p in self.workers:
            p.join(10)
            if p.is_alive():
                p.kill()
