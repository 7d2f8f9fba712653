"""`python -m researchflow_client COMMAND`: today one command, `watch` (see `watch/cli.py`)."""

from __future__ import annotations

import argparse
import sys

from .watch import cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m researchflow_client",
        description="ResearchFlow run events from a terminal.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    watch = commands.add_parser(
        "watch", help="follow a run (or a project) live; exits with the run's outcome"
    )
    cli.add_arguments(watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
