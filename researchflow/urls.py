from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path, re_path
from django.views.defaults import page_not_found

from web.login import ThrottledAdminAuthenticationForm, answer_429_when_throttled, login


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """JSON for API clients (the API's error shape), Django's page for browsers."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found", "errors": {}}, status=404)
    return page_not_found(request, exception or Exception("not found"))


handler404: Any = not_found

# Both login forms check the login throttle before the password (web/login.py); these routes
# come before the admin's and django.contrib.auth's own, which they replace.
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("admin/login/", answer_429_when_throttled(admin.site.login)),
    path("admin/", admin.site.urls),
    path("accounts/login/", login, name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("runs.api.urls")),
    path("api/", include("events.urls")),
    path("api/", include("events.gateway.urls")),
    path("", include("researchflow.ops.urls")),
    path("", include("web.urls")),
    # Unknown /api/ paths answer in the API's JSON error shape, in DEBUG too.
    re_path(r"^api/", not_found),
]
