"""Gateway routes (mounted under /api/): socket tokens and socket stats."""

from __future__ import annotations

from researchflow.routes import route

from . import views

app_name = "gateway"

urlpatterns = [
    *route("ws/token", views.SocketTokenView, "ws-token"),
    *route("ws/stats", views.SocketStatsView, "ws-stats"),
]
