"""Pure parts of webhooks: which addresses are public, the signature, the backoff."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random

import pytest

from campaigns.webhooks.addresses import AddressRefused, checked_addresses, is_public_address
from campaigns.webhooks.delivery import backoff_s
from campaigns.webhooks.signing import signature_header


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "10.0.0.1",
        "100.64.0.1",  # CGNAT
        "127.0.0.1",
        "169.254.169.254",  # cloud metadata
        "172.16.5.4",
        "192.0.2.1",
        "192.168.1.1",
        "198.18.0.1",
        "224.0.0.251",  # multicast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "::127.0.0.1",  # IPv4-compatible (deprecated): was accepted as public
        "::8.8.8.8",  # IPv4-compatible, whatever it embeds: no global unicast in ::/8
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2001:db8::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "ff02::1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.215.14", "::ffff:8.8.8.8", "2606:4700:4700::1111"]
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


async def test_every_address_of_a_name_is_checked() -> None:
    with pytest.raises(AddressRefused) as refused:
        await checked_addresses("https://localhost:8443/hook", allow_private=False)
    assert refused.value.code == "webhook_url_not_public"
    allowed = await checked_addresses("http://localhost:8443/hook", allow_private=True)
    assert ipaddress.ip_address("127.0.0.1") in allowed


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id":"evt_ping_1","type":"ping"}'
    expected = hmac.new(b"whsec_test", b"1765000000." + body, hashlib.sha256).hexdigest()
    assert signature_header("whsec_test", 1_765_000_000, body) == f"t=1765000000,v1={expected}"


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt, ceiling in ((1, 30.0), (2, 60.0), (3, 120.0), (12, 3600.0), (99, 3600.0)):
        waits = [backoff_s(attempt, base_s=30.0, cap_s=3600.0, rng=rng) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) == 50  # jittered


def test_the_readme_snippet_verifies_our_signatures() -> None:
    """The README's Python snippet, run as written, accepts what the dispatcher signs."""
    import time
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    after = readme.split("**Verifying the signature.**", 1)[1]
    snippet = after.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # noqa: S102 - our own README
    verify = namespace["verify"]
    assert callable(verify)
    body = b'{"id":"evt_ping_1","type":"ping"}'
    header = signature_header("whsec_abc", int(time.time()), body)
    assert verify("whsec_abc", header, body) is True
    assert verify("whsec_abd", header, body) is False
    assert verify("whsec_abc", header, body + b"\n") is False
    old = signature_header("whsec_abc", int(time.time()) - 3600, body)
    assert verify("whsec_abc", old, body) is False
