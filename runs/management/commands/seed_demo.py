"""`manage.py seed_demo`: demo users, a demo project and runs in several states. Idempotent.

Development only: it prints the passwords it sets (fixed, or `DEMO_PASSWORD` for all three),
and refuses to run with DEBUG off unless `--force`. Everything goes through `runs.services`,
so the demo data comes with its events in the log. A second run creates nothing new and never
resets a password someone changed.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from runs import services
from runs.models import Project, Role, Run

DEMO_PROJECT = "Demo project"
USERS: tuple[tuple[str, bool, str], ...] = (
    # username, superuser, default dev password
    ("admin", True, "admin-dev-pass"),
    ("alice", False, "alice-dev-pass"),
    ("bob", False, "bob-dev-pass"),
)
STAGES = ["Load data", "Clean data", "Analyse", "Report"]
COMPLETED_RUN = "Demo: cohort summary"
FAILED_RUN = "Demo: lab value extract"
CREATED_RUN = "Demo: quarterly export"


class Command(BaseCommand):
    help = "Create demo users, a demo project and a few runs (idempotent; DEBUG only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="run even when DEBUG is off (never in production)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "refusing to seed demo users with known passwords while DEBUG is off; "
                "pass --force if this really is a throw-away environment"
            )
        with transaction.atomic():
            users = {
                name: self._user(name, superuser, default) for name, superuser, default in USERS
            }
            project = self._project(users)
            self._runs(project, users)

    def _user(self, username: str, superuser: bool, default_password: str) -> Any:
        model = get_user_model()
        user = model.objects.filter(username=username).first()
        if user is not None:
            self.stdout.write(f"user {username}: exists (password unchanged)")
            return user
        password = os.environ.get("DEMO_PASSWORD") or default_password
        if superuser:
            user = model.objects.create_superuser(username, f"{username}@example.org", password)
        else:
            user = model.objects.create_user(username, f"{username}@example.org", password)
        # Printing a password is acceptable only because these are dev-only demo accounts.
        self.stdout.write(self.style.SUCCESS(f"user {username}: created, password {password}"))
        return user

    def _project(self, users: dict[str, Any]) -> Project:
        project = (
            Project.objects.filter(
                name=DEMO_PROJECT,
                memberships__user=users["admin"],
                memberships__role=Role.OWNER,
            )
            .order_by("created_at")
            .first()
        )
        if project is None:
            project = services.create_project(DEMO_PROJECT, owner=users["admin"])
            self.stdout.write(self.style.SUCCESS(f"project {project.pk}: created"))
        else:
            self.stdout.write(f"project {project.pk}: exists")
        for name in ("alice", "bob"):
            if services.membership_role(project, users[name]) is None:
                services.set_member(project, users[name], Role.MEMBER)
        return project

    def _runs(self, project: Project, users: dict[str, Any]) -> None:
        existing = set(Run.objects.filter(project=project).values_list("name", flat=True))
        author = users["alice"]

        if COMPLETED_RUN not in existing:
            run = services.create_run(
                project, COMPLETED_RUN, STAGES, created_by=author, estimated_duration=60_000
            )
            services.start_run(run.pk)
            for stage in run.stages.order_by("position"):
                services.start_stage(stage.pk)
                services.report_progress(
                    stage.pk,
                    50,
                    items_processed=500,
                    items_total=1000,
                    status_message="Processing 500 of 1000 rows",
                )
                services.complete_stage(stage.pk)
                if stage.name == "Analyse":
                    services.add_artifact(
                        run.pk,
                        kind="dataset",
                        name="summary_statistics.parquet",
                        size_bytes=482_113,
                        content_type="application/octet-stream",
                        checksum="sha256:1193d9acad5ff4633997609ffeea0e8baf5174092945ec0caf1a429664906591",
                        stage_id=stage.pk,
                    )
            services.add_artifact(
                run.pk,
                kind="report",
                name="cohort_summary.pdf",
                size_bytes=1_204_551,
                content_type="application/pdf",
            )
            approval = services.request_approval(
                run.pk,
                governance_type="EXPORT_REVIEW",
                priority="MEDIUM",
                assigned_to=[users["admin"]],
            )
            services.decide_approval(
                approval.pk, granted=True, decided_by=users["admin"], reason_code="MEETS_POLICY"
            )
            services.complete_run(run.pk)
            self._created(run, "completed")

        if FAILED_RUN not in existing:
            run = services.create_run(project, FAILED_RUN, STAGES[:3], created_by=users["bob"])
            services.start_run(run.pk)
            first = run.stages.order_by("position").first()
            assert first is not None  # created just above with three stages
            services.start_stage(first.pk)
            services.report_progress(first.pk, 30, status_message="Reading source tables")
            services.fail_run(run.pk, "DATA_UNAVAILABLE")
            self._created(run, "failed")

        if CREATED_RUN not in existing:
            run = services.create_run(project, CREATED_RUN, STAGES, created_by=author)
            services.request_approval(
                run.pk,
                governance_type="PHI_SCAN",
                priority="HIGH",
                assigned_to=[users["admin"], users["alice"]],
            )
            self._created(run, "created, waiting for a PHI scan approval")

    def _created(self, run: Run, state: str) -> None:
        self.stdout.write(self.style.SUCCESS(f"run {run.pk}: {run.name} ({state})"))
