from __future__ import annotations

from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Research runs"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the post_save receivers)
