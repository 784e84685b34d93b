"""User-agent parsing and bot detection with real, current user agents.

Phones (including in-app browsers of social apps) must count as people; crawlers, URL
scanners and the link previewers of messaging apps (which fetch a short link when it is
pasted in a chat) must not, or scan counts and unique visitors are inflated. The crawler
verdict must be crawlerdetect's exactly, on all of crawlerdetect's own test agents.
"""

from __future__ import annotations

import importlib.metadata
import re._parser as sre_parse  # min/max match widths of a pattern

import pytest
from crawlerdetect import CrawlerDetect
from crawlerdetect.providers.crawlers import data as crawler_patterns
from ua_parser import Domain, load_lazy_builtins
from ua_parser.regex import Resolver

from campaigns.scanning import device
from campaigns.scanning.device import Device, is_crawler, parse_device
from tests.fixtures.user_agents import (
    BOTS,
    CRAWLERDETECT_FIXTURES_VERSION,
    CRAWLERS,
    HUMANS,
    IPHONE_SAFARI,
    PREVIEWERS,
    SCANNERS,
    crawlerdetect_agents,
)

reference = CrawlerDetect()


@pytest.mark.parametrize(("user_agent", "device_type", "os", "browser"), HUMANS)
def test_people_count_as_humans(
    user_agent: str, device_type: str, os: str, browser: str | None
) -> None:
    device = parse_device(user_agent)
    assert (device.is_bot, device.bot_reason) == (False, None), device
    assert device.device_type == device_type
    assert device.os == os
    if browser is not None:
        assert device.browser == browser
    assert reference.is_crawler(user_agent) is False


@pytest.mark.parametrize("user_agent", PREVIEWERS)
def test_link_previewers_are_bots(user_agent: str) -> None:
    device = parse_device(user_agent)
    assert (device.device_type, device.is_bot, device.bot_reason) == ("bot", True, "previewer")


@pytest.mark.parametrize("user_agent", SCANNERS)
def test_url_scanners_are_bots(user_agent: str) -> None:
    device = parse_device(user_agent)
    assert (device.device_type, device.is_bot, device.bot_reason) == ("bot", True, "scanner")


@pytest.mark.parametrize("user_agent", CRAWLERS)
def test_crawlers_are_bots(user_agent: str) -> None:
    device = parse_device(user_agent)
    assert (device.device_type, device.is_bot, device.bot_reason) == ("bot", True, "crawler")
    assert reference.is_crawler(user_agent) is True


def test_previewer_wins_over_scanner_and_crawler() -> None:
    # Crawler-Detect lists facebookexternalhit and Office's discovery requests too: the
    # more specific reason is the one recorded.
    preview = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
    office = "Microsoft Office Existence Discovery"
    assert is_crawler(preview) and is_crawler(office)
    assert parse_device(preview).bot_reason == "previewer"
    assert parse_device(office).bot_reason == "scanner"
    assert parse_device(f"{office} Twitterbot/1.0").bot_reason == "previewer"


@pytest.mark.parametrize("user_agent", [None, "", " ", "x", "Mozilla", "  abcdefg  "])
def test_missing_or_meaningless_agents_are_not_people(user_agent: str | None) -> None:
    device = parse_device(user_agent)
    assert (device.is_bot, device.bot_reason) == (True, "no_user_agent")


def test_eight_characters_can_be_a_person() -> None:
    # The threshold is on the stripped agent; eight characters are not rejected for length.
    assert parse_device("Abcdefgh").bot_reason is None


def test_no_agent_is_unknown_device() -> None:
    expected = Device("unknown", None, None, True, "no_user_agent")
    assert parse_device(None) == expected
    assert parse_device("") == expected


def test_crawlerdetect_fixtures_are_the_installed_release() -> None:
    # The vendored agents are the oracle's own test data for one release: a new release
    # may change verdicts, so upgrading crawlerdetect means refreshing them.
    assert importlib.metadata.version("crawlerdetect") == CRAWLERDETECT_FIXTURES_VERSION


