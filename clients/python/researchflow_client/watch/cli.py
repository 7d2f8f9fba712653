"""`watch`'s command line: arguments, the token, the output mode, and the exit code.

The token comes from `RESEARCHFLOW_TOKEN` or a file (`--token-file`), never from an argument:
a command line is visible to every user of the machine (`ps`), and ends up in shell history.
Errors are one line on stderr, saying what to do; the token is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import stat
import sys
from typing import TextIO

from rich.console import Console

from ..errors import AccessRevoked, AuthFailed, ClientError, InvalidURL, ServerUnavailable
from ..urls import check_url
from .exit_codes import HELP, ExitCode
from .session import Target, follow
from .sinks import JsonLines, LiveView, Sink
from .state import WatchState

TOKEN_ENV = "RESEARCHFLOW_TOKEN"
URL_ENV = "RESEARCHFLOW_WS_URL"
DEFAULT_URL = "ws://localhost:3001/ws"
PROG = "researchflow watch"

DESCRIPTION = f"""\
Follow a run (or every run of a project) live: a progress bar per stage, the run's status,
artifacts and approvals as they happen. With --run, the run's history is replayed first, and
the watcher exits with the run's outcome (0 completed, 1 failed), so scripts and CI can wait
on a run. When stdout is not a terminal, or with --json, it prints each event as one JSON
object per line instead.

The token (a REST API token: POST /api/auth/token/) is read from ${TOKEN_ENV} or from
--token-file; never pass it on the command line, where other users can see it.
"""
EPILOG = (
    HELP
    + f"""
environment:
  {TOKEN_ENV}   the token (unless --token-file is given)
  {URL_ENV}  the default for --url
"""
)


class UsageError(Exception):
    """Bad input the user can fix; exit code 2."""


class _RefuseToken(argparse.Action):
    """`--token VALUE` is refused by name, without echoing the value (argparse's own
    "unrecognized arguments" would print it, and without this argument `--token` would be
    taken as an abbreviation of `--token-file`, the secret as a path)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            f"--token is not accepted: a command line is visible to other users; "
            f"set {TOKEN_ENV} or use --token-file"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument("--run", metavar="ID", help="follow this run until it ends (run_…)")
    scope.add_argument(
        "--project", metavar="ID", help="follow every run of this project until Ctrl-C (prj_…)"
    )
    parser.add_argument(
        "--url",
        default=None,
        help=f"the server's WebSocket URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help=f"read the token from this file (default: ${TOKEN_ENV}); keep it chmod 600",
    )
    parser.add_argument("--token", action=_RefuseToken, help=argparse.SUPPRESS)
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per event per line (the default when stdout is not a terminal)",
    )
    history = parser.add_mutually_exclusive_group()
    history.add_argument(
        "--from-start",
        dest="from_start",
        action="store_true",
        default=None,
        help="replay the logged history first (the default with --run)",
    )
    history.add_argument(
        "--live-only",
        dest="from_start",
        action="store_false",
        help="only events from now on (the default with --project)",
    )
    parser.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="reconnect attempts in a row before giving up with exit code 4 (default: 10)",
    )
    parser.add_argument(
        "--retry-delay",
        type=_non_negative_float,
        default=0.5,
        metavar="SECONDS",
        help="the first retry's backoff window; it doubles up to 30 s (default: 0.5)",
    )
    parser.add_argument(
        "--transport",
        choices=("websocket", "sse"),
        default="websocket",
        help="sse: Server-Sent Events (GET /events/stream on the same server), for networks "
        "whose proxies refuse WebSocket upgrades (default: websocket)",
    )
    parser.add_argument(
        "--cafile",
        metavar="PATH",
        help="trust this CA bundle for wss:// (default: the system's CAs)",
    )


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {raw!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def read_token(token_file: str | None, environ: dict[str, str], warn: TextIO) -> str:
    """The token from `token_file`, else from the environment; UsageError when there is none."""
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
            mode = os.stat(token_file).st_mode
        except OSError as exc:
            raise UsageError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--token-file {token_file} is not a text file") from None
        if not token:
            raise UsageError(f"--token-file {token_file} is empty")
        if stat.S_ISREG(mode) and mode & 0o077:
            warn.write(f"{PROG}: warning: {token_file} is readable by other users; chmod 600 it\n")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UsageError(
            f"no token: set {TOKEN_ENV} or pass --token-file (get one with POST /api/auth/token/)"
        )
    return token


def _ssl_context(url: str, cafile: str | None) -> ssl.SSLContext | None:
    if cafile is None:
        return None  # wss:// then uses the default context (system CAs)
    if not url.startswith("wss://"):
        raise UsageError("--cafile is for wss:// URLs")
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load --cafile {cafile}: {exc}") from None


class _ToSink(logging.Handler):
    """The client's warnings (reconnecting, a refused message) as sink warnings. The client
    never puts the token or payload text in a log record."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.warn(record.getMessage().removeprefix("researchflow: "))


def run(
    args: argparse.Namespace,
    *,
    environ: dict[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run `watch` with parsed arguments; the exit code."""
    environ = dict(os.environ) if environ is None else environ
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr

    def fail(code: ExitCode, message: str) -> int:
        err.write(f"{PROG}: error: {message}\n")
        err.flush()
        return int(code)

    try:
        token = read_token(args.token_file, environ, err)
        url = check_url(args.url or environ.get(URL_ENV) or DEFAULT_URL)
        context = _ssl_context(url, args.cafile)
    except UsageError as exc:
        return fail(ExitCode.USAGE, str(exc))
    except InvalidURL as exc:
        return fail(ExitCode.USAGE, str(exc))
    from_start = args.from_start if args.from_start is not None else args.run is not None
    options: dict[str, object] = {
        "max_retries": args.max_retries,
        "backoff_initial": args.retry_delay,
    }
    if context is not None:
        options["ssl"] = context
    if args.transport != "websocket":
        options["transport"] = args.transport
    target = Target(
        url,
        token,
        run_id=args.run,
        project_id=args.project,
        from_start=from_start,
        client_options=tuple(options.items()),
    )
    state = WatchState()
    sink: Sink
    if args.json or not out.isatty():
        sink = JsonLines(out, err)
    else:
        what = f"run {args.run}" if args.run else f"project {args.project}"
        sink = LiveView(Console(file=out), state, run_id=args.run, caption=f"{what} on {url}")
    handler = _ToSink(sink)
    client_logger = logging.getLogger("researchflow_client")
    client_logger.addHandler(handler)
    client_logger.propagate = False  # one line per warning, not one more from the root logger
    try:
        return int(asyncio.run(_watch(target, state, sink)))
    except KeyboardInterrupt:
        err.write(f"{PROG}: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    except (AuthFailed, AccessRevoked) as exc:
        return fail(ExitCode.REFUSED, str(exc))
    except ServerUnavailable as exc:
        return fail(ExitCode.UNAVAILABLE, str(exc))
    except InvalidURL as exc:  # the handshake was refused (e.g. not the /ws path)
        return fail(ExitCode.USAGE, str(exc))
    except ClientError as exc:
        return fail(ExitCode.UNAVAILABLE, str(exc))
    except BrokenPipeError:
        # The reader of --json went away (`| head`): stop quietly. Point stdout at devnull so
        # the interpreter's final flush does not raise again.
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a process killed by it
    finally:
        client_logger.removeHandler(handler)


async def _watch(target: Target, state: WatchState, sink: Sink) -> int:
    try:
        return int(await follow(target, state, sink))
    finally:
        sink.close()
