"""Operations routes, mounted at the root: /healthz, /readyz, /metrics (ops/health.py)."""

from __future__ import annotations

from django.urls import path

from . import health as ops

urlpatterns = [
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics_view, name="metrics"),
]
