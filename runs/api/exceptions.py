"""One error shape for every 4xx of the API, and the mapping of domain exceptions to it.

Every error response body is::

    {
      "detail": "progress: must be an integer from 0 to 100",   # one readable line
      "code": "invalid",                                          # machine-readable
      "errors": {"progress": ["must be an integer from 0 to 100"]}  # per field; {} if none
    }

`errors` keys are the request's camelCase field names; nested and list items use dotted paths
(`stages.3`); errors about the body as a whole use the key `body`. Messages name fields and
categories, never the submitted value (it may be PHI).

| status | code | when |
|---|---|---|
| 400 | `invalid` | field errors; a service's `ValueError("field: message")` |
| 400 | `parse_error` | malformed JSON |
| 400 | `event_rejected` | the event bus refused the change (schema or PHI guard backstop) |
| 401 | `not_authenticated` / `authentication_failed` | no or bad credentials |
| 403 | `permission_denied` | a project member without the needed role; non-staff on staff views |
| 404 | `not_found` | unknown id, or an object in a project the user does not belong to |
| 405 | `method_not_allowed` | |
| 409 | `conflict` | an illegal transition (`services.TransitionError`); detail says why |
| 413 | `payload_too_large` | a request body over `MAX_BODY_BYTES` |
| 415 | `unsupported_media_type` | a body that is not `application/json` |
| 429 | `throttled` | too many failed logins at `POST /api/auth/token/`; `Retry-After` says when |
| 503 | `busy` | a transient database conflict outlived retries (`services.ServiceBusy`) |

A 503 carries `Retry-After` (seconds); nothing was changed, and the same request may succeed.

Unexpected exceptions are not caught here: they are bugs, and Django answers 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from events.schemas import EventRejected, InvalidEvent
from runs.services import ServiceBusy, TransitionError

BODY_KEY = "body"
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.]{0,60}): (.+)$", re.DOTALL)
# Non-field keys DRF uses for errors about the object as a whole.
_WHOLE_BODY_KEYS = {"non_field_errors", "__all__"}


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "the request conflicts with the current state"
    default_code = "conflict"


class Busy(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the database is busy with conflicting changes; try again shortly"
    default_code = "busy"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.wait = retry_after  # DRF's handler turns `wait` into the Retry-After header


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body too large"
    default_code = "payload_too_large"


class EventRefused(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "the change was refused by the event bus"
    default_code = "event_rejected"

    def __init__(self, detail: str, errors: dict[str, list[str]]) -> None:
        super().__init__(detail)
        self.field_errors = errors


def field_error(field: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({field: [message]})


def _value_error(exc: ValueError) -> exceptions.ValidationError:
    message = str(exc)
    match = _FIELD_PREFIX.match(message)
    if match:
        return field_error(match.group(1), match.group(2))
    return field_error(BODY_KEY, message or "invalid value")


def _event_rejected(exc: EventRejected) -> EventRefused:
    errors: dict[str, list[str]] = {}
    if isinstance(exc, InvalidEvent):
        for line in exc.errors:
            match = _FIELD_PREFIX.match(line)
            key, message = (match.group(1), match.group(2)) if match else (BODY_KEY, line)
            errors.setdefault(key.removeprefix("payload."), []).append(message)
    return EventRefused(str(exc), errors)


def _translate(exc: Exception) -> Exception:
    """Domain and Django exceptions → the DRF exception with the right status."""
    if isinstance(exc, TransitionError):
        return Conflict(str(exc) or Conflict.default_detail)
    if isinstance(exc, ServiceBusy):
        return Busy(exc.retry_after)
    if isinstance(exc, EventRejected):  # before ValueError: EventRejected is one
        return _event_rejected(exc)
    if isinstance(exc, ObjectDoesNotExist | Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            return exceptions.ValidationError(
                {k: [str(m) for e in v for m in e.messages] for k, v in exc.error_dict.items()}
            )
        return exceptions.ValidationError({BODY_KEY: exc.messages})
    if isinstance(exc, ValueError):
        return _value_error(exc)
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied()
    return exc


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail → {"dotted.path": [messages]}."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            name = BODY_KEY if str(key) in _WHOLE_BODY_KEYS else str(key)
            path = f"{prefix}.{name}" if prefix and name != BODY_KEY else (prefix or name)
            for sub, messages in flatten_errors(value, path).items():
                out.setdefault(sub, []).extend(messages)
    elif isinstance(detail, list | tuple):
        if all(not isinstance(item, Mapping | list | tuple) for item in detail):
            out.setdefault(prefix or BODY_KEY, []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item:
                    for sub, messages in flatten_errors(item, f"{prefix}.{index}").items():
                        out.setdefault(sub, []).extend(messages)
    else:
        out.setdefault(prefix or BODY_KEY, []).append(str(detail))
    return out


def _code(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.ValidationError):
        return "invalid"
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def _summary(errors: dict[str, list[str]], limit: int = 5) -> str:
    lines = [f"{field}: {msg}" for field, messages in errors.items() for msg in messages]
    text = "; ".join(lines[:limit])
    return text + (f" (and {len(lines) - limit} more)" if len(lines) > limit else "")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: every handled error in the shape documented above."""
    exc = _translate(exc)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        # DRF answers 403 here when the first authentication class is SessionAuthentication
        # (it has no WWW-Authenticate challenge); clients need 401 to know to log in.
        exc.status_code = status.HTTP_401_UNAUTHORIZED
        setattr(exc, "auth_header", 'Token realm="api"')  # noqa: B010 (DRF reads it by getattr)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        detail = _summary(errors) or "invalid input"
    elif isinstance(exc, EventRefused):
        errors = exc.field_errors
        detail = str(exc.detail)
    else:
        errors = {}
        detail = str(exc.detail)
    response.data = {"detail": detail, "code": _code(exc), "errors": errors}
    return response
