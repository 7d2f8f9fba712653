"""`python -m researchflow_client COMMAND`: today one command, `watch` (see `watch/cli.py`)."""

from __future__ import annotations

import argparse
import sys

from .watch import cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m researchflow_client",
        description="ResearchFlow run events from a terminal.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    watch = commands.add_parser(
        "watch",
        help="follow a run (or a project) live; exits with the run's outcome",
        allow_abbrev=False,  # no `--tok` standing for --token-file
    )
    cli.add_arguments(watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Name the unknown options but not the values: a mistyped `--tokn SECRET` must not
        # print the secret (argparse's own message would).
        shown = " ".join(word.split("=")[0] if word.startswith("-") else "…" for word in unknown)
        parser.error(f"unrecognized arguments: {shown}")
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
