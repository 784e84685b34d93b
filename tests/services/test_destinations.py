"""The redirect-loop rule shared by every place that stores a destination URL."""

from __future__ import annotations

import pytest

from campaigns.errors import InvalidInput
from campaigns.services.destinations import check_not_own_origin, is_own_origin

ORIGIN = "https://go.example.com"


@pytest.mark.parametrize(
    "url",
    [
        "https://go.example.com/s/7KQ2M9XD",
        "https://GO.Example.COM/anything?x=1",
        "http://go.example.com/s/ABC",  # another scheme on the default port: same service
        "https://go.example.com:443/",
        "http://go.example.com:80/",
        "https://go.example.com./s/ABC",  # fully qualified spelling
    ],
)
def test_own_origin_is_recognised(url: str) -> None:
    assert is_own_origin(url, ORIGIN)


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example.com/",
        "https://www.go.example.com/",  # another host, even a sub-domain
        "https://example.com/",
        "https://go.example.com:8443/",
        "https://go.example.com.evil.example/",
    ],
)
def test_other_origins_are_not(url: str) -> None:
    assert not is_own_origin(url, ORIGIN)


def test_ports_and_international_hosts_compare_normalised() -> None:
    assert is_own_origin("http://127.0.0.1:8000/s/X", "http://127.0.0.1:8000")
    assert not is_own_origin("http://127.0.0.1/s/X", "http://127.0.0.1:8000")
    assert is_own_origin("https://xn--bcher-kva.example/s/X", "https://bücher.example")
    assert is_own_origin("https://BÜCHER.example/s/X", "https://xn--bcher-kva.example")


def test_check_names_every_looping_field() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_not_own_origin(
            ORIGIN,
            destination_url="https://go.example.com/s/A",
            fallback_url="http://GO.example.com/",
        )
    assert refused.value.code == "redirect_loop"
    assert [e["loc"] for e in refused.value.errors or []] == [
        ["body", "destination_url"],
        ["body", "fallback_url"],
    ]
    check_not_own_origin(ORIGIN, destination_url="https://shop.example.com/", fallback_url=None)
