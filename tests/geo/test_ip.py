"""Client addresses parsed once: truncation for storage, key for rates and visitors."""

from __future__ import annotations

import ipaddress

import pytest

from geo.ip import NO_ADDRESS, ClientAddress, parse_client, truncate_ip


@pytest.mark.parametrize(
    ("address", "truncated", "key"),
    [
        pytest.param("203.0.113.77", "203.0.113.0", "203.0.113.77", id="ipv4"),
        pytest.param("::ffff:203.0.113.77", "203.0.113.0", "203.0.113.77", id="ipv4-mapped"),
        pytest.param("2001:db8:1:2:3:4:5:6", "2001:db8:1::", "2001:db8:1:2::", id="ipv6"),
        pytest.param("2001:db8:1:2:ffff::9", "2001:db8:1::", "2001:db8:1:2::", id="ipv6-same-64"),
        pytest.param("2001:db8:1:3::1", "2001:db8:1::", "2001:db8:1:3::", id="ipv6-other-64"),
    ],
)
def test_addresses_are_truncated_and_keyed(address: str, truncated: str, key: str) -> None:
    client = parse_client(address)
    assert client.text == address
    assert client.ip == ipaddress.ip_address(key if "." in key else address)
    assert (client.truncated, client.key) == (truncated, key)
    assert truncate_ip(address) == truncated


@pytest.mark.parametrize("address", ["testclient", "unix:/run/app.sock", "999.1.1.1"])
def test_non_ip_peers_keep_their_text_as_key_and_store_nothing(address: str) -> None:
    assert parse_client(address) == ClientAddress(address, None, None, address)
    assert truncate_ip(address) is None


def test_scoped_ipv6_and_padded_text_are_parsed() -> None:
    scoped = parse_client("fe80::1:2:3:4%eth0")
    assert (scoped.truncated, scoped.key) == ("fe80::", "fe80::")
    assert parse_client(" 10.0.0.1 ").key == "10.0.0.1"


def test_no_address() -> None:
    assert parse_client(None) is NO_ADDRESS
    assert parse_client("") is NO_ADDRESS
    assert NO_ADDRESS == ClientAddress(None, None, None, None)
