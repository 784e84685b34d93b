"""User-agent parsing and bot detection for scans.

Parsing uses ua-parser (uap-core regexes); crawler detection uses crawlerdetect
(JayBizzle's Crawler-Detect list) plus link-preview fetchers that messaging apps send
when a short link is pasted in a chat. Results are memoised: a few thousand distinct
agents cover almost all traffic.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from crawlerdetect import CrawlerDetect
from ua_parser import parse

#: Link previewers and unfurlers that fetch a URL without a person tapping it.
_PREVIEWERS = re.compile(
    r"slackbot|slack-imgproxy|facebookexternalhit|facebookcatalog|meta-externalagent|"
    r"whatsapp|twitterbot|discordbot|telegrambot|linkedinbot|skypeuripreview|"
    r"pinterestbot|redditbot|embedly|iframely|vkshare|snap url preview|"
    r"google-pagerenderer|googleother|applebot|bingpreview|mastodon/|bluesky cardyb|"
    r"microsoftpreview|outlook-ios-linkpreview|quora link preview",
    re.IGNORECASE,
)
#: Link checkers of mail and office suites: they fetch a link to vet or probe it, never
#: for a person (Google's Safe Browsing fetcher; Office's existence/protocol discovery).
_SCANNERS = re.compile(
    r"google-safety|ms-office|microsoft office (existence|protocol) discovery", re.IGNORECASE
)
#: Shorter agents cannot be a browser's (the shortest real ones run to dozens of chars).
_MIN_AGENT_LENGTH = 8
_TABLET = re.compile(r"ipad|tablet|kindle|silk/|playbook|sm-t\d|\bnexus (7|9|10)\b", re.IGNORECASE)
_MOBILE = re.compile(r"mobi|iphone|ipod|android.+mobile|windows phone|blackberry|opera mini", re.I)

_crawler_detect = CrawlerDetect()


class Device(NamedTuple):
    """What a user agent says: ``device_type`` is ``mobile|tablet|desktop|bot|unknown``;
    ``bot_reason`` why it is not a person: ``previewer`` (link unfurlers), ``scanner``
    (mail and office link checkers), ``crawler`` (Crawler-Detect's list) or
    ``no_user_agent`` (missing or too short to be a browser's), first that applies; None
    for a person's browser."""

    device_type: str
    os: str | None
    browser: str | None
    is_bot: bool
    bot_reason: str | None


def bot_reason(user_agent: str) -> str | None:
    """The agent's :attr:`Device.bot_reason`."""
    ua = user_agent.strip()
    if len(ua) < _MIN_AGENT_LENGTH:
        return "no_user_agent"
    if _PREVIEWERS.search(ua):
        return "previewer"
    if _SCANNERS.search(ua):
        return "scanner"
    if _crawler_detect.isCrawler(ua):
        return "crawler"
    return None


def is_bot(user_agent: str) -> bool:
    """True for crawlers, link previewers and checkers, and empty or short agents."""
    return bot_reason(user_agent) is not None


def parse_device(user_agent: str | None) -> Device:
    """Parse a ``User-Agent`` header (at most 512 characters are looked at)."""
    if not user_agent:
        return Device("unknown", None, None, True, "no_user_agent")
    return _parse(user_agent[:512])


@lru_cache(maxsize=8192)
def _parse(ua: str) -> Device:
    # Memoised on the 512-character prefix, never on the whole header: the memo's memory
    # stays bounded (8192 x 512 characters) whatever clients send.
    reason = bot_reason(ua)
    bot = reason is not None
    result = parse(ua)
    os_family = result.os.family if result.os and result.os.family != "Other" else None
    browser = (
        result.user_agent.family
        if result.user_agent and result.user_agent.family != "Other"
        else None
    )
    if bot:
        device_type = "bot"
    elif _TABLET.search(ua) or (os_family == "Android" and "mobile" not in ua.lower()):
        device_type = "tablet"
    elif _MOBILE.search(ua):
        device_type = "mobile"
    elif os_family is not None or browser is not None:
        device_type = "desktop"
    else:
        device_type = "unknown"
    return Device(device_type, os_family, browser, bot, reason)
