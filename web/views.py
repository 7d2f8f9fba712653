"""Browser pages: the live dashboard, and the staff-only "Start demo run" action.

The dashboard page itself carries almost no data: `static/researchflow/dashboard.js` loads the
state over the REST API (with the newest event id it reflects) and then follows `/ws` from that
id. The server-rendered project list is only what a visitor sees before the script runs (or
without it), so it must already respect membership.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from rest_framework.authtoken.models import Token

from runs.api.permissions import is_object_id, projects_visible_to

from . import demo


@require_GET
@login_required
@never_cache  # per-user content: no shared caches, and no stale copy after logout
def dashboard(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    projects = list(projects_visible_to(user).order_by("name", "id"))
    config = {
        # The seed's VITE_WEBSOCKET_URL: a deployment may put /ws on another host.
        "websocketUrl": settings.WEBSOCKET_URL,
        "username": user.get_username(),
        "isStaff": bool(user.is_staff),
        "demoUrl": reverse("web:start-demo") if user.is_staff else None,
    }
    context = {"projects": projects, "config": config, "is_staff": bool(user.is_staff)}
    return render(request, "web/dashboard.html", context)


def _wants_html(request: HttpRequest) -> bool:
    """A plain form submission (no script) navigates; fetch() asks for JSON."""
    accept = request.headers.get("Accept", "")
    return "text/html" in accept and "application/json" not in accept


@require_POST  # GET → 405; CsrfViewMiddleware guards the POST (no csrf_exempt here)
def start_demo_run(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return JsonResponse({"detail": "staff only"}, status=403)

    project_id = request.POST.get("project") or None
    if project_id is not None and (
        not is_object_id(project_id, "prj")
        or not projects_visible_to(user).filter(pk=project_id).exists()
    ):
        return JsonResponse({"detail": "project not found"}, status=400)

    # The runner is an HTTP client of this very server: the address the browser used reaches
    # it (the Host header was validated against ALLOWED_HOSTS, so this is no open relay).
    base_url = request.build_absolute_uri("/").rstrip("/")
    token, _ = Token.objects.get_or_create(user=user)
    try:
        demo.start_demo(base_url, token.key, project_id=project_id)
    except demo.TooManyDemoRuns as exc:
        if _wants_html(request):
            messages.error(request, str(exc))
            return redirect("web:dashboard")
        return JsonResponse({"detail": str(exc)}, status=429)

    detail = "Demo run started: watch the dashboard."
    if _wants_html(request):
        messages.success(request, detail)
        return redirect("web:dashboard")
    return JsonResponse({"started": True, "detail": detail}, status=202)
