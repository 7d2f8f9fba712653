"""The socket origin policy (issue 10 item 1, Cross-Site WebSocket Hijacking): only a page on
our exact origin, or on one in WS_ALLOWED_ORIGINS, may open /ws with the user's cookie."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from events.gateway.origins import Origin, forwarded_value, host_origin, parse_origin
from events.gateway.security import origin_trusted, server_origin
from researchflow.asgi import application
from tests.hostile_origins import hostile_origins
from tests.ws_helpers import session_cookie

PORT = 3001
HOST = f"127.0.0.1:{PORT}"  # the server as the victim's page reached it: http://127.0.0.1:3001
SAME = f"http://127.0.0.1:{PORT}"

# Raw header values as the ASGI scope holds them (an HTTP server strips surrounding blanks).
HOSTILE = [*hostile_origins(PORT), f"http://127.0.0.1:{PORT} ", f"\thttp://127.0.0.1:{PORT}"]


@pytest.fixture
def own(settings: Any) -> Origin | None:
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    settings.TRUSTED_PROXY_COUNT = 0
    settings.WS_ALLOWED_ORIGINS = []
    return server_origin(HOST, "ws", None)


# --- the normaliser -------------------------------------------------------------------------


def test_it_serialises_origins_as_browsers_compare_them() -> None:
    assert parse_origin("HTTP://LocalHost:3001") == Origin("http", "localhost", 3001)
    assert parse_origin("http://localhost") == parse_origin("http://localhost:80")
    assert parse_origin("https://x.example") == parse_origin("https://x.example:443")
    assert parse_origin("https://x.example:443").serialise() == "https://x.example"  # type: ignore[union-attr]
    assert parse_origin("http://[::1]:8080") == Origin("http", "[::1]", 8080)


def test_it_keeps_a_trailing_dot() -> None:
    assert parse_origin("http://localhost.:3001") != parse_origin("http://localhost:3001")


@pytest.mark.parametrize("value", ["null", "file://", "ws://x", "http://a@b", "http://x/", ""])
def test_it_parses_nothing_a_browser_would_not_send_as_an_origin(value: str) -> None:
    assert parse_origin(value) is None


def test_it_derives_our_origin_from_host_and_scheme() -> None:
    assert host_origin("127.0.0.1:3001", "http") == Origin("http", "127.0.0.1", 3001)
    assert host_origin("Events.Example.org", "https") == Origin("https", "events.example.org", 443)
    assert host_origin("a@b", "http") is None


def test_it_takes_the_forwarded_value_the_trusted_proxy_wrote() -> None:
    assert forwarded_value("https", 1) == "https"
    assert forwarded_value("https, http", 1) == "http"  # the client wrote the first one
    assert forwarded_value("https, http", 2) == "https"
    assert forwarded_value("https", 0) is None


# --- the policy -----------------------------------------------------------------------------


def test_hostile_origins_are_at_least_28() -> None:
    assert len(HOSTILE) >= 28


@pytest.mark.parametrize("origin", HOSTILE)
def test_it_refuses_a_hostile_origin(own: Origin | None, origin: str) -> None:
    assert not origin_trusted(origin, own)


def test_it_accepts_our_exact_origin(own: Origin | None) -> None:
    assert own == Origin("http", "127.0.0.1", PORT)
    assert origin_trusted(SAME, own)


def test_it_accepts_an_origin_with_the_default_port_spelled_out(settings: Any) -> None:
    settings.TRUSTED_PROXY_COUNT = 0
    own = server_origin("localhost", "ws", None)
    assert origin_trusted("http://localhost", own)
    assert origin_trusted("http://localhost:80", own)
    assert not origin_trusted("https://localhost", own)


def test_it_takes_https_from_a_wss_handshake(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["events.example.org"]
    own = server_origin("events.example.org", "wss", None)
    assert origin_trusted("https://events.example.org", own)
    assert not origin_trusted("http://events.example.org", own)


def test_it_ignores_x_forwarded_proto_without_a_trusted_proxy(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["events.example.org"]
    settings.TRUSTED_PROXY_COUNT = 0
    own = server_origin("events.example.org", "ws", "https")
    assert not origin_trusted("https://events.example.org", own)
    assert origin_trusted("http://events.example.org", own)


def test_it_takes_the_scheme_from_a_trusted_proxy(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["events.example.org"]
    settings.TRUSTED_PROXY_COUNT = 1
    own = server_origin("events.example.org", "ws", "https")
    assert origin_trusted("https://events.example.org", own)
    assert not origin_trusted("http://events.example.org", own)
    assert server_origin("events.example.org", "ws", "gopher") is None


def test_it_trusts_no_origin_when_the_host_is_not_allowed(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["events.example.org"]
    assert server_origin("evil.example", "ws", None) is None
    assert not origin_trusted("http://evil.example", server_origin("evil.example", "ws", None))
    assert server_origin(None, "ws", None) is None


def test_it_accepts_an_allow_listed_origin_exactly(settings: Any) -> None:
    settings.WS_ALLOWED_ORIGINS = ["https://app.example.org"]
    assert origin_trusted("https://app.example.org", None)
    assert origin_trusted("https://app.example.org:443", None)
    for other in (
        "http://app.example.org",
        "https://app.example.org:8443",
        "https://sub.app.example.org",
        "https://app.example.org.",
    ):
        assert not origin_trusted(other, None), other


def test_it_does_not_count_csrf_trusted_origins(settings: Any) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://forms.example.org"]
    settings.WS_ALLOWED_ORIGINS = []
    assert not origin_trusted("https://forms.example.org", None)


# --- the handshake, with the victim's cookie -----------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


async def _handshake(origin: str | None, cookie: bytes, host: str = HOST) -> Any:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode("utf-8")))
    headers.append((b"cookie", cookie))
    comm = WebsocketCommunicator(application, "/ws", headers=headers)
    connected, _ = await comm.connect(timeout=5)
    if not connected:
        return None
    hello = await comm.receive_json_from(timeout=5)
    await comm.disconnect()
    return hello["payload"]


@pytestmark_db
@pytest.mark.usefixtures("hubs_stopped", "own")
async def test_no_hostile_origin_opens_a_socket_with_the_cookie(world: Any) -> None:
    cookie = await session_cookie(world.alice)
    accepted = [o for o in HOSTILE if await _handshake(o, cookie) is not None]
    assert accepted == []
    assert (await _handshake(SAME, cookie))["userId"] == "alice"


@pytestmark_db
@pytest.mark.usefixtures("hubs_stopped", "own")
async def test_it_refuses_a_handshake_with_two_origins(world: Any) -> None:
    cookie = await session_cookie(world.alice)
    headers = [(b"host", HOST.encode()), (b"origin", SAME.encode())]
    headers += [(b"origin", b"https://evil.example"), (b"cookie", cookie)]
    comm = WebsocketCommunicator(application, "/ws", headers=headers)
    assert (await comm.connect(timeout=5))[0] is False


@pytestmark_db
@pytest.mark.usefixtures("hubs_stopped")
async def test_it_authenticates_an_allow_listed_origin_with_the_cookie(
    world: Any, settings: Any
) -> None:
    settings.WS_ALLOWED_ORIGINS = ["https://app.example.org"]
    hello = await _handshake("https://app.example.org", await session_cookie(world.alice))
    assert hello is not None and hello["userId"] == "alice"


@pytestmark_db
@pytest.mark.usefixtures("hubs_stopped")
async def test_it_keeps_a_client_without_origin_anonymous_but_connected(world: Any) -> None:
    hello = await _handshake(None, await session_cookie(world.alice))
    assert hello is not None and hello["authenticated"] is False
