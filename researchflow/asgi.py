"""ASGI entry point: HTTP through Django, `/ws` through the origin policy, the session auth
middleware and the run-events consumer."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "researchflow.settings")
django_asgi_app = get_asgi_application()  # sets up Django before the consumer imports models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from events import daphne_compat  # noqa: E402
from events.routing import websocket_urlpatterns  # noqa: E402
from events.security import OriginPolicyMiddleware  # noqa: E402

daphne_compat.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginPolicyMiddleware(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
