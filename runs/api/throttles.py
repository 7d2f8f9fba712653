"""The login throttle (`researchflow.login_throttle`) as a DRF throttle for the token view.

DRF runs throttles before the handler, so a refused attempt never reaches `authenticate()`;
the view turns the wait into 429 `throttled` with `Retry-After` in the API's error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from researchflow.client_address import client_address
from researchflow.login_throttle import throttle


class LoginFailureThrottle(BaseThrottle):
    def __init__(self) -> None:
        self._wait: int | None = None

    def get_ident(self, request: Request) -> str:
        # The one client-address rule of the project, not DRF's own X-Forwarded-For parsing.
        return client_address(request.META)

    def allow_request(self, request: Request, view: Any) -> bool:
        data = request.data
        username = data.get("username") if isinstance(data, Mapping) else None
        self._wait = throttle.retry_after(self.get_ident(request), username)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait
