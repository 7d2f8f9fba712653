"""The client's socket behaviour against a scripted server on loopback (`fake.py`): heartbeat,
close codes, resume cursor, the duplicate guard, TLS, and what it logs."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fake import FakeServer, auth_success, run_started, wait_until
from websockets.asyncio.server import ServerConnection

from researchflow_client import AccessRevoked, Event, RunEvents, ServerUnavailable

FAST: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05}
TOKEN = "s3cret-token-value"


async def take(events: RunEvents, count: int, limit: float = 10) -> list[Event]:
    got: list[Event] = []
    async with asyncio.timeout(limit):
        async for event in events:
            got.append(event)
            if len(got) == count:
                break
    return got


async def test_it_declares_a_silent_socket_dead_and_resumes_on_a_new_one() -> None:
    async def script(conn: ServerConnection, auth: dict[str, Any]) -> None:
        await conn.send(auth_success())
        if len(server.auths) == 1:
            await conn.send(run_started(7))
            await server.record(conn)  # then silence: pings are read, never answered
        else:
            await conn.send(run_started(8))
            await server.record(conn)

    async with FakeServer(script) as server:
        events = RunEvents(
            server.url, token=TOKEN, heartbeat_interval=0.1, heartbeat_timeout=0.3, **FAST
        )
        async with events:
            got = await take(events, 2)
    assert [e.id for e in got] == [7, 8]
    assert len(server.auths) == 2
    assert server.auths[1]["lastEventId"] == 7  # one auth restores the socket from the cursor
    assert {"type": "ping"} in server.received


async def test_it_pings_while_events_keep_arriving() -> None:
    """The server closes a socket that sent nothing for WS_HEARTBEAT_TIMEOUT, however busy
    its own side is: the ping goes out on schedule, not only when the socket is quiet."""

    async def script(conn: ServerConnection, auth: dict[str, Any]) -> None:
        await conn.send(auth_success())
        reader = asyncio.create_task(server.record(conn))
        for event_id in range(1, 1000):
            await conn.send(run_started(event_id))
            await asyncio.sleep(0.01)
        await reader

    async with (
        FakeServer(script) as server,
        RunEvents(server.url, token=TOKEN, heartbeat_interval=0.1, **FAST) as events,
    ):
        await take(events, 40)
        await wait_until(lambda: {"type": "ping"} in server.received, 2)


@pytest.mark.parametrize("code", [1001, 4008, 1011])
async def test_it_reconnects_and_resumes_after_a_retryable_close(code: int) -> None:
    async def script(conn: ServerConnection, auth: dict[str, Any]) -> None:
        await conn.send(auth_success())
        if len(server.auths) == 1:
            await conn.send(run_started(3))
            await conn.send(run_started(4))
            await conn.close(code)
        else:
            # The replay repeats what the client already has; it must not see it twice.
            for event_id in (3, 4, 5):
                await conn.send(run_started(event_id))
            await server.record(conn)

    async with FakeServer(script) as server, RunEvents(server.url, token=TOKEN, **FAST) as events:
        got = await take(events, 3)
    assert [e.id for e in got] == [3, 4, 5]
    assert server.auths[1]["lastEventId"] == 4


@pytest.mark.parametrize("code", [4401, 4403])
async def test_it_does_not_retry_a_close_for_credentials_or_permission(code: int) -> None:
    async def script(conn: ServerConnection, auth: dict[str, Any]) -> None:
        await conn.send(auth_success())
        await conn.send(run_started(1))
        await conn.close(code)

    async with FakeServer(script) as server, RunEvents(server.url, token=TOKEN, **FAST) as events:
        assert (await take(events, 1))[0].id == 1
        with pytest.raises(AccessRevoked) as caught:
            await take(events, 1)
    assert caught.value.code == code
    assert len(server.auths) == 1


async def test_it_gives_up_with_server_unavailable_when_the_server_keeps_dropping_it() -> None:
    async def script(conn: ServerConnection, auth: dict[str, Any]) -> None:
        if len(server.auths) == 1:
            await conn.send(auth_success())
        await conn.close(1011)

    async with (
        FakeServer(script) as server,
        RunEvents(server.url, token=TOKEN, max_retries=2, **FAST) as events,
    ):
        with pytest.raises(ServerUnavailable) as caught:
            await take(events, 1)
    assert caught.value.attempts == 3
    assert "1011" in str(caught.value)


async def test_it_never_logs_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def script(conn: ServerConnection, auth: dict[str, Any]) -> None:
        await conn.send(auth_success())
        await conn.send(run_started(1))
        await conn.close(1001)

    async with FakeServer(script) as server, RunEvents(server.url, token=TOKEN, **FAST) as events:
        await take(events, 1)
        await wait_until(lambda: len(server.auths) >= 2)
    assert server.auths[0]["token"] == TOKEN  # it was sent, in the auth message
    assert "reconnecting" in caplog.text  # the log was on...
    # ...and never carried it, not even a prefix (websockets' frame log shows 8 characters).
    assert "s3cret" not in caplog.text
    assert TOKEN not in repr(events)


# --- TLS ----------------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting exactly that server's certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_it_follows_over_wss_with_the_given_ssl_context(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path)

    async def script(conn: ServerConnection, auth: dict[str, Any]) -> None:
        await conn.send(auth_success())
        await conn.send(run_started(1))
        await server.record(conn)

    async with FakeServer(script, server_ctx) as server:
        assert server.url.startswith("wss://")
        async with RunEvents(server.url, token=TOKEN, ssl=client_ctx, **FAST) as events:
            assert (await take(events, 1))[0].type == "run.started"


async def test_wss_refuses_a_certificate_it_does_not_trust(tmp_path: Path) -> None:
    server_ctx, _ = self_signed(tmp_path)

    async def script(conn: ServerConnection, auth: dict[str, Any]) -> None:
        await conn.send(auth_success())

    async with FakeServer(script, server_ctx) as server:
        with pytest.raises(ServerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            async with RunEvents(server.url, token=TOKEN, max_retries=0, **FAST):
                pass
    assert server.auths == []  # the token never left the client
