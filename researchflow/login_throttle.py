"""Throttle password guessing: failed logins per target username and per client address.

Every password login goes through `django.contrib.auth.authenticate()`, which sends
`user_login_failed` for a wrong password, an unknown username or an inactive user alike. That
signal is the one place failures are counted (`record_failure`, connected in `runs.apps`), so
the three login surfaces — `POST /api/auth/token/`, `/accounts/login/`, `/admin/login/` — share
one budget. Each surface asks `retry_after()` BEFORE it calls `authenticate()` and answers 429
while either budget is spent:

- per target username (normalised: NFKC, stripped, case-folded): `LOGIN_FAILURES_PER_USER`
  failures per `LOGIN_FAILURE_WINDOW`, whatever address they come from, so rotating addresses
  (or X-Forwarded-For values) does not help against one account;
- per client address (`researchflow.client_address`, an IPv6 /64 counts as one):
  `LOGIN_FAILURES_PER_ADDRESS` failures per window, whatever usernames they try (spraying).

What must stay true:
- Only failures count. A successful login is not counted and does not reset either counter:
  a reset would give an attacker a fresh budget every time the owner (or a script fetching an
  API token) logs in, and the owner's own typos in the window are few.
- Once locked, a correct password is refused too, until the window ends; the refusal happens
  before `authenticate()`, so it costs no password hash and is the same answer in the same time
  for existing and non-existing usernames. Before the limit, Django's ModelBackend already
  hashes a password for unknown usernames, so failures are alike too.
- A window opens at the first failure and lasts `LOGIN_FAILURE_WINDOW`; failures in it add
  to one counter with an atomic INCR, so processes sharing Redis share one count. Once the
  limit is reached, everything waits until that window ends ("Try again in N minutes" counts
  down from there), then a new window opens. The long-run rate is the limit per window
  (10 per 15 minutes: at most 960 guesses a day against one account). Two processes opening
  a window at the same instant may each start it at 1 (one failure uncounted, once a window).
- Counters live in Django's cache: Redis (`REDIS_URL`, shared by every server process) or the
  local-memory cache of the single embedded process. A cache error fails open (logins keep
  working, a warning is logged): a broken Redis must not lock everybody out.
- Cache keys carry a hash of the username and address, never the text itself.

Why not django-axes, the usual Django answer: it writes an AccessAttempt row (and by default
an AccessLog row) to the database per attempt, so a guessing flood becomes a write flood on the
database that also carries the event log; its lockout keys (`AXES_LOCKOUT_PARAMETERS`) and
cool-off semantics must be configured to get "per username OR per address", and its answer to
a lockout is its own response rather than the API's error shape; it finds the client address
through django-ipware, a second proxy-trust configuration that would have to be kept in step
with `TRUSTED_PROXY_COUNT`; and it needs its backend first in AUTHENTICATION_BACKENDS plus a
request on every `authenticate()` call (our DRF token view would need care). It brings two
dependencies, migrations and an admin. What we need is two counters in the cache we already
run and one hook per form, about 150 lines that are tested here. If we later need audit trails
of login attempts (who, when, from where), axes' logging is the thing to reconsider.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import unicodedata
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches

from researchflow.client_address import client_address, rate_limit_key

logger = logging.getLogger(__name__)

KEY_PREFIX = "login-failures"


def normalise_username(raw: object) -> str:
    """The account a login attempt aims at, as the per-username counter keys it.

    Case-folded and stripped so `Alice`, `alice ` and `ALICE` spend one budget; NFKC as
    Django's UsernameField applies before authenticating. Anything but a string is "".
    """
    if not isinstance(raw, str):
        return ""
    return unicodedata.normalize("NFKC", raw).strip().casefold()


def lockout_message(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed login attempts. Try again in {minutes} {unit}."


def _digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}".encode()).hexdigest()[:40]


class LoginThrottle:
    """Counts failures and answers how long a login must wait. Settings are read per call,
    so tests (and `override_settings`) can change limits."""

    def __init__(
        self,
        cache: BaseCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self.clock = clock

    @property
    def cache(self) -> BaseCache:
        return self._cache if self._cache is not None else caches["default"]

    def _keys(self, address: str, username: str) -> dict[str, int]:
        """Counter key → the limit it is held to, for the counters this attempt touches."""
        keys: dict[str, int] = {}
        if username:
            keys[f"{KEY_PREFIX}:u:{_digest('u', username)}"] = int(settings.LOGIN_FAILURES_PER_USER)
        if address:
            keys[f"{KEY_PREFIX}:a:{_digest('a', rate_limit_key(address))}"] = int(
                settings.LOGIN_FAILURES_PER_ADDRESS
            )
        return keys

    def retry_after(self, address: str, username: object) -> int | None:
        """Seconds until a login from `address` for `username` may be tried, or None if now."""
        window = int(settings.LOGIN_FAILURE_WINDOW)
        now = self.clock()
        keys = self._keys(address, normalise_username(username))
        try:
            stored = self.cache.get_many([*keys, *(f"{key}:start" for key in keys)])
        except Exception as exc:  # fail open: see the module docstring
            logger.warning(
                "login throttle: cache unavailable (%s); not limiting", type(exc).__name__
            )
            return None
        waits = []
        for key, limit in keys.items():
            if int(stored.get(key) or 0) < limit:
                continue
            # A missing start (evicted, or a race with the first failure) waits a whole window.
            left = float(stored.get(f"{key}:start", now)) + window - now
            if left > 0:
                waits.append(math.ceil(left))
        return max(waits) if waits else None

    def record_failure(self, address: str, username: object) -> None:
        window = int(settings.LOGIN_FAILURE_WINDOW)
        now = self.clock()
        for key in self._keys(address, normalise_username(username)):
            try:
                self._count(key, now, window)
            except Exception as exc:  # fail open
                logger.warning(
                    "login throttle: cache unavailable (%s); failure not counted",
                    type(exc).__name__,
                )
                return

    def _count(self, key: str, now: float, window: int) -> None:
        """One failure: the first opens a window of `window` seconds (its start is kept beside
        the counter), later ones add to it with an atomic INCR until the window ends."""
        start = self.cache.get(f"{key}:start")
        if start is not None and float(start) + window > now:
            try:
                self.cache.incr(key)
                return
            except ValueError:  # the counter expired just now: open a new window
                pass
        # The cache entries outlive the window by a minute, so a clock a little behind in
        # another process still finds them; `start` decides when the window ends.
        self.cache.set_many({key: 1, f"{key}:start": now}, window + 60)


throttle = LoginThrottle()


def request_address(request: Any) -> str:
    """The client address of a Django or DRF request (or "" without one)."""
    meta = getattr(request, "META", None)
    return client_address(meta) if meta is not None else ""


def on_login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    """`user_login_failed` receiver: count the failure against the username and the address."""
    from django.contrib.auth import get_user_model

    username = credentials.get(get_user_model().USERNAME_FIELD)
    throttle.record_failure(request_address(request), username)
