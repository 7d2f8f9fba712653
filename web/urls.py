from __future__ import annotations

from django.urls import URLPattern, path

from . import views

app_name = "web"

urlpatterns: list[URLPattern] = [
    path("", views.dashboard, name="dashboard"),
    path("demo/start/", views.start_demo_run, name="start-demo"),
]
