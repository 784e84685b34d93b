"""The client address behind trusted proxies (geo/forwarded.py)."""

from __future__ import annotations

import ipaddress

import pytest

from geo.forwarded import TrustedProxies, client_address, parse_address

TRUSTED = TrustedProxies(["10.0.0.0/8", "127.0.0.1", "2001:db8:ffff::/48"])


def test_untrusted_peer_is_the_client_whatever_the_header_says() -> None:
    assert client_address("198.51.100.7", "1.2.3.4", TRUSTED) == "198.51.100.7"
    assert client_address("198.51.100.7", None, TRUSTED) == "198.51.100.7"


def test_right_most_untrusted_hop_wins_over_a_spoofed_left_most() -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6"; our proxy appended the real peer.
    assert client_address("10.0.0.2", "6.6.6.6, 81.2.69.160", TRUSTED) == "81.2.69.160"


def test_chains_of_trusted_proxies_are_skipped() -> None:
    header = "6.6.6.6, 81.2.69.160, 10.1.1.1, 10.2.2.2"
    assert client_address("127.0.0.1", header, TRUSTED) == "81.2.69.160"


def test_several_header_lines_read_in_order() -> None:
    lines = ["6.6.6.6", "81.2.69.160, 10.1.1.1"]
    assert client_address("10.0.0.2", lines, TRUSTED) == "81.2.69.160"


def test_all_trusted_gives_the_left_most() -> None:
    assert client_address("10.0.0.2", "10.9.9.9, 10.1.1.1", TRUSTED) == "10.9.9.9"


def test_trusted_peer_without_header_is_the_peer() -> None:
    assert client_address("10.0.0.2", None, TRUSTED) == "10.0.0.2"
    assert client_address("10.0.0.2", "", TRUSTED) == "10.0.0.2"


def test_ipv6_and_ports() -> None:
    header = "[2001:db8:1::5]:4711, 10.0.0.9:443"
    assert client_address("[2001:db8:ffff::1]:8080", header, TRUSTED) == "2001:db8:1::5"
    assert client_address("10.0.0.2", "2a01:e0a::1", TRUSTED) == "2a01:e0a::1"
    assert client_address("10.0.0.2", "81.2.69.160:51000", TRUSTED) == "81.2.69.160"
    assert client_address("::ffff:10.0.0.2", "::ffff:81.2.69.160", TRUSTED) == "81.2.69.160"


@pytest.mark.parametrize(
    "header",
    [
        "81.2.69.160, garbage",
        "81.2.69.160, unknown",
        "81.2.69.160,,",
        "81.2.69.160, 300.1.1.1",
        "81.2.69.160, [2001:db8::1",
        "81.2.69.160, 1.2.3.4:http",
        "81.2.69.160, 1.2.3.4:5:6",
    ],
)
def test_malformed_hop_stops_the_walk_at_the_last_good_address(header: str) -> None:
    # Nothing left of a malformed hop is trusted: the trusted peer is answered.
    assert client_address("10.0.0.2", header, TRUSTED) == "10.0.0.2"


def test_malformed_hop_behind_a_trusted_hop() -> None:
    header = "81.2.69.160, garbage, 10.3.3.3"
    assert client_address("10.0.0.2", header, TRUSTED) == "10.3.3.3"


def test_peer_that_is_not_an_address() -> None:
    assert client_address(None, "81.2.69.160", TRUSTED) is None
    assert client_address("unix:/run/app.sock", "81.2.69.160", TRUSTED) is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (" 81.2.69.160 ", "81.2.69.160"),
        ("81.2.69.160:80", "81.2.69.160"),
        ("[2a01:e0a::1]", "2a01:e0a::1"),
        ("[2a01:e0a::1]:443", "2a01:e0a::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[::1]x", None),
        ("", None),
        ("1.2.3", None),
        ("01.2.3.4", None),  # leading zeros: refused by the C parser as by ipaddress
        ("1.2.3.4\x00", None),
        ("1.2.3.\u0664", None),  # a non-ASCII digit
        ("::ffff:81.2.69.160", "81.2.69.160"),
    ],
)
def test_parse_address(entry: str, expected: str | None) -> None:
    parsed = parse_address(entry)
    assert (str(parsed) if parsed else None) == expected


def test_bad_trusted_range_is_refused() -> None:
    with pytest.raises(ValueError, match="does not appear"):
        TrustedProxies(["10.0.0.0/33"])


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.0",
        "10.255.255.255",
        "11.0.0.0",
        "9.255.255.255",
        "127.0.0.1",
        "127.0.0.2",
        "2001:db8:ffff::1",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db8:fffe::1",
        "::ffff:10.0.0.1",
        "::a00:1",  # the integer of 10.0.0.1, as IPv6: another version, not trusted
    ],
)
def test_trusted_membership_is_ipaddress_membership(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert (ip in TRUSTED) == any(ip in network for network in TRUSTED.networks)
