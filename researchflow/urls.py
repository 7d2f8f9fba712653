from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("runs.api.urls")),
    path("api/", include("events.urls")),
    path("", include("events.ops_urls")),
    path("", include("web.urls")),
]
