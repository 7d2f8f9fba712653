"""Settings from the environment: a bad value is one clear stderr line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OWN_VARIABLES = ("PORT", "DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")


def check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}
    base.update(RESEARCHFLOW_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="researchflow.settings")
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"DATABASE_URL": "nonsense://x"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"DEBUG": "0"}, "SECRET_KEY"),
        ({"WS_ALLOWED_ORIGINS": "https://*.example.org"}, "WS_ALLOWED_ORIGINS"),
        ({"WS_ALLOWED_ORIGINS": "https://app.example.org/"}, "WS_ALLOWED_ORIGINS"),
        ({"WEBSOCKET_URL": "https://events.example.org/ws"}, "WEBSOCKET_URL"),
    ],
    ids=[
        "PORT",
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
        "WS_ORIGIN_WILDCARD",
        "WS_ORIGIN_PATH",
        "WEBSOCKET_URL",
    ],
)
def test_it_refuses_a_bad_environment_in_one_line(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    result = check(tmp_path, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and "Traceback" not in result.stderr


def test_it_accepts_a_good_environment(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        DEBUG="0",
        SECRET_KEY="a-long-random-test-secret-key-0123456789",
        PORT="8080",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REDIS_URL="redis://127.0.0.1:6379/0",
        ALLOWED_HOSTS="example.org",
        WS_ALLOWED_ORIGINS="https://app.example.org,http://localhost:5173",
        WEBSOCKET_URL="wss://events.example.org/ws",
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("redis_url", "backend"),
    [
        ("redis://127.0.0.1:6379/0", "django.core.cache.backends.redis.RedisCache"),
        ("", "django.core.cache.backends.locmem.LocMemCache"),
    ],
)
def test_it_shares_the_login_throttle_cache_when_redis_is_configured(
    tmp_path: Path, redis_url: str, backend: str
) -> None:
    # Several processes need one set of login-failure counters: Redis, when there is one.
    env = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}
    env.update(RESEARCHFLOW_VAR_DIR=str(tmp_path), REDIS_URL=redis_url)
    code = "import researchflow.settings as s; print(s.CACHES['default']['BACKEND'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == backend, result.stderr


def test_it_spreads_the_channel_layer_over_several_redis_urls(tmp_path: Path) -> None:
    # The layer gets every host (it shards groups over them); the cache and stats the first.
    env = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}
    env.update(
        RESEARCHFLOW_VAR_DIR=str(tmp_path),
        REDIS_URL="redis://127.0.0.1:6379/0, redis://127.0.0.1:6380/0",
        WS_EVENT_SHARDS="32",
    )
    code = (
        "import researchflow.settings as s; "
        "print(s.CHANNEL_LAYERS['default']['CONFIG']['hosts'], s.REDIS_URL, "
        "s.CACHES['default']['LOCATION'], s.WS_EVENT_SHARDS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == [
        "['redis://127.0.0.1:6379/0',",
        "'redis://127.0.0.1:6380/0']",
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0",
        "32",
    ], result.stderr


@pytest.mark.parametrize("shards", ["0", "5000", "x"])
def test_it_refuses_a_shard_count_out_of_range(tmp_path: Path, shards: str) -> None:
    result = check(tmp_path, WS_EVENT_SHARDS=shards)
    assert result.returncode == 2 and "WS_EVENT_SHARDS" in result.stderr
