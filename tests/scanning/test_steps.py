"""The scan steps, each on its own: built from a ScanRequest and an in-memory resolution."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.request import MAX_HEADER_CHARS, ScanRequest
from campaigns.scanning.resolution import Resolution
from campaigns.scanning.steps import (
    BOT_REASONS,
    ScanDraft,
    StepContext,
    build_steps,
    run_steps,
)
from campaigns.scanning.steps.burst import Burst
from campaigns.scanning.steps.device import DeviceAndBot
from campaigns.scanning.steps.visitor import Visitor
from campaigns.scanning.visitors import VisitorIds
from tests.fixtures.scanning import NOW, request, resolution
from tests.fixtures.user_agents import IPHONE_SAFARI


def draft(req: ScanRequest | None = None, res: Resolution | None = None) -> ScanDraft:
    return ScanDraft(req or request(), res or resolution(), "qr")


# -- the request value -------------------------------------------------------------------


def test_request_keeps_the_headers_that_matter_parsed_once() -> None:
    req = request(
        client_host="2001:db8:1:2::7",
        headers={
            "accept-language": "fr-FR,fr;q=0.9",
            "sec-purpose": "prefetch",
            "cookie": "a=b",
            "x-other": "ignored",
        },
        query_string=b"e=1&c=2",
    )
    assert (req.user_agent, req.accept_language, req.sec_purpose, req.cookie) == (
        IPHONE_SAFARI,
        "fr-FR,fr;q=0.9",
        "prefetch",
        "a=b",
    )
    assert (req.purpose, req.x_purpose, req.x_moz) == (None, None, None)
    assert req.query_string == "e=1&c=2"
    assert (req.client.truncated, req.client.key) == ("2001:db8:1::", "2001:db8:1:2::")


def test_request_header_values_are_bounded_and_nul_free() -> None:
    req = request(headers={"user-agent": "Mozilla\x00/5.0 " + "x" * 5000})
    assert req.user_agent is not None
    assert len(req.user_agent) == MAX_HEADER_CHARS
    assert "\x00" not in req.user_agent


# -- device and bot ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "reason"),
    [
        pytest.param("GET", {}, None, id="person"),
        pytest.param("HEAD", {}, "head", id="head"),
        pytest.param("HEAD", {"sec-purpose": "prefetch"}, "head", id="head-before-prefetch"),
        pytest.param("GET", {"sec-purpose": "prefetch"}, "prefetch", id="sec-purpose"),
        pytest.param(
            "GET", {"sec-purpose": "prefetch;prerender"}, "prefetch", id="sec-purpose-prerender"
        ),
        pytest.param("GET", {"purpose": "prefetch"}, "prefetch", id="purpose"),
        pytest.param("GET", {"x-purpose": "preview"}, "prefetch", id="x-purpose"),
        pytest.param("GET", {"x-moz": "prefetch"}, "prefetch", id="x-moz"),
        pytest.param("GET", {"x-purpose": "other"}, None, id="other-purpose"),
        pytest.param(
            "GET",
            {"sec-purpose": "prefetch", "user-agent": "WhatsApp/2.23.20.0 A"},
            "prefetch",
            id="prefetch-before-previewer",
        ),
        pytest.param("GET", {"user-agent": "WhatsApp/2.23.20.0 A"}, "previewer", id="previewer"),
        pytest.param(
            "GET", {"user-agent": "Microsoft Office Existence Discovery"}, "scanner", id="office"
        ),
        pytest.param("GET", {"user-agent": "curl/8.5.0"}, "crawler", id="crawler"),
        pytest.param("GET", {"user-agent": "Mozilla"}, "no_user_agent", id="short-agent"),
    ],
)
def test_bot_reason_is_the_first_that_applies(
    method: str, headers: dict[str, str], reason: str | None
) -> None:
    scan = draft(request(method=method, headers=headers))
    DeviceAndBot()(scan)
    assert scan.bot_reason == reason
    assert scan.is_bot is (reason is not None)
    assert reason is None or reason in BOT_REASONS


def test_device_is_parsed_from_the_user_agent() -> None:
    scan = draft()
    DeviceAndBot()(scan)
    assert (scan.device_type, scan.os, scan.browser) == ("mobile", "iOS", "Mobile Safari")


# -- visitor -----------------------------------------------------------------------------


@pytest.fixture
def visitors(tmp_path: Path) -> VisitorIds:
    ids = VisitorIds(tmp_path / "salts.json", secret_key="k" * 32)
    ids._salts = {NOW.date(): b"\x01" * 32}
    return ids


def visitor_of(visitors: VisitorIds, req: ScanRequest, res: Resolution) -> bytes:
    scan = draft(req, res)
    Visitor(visitors)(scan)
    assert scan.visitor_id is not None and len(scan.visitor_id) == 16
    return scan.visitor_id


def test_visitor_is_shared_across_campaigns_of_one_organization(visitors: VisitorIds) -> None:
    first = visitor_of(visitors, request(), resolution(campaign_id=10))
    assert first == visitor_of(visitors, request(), resolution(campaign_id=11))
    assert first != visitor_of(visitors, request(), resolution(organization_id=2))


def test_visitor_is_one_per_ipv6_64(visitors: VisitorIds) -> None:
    a = visitor_of(visitors, request(client_host="2001:db8:1:2::1"), resolution())
    b = visitor_of(visitors, request(client_host="2001:db8:1:2:abcd::9"), resolution())
    c = visitor_of(visitors, request(client_host="2001:db8:1:3::1"), resolution())
    assert a == b != c


def test_visitor_changes_with_agent_address_and_day(visitors: VisitorIds) -> None:
    base = visitor_of(visitors, request(), resolution())
    assert base != visitor_of(visitors, request(client_host="203.0.113.78"), resolution())
    assert base != visitor_of(
        visitors, request(headers={"user-agent": "Other/1.0 x"}), resolution()
    )
    next_day = request(received_at=NOW + dt.timedelta(days=1))
    assert base != visitor_of(visitors, next_day, resolution())


# -- burst -------------------------------------------------------------------------------


def test_burst_flags_scans_past_the_rate_per_client() -> None:
    step = Burst(RateLimiter(rate=1.0, burst=2))
    flags = []
    for host in ("198.51.100.7", "198.51.100.7", "198.51.100.7", "198.51.100.8"):
        scan = draft(request(client_host=host))
        step(scan)
        flags.append(scan.burst)
    assert flags == [False, False, True, False]


def test_burst_needs_a_limiter_and_an_address() -> None:
    for step, host in ((Burst(None), "198.51.100.7"), (Burst(RateLimiter(1.0, 1)), None)):
        for _ in range(3):
            scan = draft(request(client_host=host))
            step(scan)
            assert scan.burst is False


# -- the registry ------------------------------------------------------------------------


def test_steps_run_in_registry_order(visitors: VisitorIds) -> None:
    steps = build_steps(StepContext(visitors=visitors, limiter=RateLimiter(1.0, 1)))
    assert [step.name for step in steps] == [
        "device and bot",
        "internal",
        "visitor",
        "visitor cookie",
        "burst",
        "geolocation",
        "nfc verification",
        "rules",
    ]
    scan = run_steps(steps, draft(request(method="HEAD")))
    assert (scan.bot_reason, scan.device_type, scan.burst) == ("head", "mobile", False)
    assert scan.visitor_id == visitor_of(visitors, request(), resolution())
