"""Which address is the client's: the socket peer, unless TRUSTED_PROXY_COUNT says how many
proxies' X-Forwarded-For entries to count back from the right."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from researchflow.client_address import client_address, rate_limit_key

PEER = "10.0.0.5"


def meta(forwarded: str | None = None, peer: str = PEER) -> dict[str, str]:
    out = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        out["HTTP_X_FORWARDED_FOR"] = forwarded
    return out


def test_it_ignores_x_forwarded_for_without_trusted_proxies() -> None:
    assert client_address(meta("203.0.113.9"), trusted_proxies=0) == PEER


def test_it_takes_the_entry_the_trusted_proxy_added() -> None:
    assert client_address(meta("203.0.113.9"), trusted_proxies=1) == "203.0.113.9"


@pytest.mark.parametrize("spoofed", ["1.1.1.1", "1.1.1.1, 2.2.2.2", "garbage, ::1, 8.8.8.8"])
def test_it_ignores_spoofed_entries_left_of_the_proxys_own(spoofed: str) -> None:
    assert client_address(meta(f"{spoofed}, 203.0.113.9"), trusted_proxies=1) == "203.0.113.9"


def test_it_counts_two_proxies_from_the_right() -> None:
    header = "1.1.1.1, 203.0.113.9, 10.1.1.1"
    assert client_address(meta(header), trusted_proxies=2) == "203.0.113.9"


@pytest.mark.parametrize(
    "forwarded",
    [None, "", "203.0.113.9", "not-an-ip", "1.1.1.1, 203.0.113.9, ", "1.1.1.1, 999.1.1.1"],
    ids=["missing", "empty", "too-short", "garbage", "empty-entry", "bad-ip"],
)
def test_it_falls_back_to_the_peer_never_to_a_client_chosen_value(forwarded: str | None) -> None:
    # Two trusted proxies; each header is missing, too short or malformed where it matters.
    assert client_address(meta(forwarded), trusted_proxies=2) == PEER


def test_it_normalises_addresses() -> None:
    assert client_address(meta("[2001:DB8::1]"), trusted_proxies=1) == "2001:db8::1"


def test_it_reads_the_setting(settings: Any) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_address(meta("1.1.1.1, 203.0.113.9")) == "203.0.113.9"
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_address(meta("1.1.1.1, 203.0.113.9")) == PEER


def test_it_counts_an_ipv6_64_as_one_client() -> None:
    assert rate_limit_key("2001:db8:1:2:aaaa::1") == rate_limit_key("2001:db8:1:2:bbbb::9")
    assert rate_limit_key("2001:db8:1:3::1") != rate_limit_key("2001:db8:1:2::1")
    assert rate_limit_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert rate_limit_key("198.51.100.7") == "198.51.100.7"


def test_it_makes_drf_throttles_ignore_x_forwarded_for_by_default() -> None:
    # REST_FRAMEWORK["NUM_PROXIES"] follows TRUSTED_PROXY_COUNT (0 here): unset, DRF's
    # get_ident returned the header itself, so rotating it dodged every DRF throttle.
    request = Request(RequestFactory().get("/", HTTP_X_FORWARDED_FOR="6.6.6.6", REMOTE_ADDR=PEER))
    assert (
        SimpleRateThrottle.get_ident(SimpleRateThrottle.__new__(SimpleRateThrottle), request)
        == PEER
    )
