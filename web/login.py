"""The login forms (`/accounts/login/`, `/admin/login/`) with the login throttle in front.

A POST whose username or client address has spent its failure budget
(`researchflow.login_throttle`) is refused before the password is checked: the form comes back
with "Too many failed login attempts. Try again in N minutes.", status 429 and `Retry-After`.
The message is the same whether the username exists or not.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponseBase

from researchflow.login_throttle import lockout_message, request_address, throttle

# Where the form leaves the wait for the view to turn into 429 + Retry-After.
RETRY_AFTER_ATTR = "researchflow_login_retry_after"


class ThrottledLoginFormMixin:
    request: HttpRequest | None
    data: Any

    def clean(self) -> dict[str, Any]:
        # Runs before AuthenticationForm.clean() calls authenticate(): a refused attempt
        # costs no password hash and is not counted.
        wait = throttle.retry_after(request_address(self.request), self.data.get("username"))
        if wait is not None:
            if self.request is not None:
                setattr(self.request, RETRY_AFTER_ATTR, wait)
            raise ValidationError(lockout_message(wait), code="throttled")
        return super().clean()  # type: ignore[misc]


class ThrottledAuthenticationForm(ThrottledLoginFormMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginFormMixin, AdminAuthenticationForm):
    pass


View = Callable[..., HttpResponseBase]


def answer_429_when_throttled(view: View) -> View:
    """The form view's own page, with status 429 and Retry-After when the form was refused."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        wait = getattr(request, RETRY_AFTER_ATTR, None)
        if wait is not None:
            response.status_code = 429
            response["Retry-After"] = str(wait)
        return response

    return wrapped


login = answer_429_when_throttled(
    LoginView.as_view(authentication_form=ThrottledAuthenticationForm)
)
