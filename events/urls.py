"""Event-system HTTP routes (mounted under /api/): history, socket tokens, socket stats."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "events"

urlpatterns = [
    path("events/", views.EventListView.as_view(), name="event-list"),
    path("ws/token/", views.SocketTokenView.as_view(), name="ws-token"),
    path("ws/stats/", views.SocketStatsView.as_view(), name="ws-stats"),
]