def test_crawler_verdict_is_crawlerdetects_on_all_its_test_agents() -> None:
    agents = crawlerdetect_agents()
    assert len(agents) == 169_380
    assert sum(crawler for _, _, crawler in agents) == 3_733
    # crawlerdetect's own tests assert these verdicts for this release, for every agent.
    mismatches = [(name, ua) for name, ua, crawler in agents if is_crawler(ua) != crawler]
    assert mismatches == []


def test_parse_device_gives_crawlerdetects_verdict_on_all_its_test_agents() -> None:
    # parse_device reuses the RE2 pass of its lists (previewers, scanners, form factors)
    # for the crawler exclusions: its "crawler" verdict must still be crawlerdetect's,
    # for every agent the earlier reasons do not claim (and only for those).
    device._parse.cache_clear()
    mismatches = []
    for name, ua, crawler in crawlerdetect_agents():
        reason = parse_device(ua).bot_reason
        if reason in ("previewer", "scanner"):
            continue
        if (reason == "crawler") != crawler and ua.strip():
            mismatches.append((name, ua))
    assert mismatches == []


def test_exclusions_removed_with_only_the_patterns_present_are_the_same() -> None:
    # The removal uses the alternation of the exclusion patterns that occur in the agent
    # (device._remove_exclusions), lower-cased patterns on the lower-cased agent; it must
    # give exactly the full alternation's result, lower-cased.
    agents = [
        ua.strip() for _, ua, _ in crawlerdetect_agents() if ua.isascii() and ua.isprintable()
    ]
    assert len(agents) > 160_000
    mismatches = [
        ua
        for ua in agents
        if device._remove_exclusions(ua) != device._EXCLUSIONS.sub("", ua).lower()
    ]
    assert mismatches == []


def test_crawler_verdict_equals_the_library_called_directly() -> None:
    # The oracle itself costs ~0.7 ms an agent (two minutes for all of them): it is
    # called on every bot, every 40th device and every agent taking the fallback path.
    agents = crawlerdetect_agents()
    sample = [
        ua
        for i, (_, ua, crawler) in enumerate(agents)
        if crawler or i % 40 == 0 or not (ua.isascii() and ua.isprintable())
    ]
    assert len(sample) > 7_000
    mismatches = [ua for ua in sample if is_crawler(ua) != reference.is_crawler(ua)]
    assert mismatches == []


def test_no_crawler_pattern_matches_the_empty_string() -> None:
    # crawlerdetect counts a crawler only when the alternation's leftmost match is not
    # empty; with no pattern able to match "", that is "some pattern matches", which is
    # what the RE2 search and the separate look-ahead check compute together.
    assert [p for p in crawler_patterns if sre_parse.parse(p).getwidth()[0] == 0] == []


@pytest.mark.parametrize(
    ("user_agent", "crawler"),
    [
        # ``Yandex(?!Search)``: a look-ahead, which RE2 cannot run.
        pytest.param("Yandex/1.01.001 (compatible; Win16; I)", True, id="yandex"),
        pytest.param(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/136.0.0.0 Mobile Safari/537.36 YandexSearch/25.41",
            False,
            id="yandex-search-app",
        ),
        # Not printable ASCII: crawlerdetect itself decides (Unicode \\d, \\s, \\w).
        pytest.param("Mozilla/5.0 (Linux; Android 14) Rövbot/2.0", True, id="non-ascii-bot"),
        pytest.param(IPHONE_SAFARI + " Ünïcode", False, id="non-ascii-person"),
        pytest.param(IPHONE_SAFARI + "\tspider", True, id="tab"),
        pytest.param("   ", False, id="blank"),
    ],
)
def test_crawler_verdict_on_the_paths_re2_does_not_take(user_agent: str, crawler: bool) -> None:
    assert is_crawler(user_agent) is crawler
    assert reference.is_crawler(user_agent) is crawler


