"""The installer cookie and the "internal" step: a phone signed into the dashboard of the
tag's organization scans as staff (issue 11). HTTP tests: tests/api/test_internal_scans.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

from campaigns.crypto import Keyring
from campaigns.scanning.cache import CampaignEntry, TagEntry
from campaigns.scanning.installers import (
    CLOCK_SKEW_S,
    INSTALLER_COOKIE,
    MAX_LIFETIME_S,
    MEMO_SIZE,
    InstallerTokens,
    installer_token,
    read_installer_cookie,
)
from campaigns.scanning.request import ScanRequest
from campaigns.scanning.resolution import Resolution
from campaigns.scanning.steps import ScanDraft
from campaigns.scanning.steps.internal import Internal

NOW = dt.datetime(2026, 12, 6, 18, 0, tzinfo=dt.UTC)
KEY = "k" * 40
OLD_KEY = "o" * 40


def token(
    org: int = 1, user: int = 7, *, key: str = KEY, expires: dt.datetime | None = None
) -> str:
    return installer_token(
        key,
        organization_id=org,
        user_id=user,
        expires_at=expires or NOW + dt.timedelta(hours=8),
    )


def draft(cookie: str | None, *, organization_id: int = 1, at: dt.datetime = NOW) -> ScanDraft:
    headers: list[tuple[bytes, bytes]] = [(b"user-agent", b"Mozilla/5.0 (iPhone)")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    request = ScanRequest.from_http(
        code="ABCDEFGH",
        prefix="/s/",
        channel=None,
        method="GET",
        client_host="203.0.113.77",
        headers=headers,
        query_string=b"",
        received_at=at,
    )
    campaign = CampaignEntry(
        10, organization_id, "summer", "https://shop.example.com/", None, None, None, {}, False
    )
    tag = TagEntry(110, "ABCDEFGH", 10, "qr", None, None)
    return ScanDraft(request, Resolution(tag, campaign, "redirect", campaign.destination_url), "qr")


def run(cookie: str | None, **kwargs: Any) -> bool:
    scan = draft(cookie, **kwargs)
    Internal(InstallerTokens(KEY))(scan)
    return scan.internal


def test_a_valid_token_of_the_tags_organization_makes_the_scan_internal() -> None:
    assert run(f"{INSTALLER_COOKIE}={token()}")
    assert run(f'passerelle_vid=x; {INSTALLER_COOKIE}="{token()}"; other=1')


def test_no_cookie_another_cookie_or_no_checker_leave_the_scan_a_customers() -> None:
    assert not run(None)
    assert not run("passerelle_vid=0b3f5a4e-3b7c-4c1e-9d2a-5e6f7a8b9c0d")
    scan = draft(f"{INSTALLER_COOKIE}={token()}")
    Internal(None)(scan)
    assert not scan.internal


def test_another_organizations_token_is_ignored() -> None:
    assert not run(f"{INSTALLER_COOKIE}={token(org=2)}")
    assert run(f"{INSTALLER_COOKIE}={token(org=2)}", organization_id=2)


def test_expired_forged_cut_or_foreign_tokens_are_ignored() -> None:
    good = token()
    head, _, mac = good.rpartition(".")
    org, user, expires = head.split(".")
    forged = [
        token(expires=NOW),  # expires at the scan's instant
        token(expires=NOW - dt.timedelta(seconds=1)),
        token(key="x" * 40),  # another service's key
        f"{org}.{user}.{int(expires) + 3600}.{mac}",  # extended by hand
        f"{org}.9.{expires}.{mac}",  # another user
        f"0{org}.{user}.{expires}.{mac}",  # not canonical
        good[:-1],
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        f"{head}.",
        head,
        "",
        "garbage",
        "1.2.3." + "A" * 43,
        good + "x" * 200,
        "\u00b2.7.9999999999." + mac,  # a non-ASCII digit (superscript two)
    ]
    for value in forged:
        assert not run(f"{INSTALLER_COOKIE}={value}"), value


def test_a_signed_token_expiring_beyond_the_longest_lifetime_is_refused() -> None:
    """No token is issued for more than MAX_LIFETIME_S (24 h): a correctly signed one
    that expires later (10 years, a day and an hour) is not read, remembered or not."""
    tokens = InstallerTokens(KEY)
    longest = NOW + dt.timedelta(seconds=MAX_LIFETIME_S)
    assert tokens.verify(token(expires=longest), now=NOW) is not None
    for expires in (
        NOW + dt.timedelta(days=3650),
        longest + dt.timedelta(hours=1),
        longest + dt.timedelta(seconds=CLOCK_SKEW_S + 1),
    ):
        value = token(expires=expires)
        assert tokens.verify(value, now=NOW) is None
        assert not run(f"{INSTALLER_COOKIE}={value}")
    # A token remembered earlier is refused as well (the check is on every read).
    far = token(expires=NOW + dt.timedelta(days=2))
    assert tokens.verify(far, now=NOW + dt.timedelta(days=1, hours=1)) is not None
    assert tokens.verify(far, now=NOW) is None


def test_a_token_expires_while_remembered() -> None:
    tokens = InstallerTokens(KEY)
    value = token(expires=NOW + dt.timedelta(minutes=1))
    assert tokens.verify(value, now=NOW) is not None
    assert tokens.verify(value, now=NOW + dt.timedelta(minutes=1)) is None


def test_a_token_signed_before_a_key_rotation_still_verifies() -> None:
    rotated = InstallerTokens(Keyring(KEY, (OLD_KEY,)))
    mark = rotated.verify(token(key=OLD_KEY), now=NOW)
    assert mark is not None and (mark.organization_id, mark.user_id) == (1, 7)
    assert InstallerTokens(KEY).verify(token(key=OLD_KEY), now=NOW) is None
    # New tokens are signed under the current key.
    assert installer_token(
        Keyring(KEY, (OLD_KEY,)), organization_id=1, user_id=7, expires_at=NOW
    ) == token(expires=NOW)


def test_verified_tokens_are_remembered_within_bounds() -> None:
    tokens = InstallerTokens(KEY)
    for user in range(MEMO_SIZE + 5):
        assert tokens.verify(token(user=user), now=NOW) is not None
        assert len(tokens._verified) <= MEMO_SIZE
    assert tokens.verify("1.2.3.bad", now=NOW) is None
    assert "1.2.3.bad" not in tokens._verified


def test_read_installer_cookie() -> None:
    assert read_installer_cookie(f"a=1; {INSTALLER_COOKIE}=v; {INSTALLER_COOKIE}=w") == "v"
    assert read_installer_cookie(f"x{INSTALLER_COOKIE}=v") is None
    assert read_installer_cookie("") is None
