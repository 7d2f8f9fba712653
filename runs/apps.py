from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Research runs"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed

        from researchflow.login_throttle import on_login_failed

        from . import signals  # noqa: F401  (connects the post_save receivers)

        # Every failed password login (API token, login form, admin) spends the throttle's
        # budgets; the surfaces check them before authenticating.
        user_login_failed.connect(on_login_failed, dispatch_uid="researchflow.login_throttle")