def test_only_the_first_512_characters_are_parsed() -> None:
    # A bot marker buried after 512 characters of padding is not looked at: parsing cost
    # is bounded whatever a client sends.
    padded = IPHONE_SAFARI + " " * (600 - len(IPHONE_SAFARI)) + "Googlebot/2.1"
    assert parse_device(padded).is_bot is False
    assert parse_device(padded).device_type == "mobile"


def test_memo_is_keyed_by_the_parsed_prefix_not_the_whole_agent() -> None:
    # The memo holds 8192 entries: keyed by whole agents, clients sending distinct
    # 16 kB+ headers could pin hundreds of megabytes. Keyed by the 512-character prefix,
    # agents that differ only beyond it share one entry.
    device._parse.cache_clear()
    padded = IPHONE_SAFARI.ljust(600)
    first = parse_device(padded + "y" * 100_000)
    second = parse_device(padded + "z" * 100_000)
    assert first == second
    info = device._parse.cache_info()
    assert (info.currsize, info.hits) == (1, 1)


def test_lookahead_patterns_are_prefiltered_by_their_literal() -> None:
    assert [(literal, p.pattern) for literal, p in device._CRAWLERS_FOR_PYTHON] == [
        ("yandex", "Yandex(?!Search)")
    ]


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("Yandex(?!Search)", "yandex"),
        ("^Go-http-client", "go-http-client"),
        ("Bot?x", "bo"),
        (r"Foo\/(\d)\1", "foo"),
        ("a|b", ""),
        ("(?i)x", ""),
    ],
)
def test_leading_literal(pattern: str, literal: str) -> None:
    assert device._leading_literal(pattern) == literal


def test_agents_that_are_not_valid_unicode_are_parsed() -> None:
    # A str holding a lone surrogate cannot be encoded for RE2 or ua-parser; it is parsed
    # with "?" in its place instead of raising.
    assert parse_device(IPHONE_SAFARI + " \udc80") == parse_device(IPHONE_SAFARI + " ?")
    assert parse_device(IPHONE_SAFARI + " \udc80").bot_reason is None


def _our_agents() -> list[str]:
    """Our agent lists: the fixtures' people and bots, and the benchmarks' realistic mix
    (real browsers, in-app variants with build fields, previewers) and cold-round
    in-app agents (when ``fake-useragent``, the bench extra, is installed)."""
    agents = [param.values[0] for param in [*HUMANS, *BOTS]]
    try:
        from benchmarks.user_agents import in_app_templates, realistic_agents
    except ImportError:  # pragma: no cover - the bench extra is missing
        return agents
    agents += realistic_agents(2_000, seed=1)
    agents += [t % (10**9 + i) for i, t in enumerate(in_app_templates(1_000, seed=2))]
    return agents


def test_crawler_verdict_is_crawlerdetects_on_our_agent_lists() -> None:
    agents = _our_agents()
    assert len(agents) > 50
    mismatches = [ua for ua in agents if is_crawler(ua) != reference.is_crawler(ua)]
    assert mismatches == []


def test_browser_and_os_are_the_plain_resolvers_on_our_agent_lists() -> None:
    # parse_device calls ua-parser's Rust extractors directly; the families must be those
    # of the plain Resolver (the package's own wrapper), "Other" read as unknown.
    resolver = Resolver(load_lazy_builtins())
    domains = Domain.USER_AGENT | Domain.OS
    device._parse.cache_clear()
    mismatches = []
    for ua in _our_agents():
        result = resolver(ua, domains)
        os_family = result.os.family if result.os else "Other"
        browser = result.user_agent.family if result.user_agent else "Other"
        expected = (
            None if os_family == "Other" else os_family,
            None if browser == "Other" else browser,
        )
        parsed = parse_device(ua)
        if (parsed.os, parsed.browser) != expected:
            mismatches.append(ua)
    assert mismatches == []
