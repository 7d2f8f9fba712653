"""Settings: one module, every knob from the environment (documented in `.env.example`).

A bad value stops start-up with an `ImproperlyConfigured` naming the variable; `manage.py`
turns that into one line on stderr instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from events.gateway.origins import parse_origin
from events.limits import MAX_FRAME_BYTES

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RESEARCHFLOW_VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true/false, got {raw!r}")


def envint(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ImproperlyConfigured(f"{name}: expected an integer {bounds}, got {value}")
    return value


def envfloat(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum or value != value:  # NaN is never a sensible setting
        raise ImproperlyConfigured(f"{name}: expected a number >= {minimum}, got {raw!r}")
    return value


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = envbool("DEBUG", True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY: required when DEBUG is off")
    # Development only: a fixed key so sessions survive restarts of `make run`.
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

PORT = envint("PORT", 3001, minimum=1, maximum=65535)

ALLOWED_HOSTS = envlist(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"CSRF_TRUSTED_ORIGINS: {_origin!r} must start with http:// or https://"
        )
# Origins, besides the server's own, whose pages may open /ws with the user's session cookie
# (gateway/security.py). Exact origins only (scheme://host[:port]); CSRF_TRUSTED_ORIGINS does not
# count, since letting a page read the event stream is more than letting it submit a form.
WS_ALLOWED_ORIGINS = envlist("WS_ALLOWED_ORIGINS", [])
for _origin in WS_ALLOWED_ORIGINS:
    if parse_origin(_origin) is None:
        raise ImproperlyConfigured(
            f"WS_ALLOWED_ORIGINS: {_origin!r} is not an origin; expected http(s)://host[:port] "
            "in ASCII (punycode for IDN), with no path, user, wildcard or trailing slash"
        )

# Where the dashboard's JS client opens its socket (the seed's VITE_WEBSOCKET_URL). Unset: the
# page's own origin, `/ws`. Set it when /ws is served from another host; that host must list this
# site's origin in its WS_ALLOWED_ORIGINS, or it refuses the session cookie's handshake.
WEBSOCKET_URL = os.environ.get("WEBSOCKET_URL", "").strip() or None
if WEBSOCKET_URL is not None and not WEBSOCKET_URL.startswith(("ws://", "wss://", "/")):
    raise ImproperlyConfigured(
        f"WEBSOCKET_URL: {WEBSOCKET_URL!r} must be a ws:// or wss:// URL, or a path such as /ws"
    )


def _database_config() -> dict[str, object]:
    raw = os.environ.get("DATABASE_URL", "").strip()
    if not raw:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        raw = f"sqlite:///{VAR_DIR / 'researchflow.sqlite3'}"
    scheme = urlsplit(raw).scheme
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL: unsupported or unparseable URL (scheme {scheme!r}); "
            "use sqlite:///path or postgres://user:pass@host:port/db"
        )
    try:
        config: dict[str, object] = dict(dj_database_url.parse(raw, conn_max_age=0))
    except Exception as exc:  # dj-database-url raises several types on garbage
        raise ImproperlyConfigured(f"DATABASE_URL: cannot parse ({type(exc).__name__})") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the server and a second process (demo runner, a shell) write side by side;
        # IMMEDIATE transactions take the write lock at BEGIN, which serialises writers so
        # event-log ids are committed in id order (the resume guarantee) and avoids the
        # "database is locked" upgrade failure of deferred transactions.
        config["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
            ),
        }
        # Tests use a file too (one per process, so parallel runs never share it): the database
        # threads and WAL behave as in production, unlike a shared-cache in-memory database.
        config["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
        if config.get("NAME") in ("", ":memory:"):
            raise ImproperlyConfigured(
                "DATABASE_URL: an in-memory SQLite database cannot be shared"
            )
    # Persistent connections for both engines: with CONN_MAX_AGE=0 every ORM call from async
    # code (database_sync_to_async closes "old" connections) reopens SQLite and reruns its
    # PRAGMAs, which costs the socket auth path more than the queries themselves.
    config["CONN_MAX_AGE"] = envint("DATABASE_CONN_MAX_AGE", 60)
    config["CONN_HEALTH_CHECKS"] = True
    return config


DATABASES = {"default": _database_config()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _redis_urls() -> list[str]:
    """REDIS_URL: one Redis URL, or several separated by commas (the channel layer spreads its
    groups over them; the cache and the cluster stats use the first)."""
    urls = [url.strip() for url in os.environ.get("REDIS_URL", "").split(",") if url.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in {"redis", "rediss", "unix"} or not (parts.hostname or parts.path):
            raise ImproperlyConfigured(
                f"REDIS_URL: unsupported or unparseable URL (scheme {parts.scheme!r}); "
                "use redis://host:port/db, several separated by commas"
            )
        try:
            _ = parts.port
        except ValueError:
            raise ImproperlyConfigured("REDIS_URL: the port is not a number") from None
    if len(set(urls)) != len(urls):
        raise ImproperlyConfigured("REDIS_URL: the same URL appears twice")
    return urls


def _channel_layers(urls: list[str]) -> dict[str, dict[str, object]]:
    if not urls:
        # One process: the in-memory layer. Only the per-process event hub listens on it
        # (never one channel per socket), so its O(channels) receive scan stays cheap.
        # events.gateway.layers' subclass drops upstream's task per member and deep copy per
        # message.
        return {
            "default": {
                "BACKEND": "events.gateway.layers.InMemoryChannelLayer",
                "CONFIG": {"capacity": 10_000, "expiry": 60},
            }
        }
    # The pub/sub layer: one PUBLISH per layer message, each server process's hub SUBSCRIBEs to
    # the shard groups it needs. Fire-and-forget is fine here because the hub repairs any gap
    # from the event log. With several URLs, channels-redis puts each group (and channel) on
    # one of them by a consistent hash of its name, so the shards' traffic is shared out.
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": urls, "prefix": REDIS_PREFIX},
        }
    }


REDIS_URLS = _redis_urls()
REDIS_URL = REDIS_URLS[0] if REDIS_URLS else None  # the cache's and the stats' Redis
# Every key this project writes to Redis starts with it: channel-layer channels, the cache
# ("<prefix>:cache"), socket stats ("<prefix>:wsstats:<host:pid>").
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "researchflow").strip() or "researchflow"
CHANNEL_LAYERS = _channel_layers(REDIS_URLS)

# The cache holds the login throttle's counters (researchflow/login_throttle.py). With REDIS_URL
# there are several server processes, and the counters must be shared or each process would
# allow its own full quota; the short socket timeouts keep a dead Redis from hanging a login.
CACHES: dict[str, dict[str, object]] = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX + ":cache",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally, no CDN
    "channels",
    "events",
    "events.gateway",
    "runs",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "researchflow.urls"
ASGI_APPLICATION = "researchflow.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# In DEBUG, WhiteNoise serves straight from the finders; production runs collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
# How many reverse proxies stand in front of the server and are trusted to set X-Forwarded-*
# headers (0: none; the client is the socket peer and every X-Forwarded-* header is ignored).
# BEHIND_PROXY=1 is the older spelling of TRUSTED_PROXY_COUNT=1. With one or more, the scheme
# comes from X-Forwarded-Proto and the client address is the one that many hops back in
# X-Forwarded-For (docs/operations.md has the matching nginx configuration).
TRUSTED_PROXY_COUNT = envint(
    "TRUSTED_PROXY_COUNT", 1 if envbool("BEHIND_PROXY", False) else 0, minimum=0, maximum=10
)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if TRUSTED_PROXY_COUNT else None

# Password logins (POST /api/auth/token/, /accounts/login/, /admin/login/): failed attempts
# allowed per target username and per client address within one window (seconds); more answer
# 429 until the window ends (researchflow/login_throttle.py, docs/security/logins.md).
LOGIN_FAILURES_PER_USER = envint("LOGIN_FAILURES_PER_USER", 10, minimum=1)
LOGIN_FAILURES_PER_ADDRESS = envint("LOGIN_FAILURES_PER_ADDRESS", 50, minimum=1)
LOGIN_FAILURE_WINDOW = envint("LOGIN_FAILURE_WINDOW", 900, minimum=1, maximum=86_400)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    # DRF's own throttles read the client address from X-Forwarded-For only this many hops
    # back, as researchflow/client_address.py does (unset, DRF trusts the header blindly).
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "runs.api.exceptions.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ResearchFlow events API",
    "DESCRIPTION": "Runs, stages, artifacts, approvals and their event log. "
    "The WebSocket protocol is described by the AsyncAPI document at /api/asyncapi.json.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Event system --------------------------------------------------------------------------
EVENT_RETENTION_DAYS = envint("EVENT_RETENTION_DAYS", 7, minimum=1)
# Maximum events one resume replays from the log before answering `resync.required`.
WS_RESUME_MAX_EVENTS = envint("WS_RESUME_MAX_EVENTS", 10_000, minimum=1)
WS_AUTH_TIMEOUT = envfloat("WS_AUTH_TIMEOUT", 10.0, minimum=0.01)
# Seconds a client has to send a complete request head (the WebSocket handshake request) after
# connecting; then the connection is closed (events/gateway/servers/{uvicorn,daphne}_handshake.py).
WS_HANDSHAKE_TIMEOUT = envfloat("WS_HANDSHAKE_TIMEOUT", 10.0, minimum=0.1)
WS_HEARTBEAT_TIMEOUT = envfloat("WS_HEARTBEAT_TIMEOUT", 60.0, minimum=0.01)
WS_MAX_CONNECTIONS_PER_USER = envint("WS_MAX_CONNECTIONS_PER_USER", 100)
WS_RATE_LIMIT = envfloat("WS_RATE_LIMIT", 20.0, minimum=0.01)
WS_RATE_BURST = envint("WS_RATE_BURST", 40, minimum=1)
WS_SEND_QUEUE = envint("WS_SEND_QUEUE", 1000, minimum=1)
# What one stalled socket may hold, in bytes (docs/operations.md "A client that stops reading"):
# live frames queued in the app (over it: close 4008), the transport's write buffer (uvicorn:
# its high-water mark; send() waits above it) and the kernel's send buffer (SO_SNDBUF on each
# accepted socket; 0 leaves the kernel's autotuning, up to net.ipv4.tcp_wmem's maximum).
WS_SEND_BUFFER_BYTES = envint("WS_SEND_BUFFER_BYTES", 256 * 1024, minimum=1024)
WS_TRANSPORT_BUFFER_BYTES = envint("WS_TRANSPORT_BUFFER_BYTES", 64 * 1024, minimum=1024)
WS_SOCKET_SNDBUF = envint("WS_SOCKET_SNDBUF", 64 * 1024, minimum=0)
# uvicorn: a ping every WS_PING_INTERVAL seconds, the pong due within WS_PING_TIMEOUT (missing:
# the client does not read, closed as a slow consumer, 4008). After
# the server writes a close, the client has WS_CLOSE_TIMEOUT seconds to finish the closing
# handshake; then the connection is reset and its buffers dropped
# (events/gateway/servers/uvicorn_stalled_peer.py).
WS_PING_INTERVAL = envfloat("WS_PING_INTERVAL", 20.0, minimum=0.1)
WS_PING_TIMEOUT = envfloat("WS_PING_TIMEOUT", 20.0, minimum=0.1)
WS_CLOSE_TIMEOUT = envfloat("WS_CLOSE_TIMEOUT", 10.0, minimum=0.1)
WS_MAX_FRAME_BYTES = MAX_FRAME_BYTES  # the protocol's limit (events/limits.py)
# How often a process re-checks the log for events its hub has not received (lost
# pub/sub messages, a dropped tail), and how long it waits for an out-of-order event.
WS_GAP_CHECK_INTERVAL = envfloat("WS_GAP_CHECK_INTERVAL", 2.0, minimum=0.05)
WS_GAP_WAIT = envfloat("WS_GAP_WAIT", 0.2, minimum=0.0)
# K: events travel over the channel layer in K groups by project (crc32(project) % K), and a
# process hears only the shards of the projects its sockets may see (events/shards.py). The same
# value in every process and worker of a deployment; change it only with all of them stopped.
WS_EVENT_SHARDS = envint("WS_EVENT_SHARDS", 16, minimum=1, maximum=4096)
# Re-check of socket credentials (member removed, user deactivated, token revoked).
WS_REAUTH_INTERVAL = envfloat("WS_REAUTH_INTERVAL", 5.0, minimum=0.05)
WS_SOCKET_TOKEN_MAX_AGE = envint("WS_SOCKET_TOKEN_MAX_AGE", 300, minimum=1)
# GET /events/stream (Server-Sent Events): a comment line this often keeps proxies from timing
# an idle stream out and lets clients tell a live stream from a dead one.
SSE_HEARTBEAT_INTERVAL = envfloat("SSE_HEARTBEAT_INTERVAL", 15.0, minimum=0.05)
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "") or None

# Every record passes researchflow.log_hygiene's filter on its way out: request paths, methods
# and the like are client text and reach a log only as ids and our own route words. uvicorn's
# loggers keep their own handlers and levels (naming them here would reset uvicorn.error's
# level); events/gateway/servers/uvicorn_logs.py puts the same filter on those handlers.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_text": {"()": "researchflow.log_hygiene.RequestTextFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["request_text"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}

# --- Operations ----------------------------------------------------------------------------
# Graceful shutdown: how long SIGTERM waits for every socket to flush its queue and close with
# 1001 before handing over to the server's own shutdown (which drops what is left).
WS_SHUTDOWN_TIMEOUT = envfloat("WS_SHUTDOWN_TIMEOUT", 5.0, minimum=0.0)
# Each process's hub writes its socket stats to Redis (<REDIS_PREFIX>:wsstats:<host:pid>) this
# often, with this TTL, for GET /api/ws/stats/ to sum; a killed process drops out at the TTL.
WS_STATS_INTERVAL = envfloat("WS_STATS_INTERVAL", 2.0, minimum=0.1)
WS_STATS_TTL = envfloat("WS_STATS_TTL", 10.0, minimum=1.0)
if WS_STATS_TTL <= WS_STATS_INTERVAL:
    raise ImproperlyConfigured("WS_STATS_TTL: must be longer than WS_STATS_INTERVAL")
# /readyz gives each dependency (database, channel layer / Redis) this long to answer.
READINESS_TIMEOUT = envfloat("READINESS_TIMEOUT", 2.0, minimum=0.1)
