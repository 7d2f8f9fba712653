"""`manage.py demo_run`: drive one run through its life over the REST API, at a human pace.

    python manage.py demo_run --url http://localhost:3001 --pace 0.5
    python manage.py demo_run --username alice --await-approval --assign bob   # gated on bob

Exit code 1, with one clear line, when the server is unreachable or the login fails.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.demo import (
    APPROVAL_TIMEOUT,
    DEFAULT_PASSWORD,
    DEFAULT_URL,
    DemoError,
    obtain_token,
    run_demo,
)


class Command(BaseCommand):
    help = "Drive a demo run through the REST API of a running server, step by step."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=DEFAULT_URL, help=f"server base URL ({DEFAULT_URL})")
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--password",
            default=None,
            help="default: $DEMO_PASSWORD or seed_demo's dev password",
        )
        parser.add_argument("--pace", type=float, default=0.5, help="seconds between steps")
        parser.add_argument("--project", default=None, help="project id (default: your first)")
        parser.add_argument(
            "--await-approval",
            action="store_true",
            help="after the first stage, wait for a person to grant the approval (a denial "
            "fails the run) instead of granting it yourself",
        )
        parser.add_argument(
            "--assign",
            action="append",
            default=[],
            metavar="USERNAME",
            help="assign the approval to this owner or member (repeatable)",
        )
        parser.add_argument(
            "--approval-timeout",
            type=float,
            default=APPROVAL_TIMEOUT,
            help=f"seconds to wait for the decision ({APPROVAL_TIMEOUT:g})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = options["password"] or os.environ.get("DEMO_PASSWORD") or DEFAULT_PASSWORD
        pace = max(0.0, options["pace"])
        try:
            token = obtain_token(options["url"], options["username"], password)
            self.stdout.write(f"logged in as {options['username']}")
            run_id = run_demo(
                options["url"],
                token,
                project_id=options["project"],
                pace=pace,
                log=self.stdout.write,
                await_approval=options["await_approval"],
                assign_to=options["assign"],
                approval_timeout=max(0.0, options["approval_timeout"]),
            )
        except DemoError as exc:
            raise CommandError(str(exc), returncode=1) from None
        self.stdout.write(self.style.SUCCESS(f"done: run {run_id}"))
