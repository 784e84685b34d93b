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
_TABLET = re.compile(r"ipad|tablet|kindle|silk/|playbook|sm-t\d|\bnexus (7|9|10)\b", re.IGNORECASE)
_MOBILE = re.compile(r"mobi|iphone|ipod|android.+mobile|windows phone|blackberry|opera mini", re.I)

_crawler_detect = CrawlerDetect()


class Device(NamedTuple):
    """What a user agent says: ``device_type`` is ``mobile|tablet|desktop|bot|unknown``."""

    device_type: str
    os: str | None
    browser: str | None
    is_bot: bool


def is_bot(user_agent: str) -> bool:
    """True for crawlers, link previewers, and empty or absurdly short agents."""
    ua = user_agent.strip()
    if len(ua) < 8:
        return True
    return bool(_PREVIEWERS.search(ua)) or bool(_crawler_detect.isCrawler(ua))


def parse_device(user_agent: str | None) -> Device:
    """Parse a ``User-Agent`` header (at most 512 characters are looked at)."""
    if not user_agent:
        return Device("unknown", None, None, True)
    return _parse(user_agent[:512])


@lru_cache(maxsize=8192)
def _parse(ua: str) -> Device:
    # Memoised on the 512-character prefix, never on the whole header: the memo's memory
    # stays bounded (8192 x 512 characters) whatever clients send.
    bot = is_bot(ua)
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
    return Device(device_type, os_family, browser, bot)
