"""Settings validation: the base URL must be an origin, secrets must be real outside
development."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from campaigns.settings import Settings


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://go.example.com", "https://go.example.com"),
        ("https://go.example.com/", "https://go.example.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("HTTPS://Go.Example.com:8443", "https://go.example.com:8443"),
    ],
)
def test_origins_are_accepted(base_url: str, expected: str) -> None:
    settings = Settings(base_url=base_url)
    assert settings.base_url == expected
    assert settings.short_link_origin == expected


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("https://go.example.com/links", "it must not have a path (got '/links')"),
        ("https://go.example.com/s/", "it must not have a path (got '/s/')"),
        ("https://go.example.com?utm=1", "it must not have a query"),
        ("https://go.example.com/?", "it must not have a query"),
        ("https://go.example.com#top", "it must not have a fragment"),
        ("https://user:pw@go.example.com", "it must not carry credentials"),
        ("ftp://go.example.com", "the scheme must be http or https"),
        ("go.example.com", "the scheme must be http or https"),
        ("https://", "it must name a host"),
        ("https://go.example.com:99999", "its port is invalid"),
    ],
)
def test_anything_but_an_origin_is_refused_at_start(base_url: str, problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(base_url=base_url)
    (error,) = refused.value.errors()
    assert error["loc"] == ("base_url",)
    assert error["msg"].startswith(
        "Value error, PASSERELLE_BASE_URL must be an origin such as https://go.example.com: "
    )
    assert problem in error["msg"]


def test_rate_limit_and_header_settings_have_bounds() -> None:
    settings = Settings()
    assert (settings.api_rate_limit_per_s, settings.api_rate_limit_burst) == (20.0, 200)
    assert settings.max_header_bytes == 16_384
    for bad in ({"api_rate_limit_per_s": 0}, {"api_rate_limit_burst": 0}, {"max_header_bytes": 10}):
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@db:5432/p", "postgresql+psycopg://u@db:5432/p"),
        ("postgres://u@db/p", "postgresql+psycopg://u@db/p"),
        ("postgresql+psycopg://u@db/p", "postgresql+psycopg://u@db/p"),
    ],
)
def test_database_urls_are_postgresql_through_psycopg(url: str, expected: str) -> None:
    assert Settings(database_url=url).database_url == expected


@pytest.mark.parametrize("url", ["mysql://u@db/p", "sqlite:///tmp/x.db", "db.example.com/p"])
def test_other_databases_are_refused_at_start(url: str) -> None:
    with pytest.raises(ValidationError, match="PASSERELLE_DATABASE_URL"):
        Settings(database_url=url)
