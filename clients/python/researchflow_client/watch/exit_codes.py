"""The watcher's exit codes: the run's outcome, or why it could not follow the run.

Shell scripts and CI branch on these numbers, so they never change meaning. `--help` and the
READMEs list them from `HELP` below.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    COMPLETED = 0  # the run completed
    FAILED = 1  # the run failed
    USAGE = 2  # bad arguments, a bad URL, no token (argparse also exits 2)
    REFUSED = 3  # token refused, run/project unknown or forbidden, access revoked
    UNAVAILABLE = 4  # the server could not be reached (after the retries)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


HELP = """\
exit codes:
  0    the run completed
  1    the run failed
  2    usage error: bad arguments, a bad URL, no token
  3    authentication refused: a wrong or revoked token, or a run / project that is
       unknown or that you may not see (the server does not say which)
  4    the server is unavailable (still unreachable after the retries)
  130  interrupted (Ctrl-C); --project always ends this way
"""
