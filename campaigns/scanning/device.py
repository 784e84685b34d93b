"""User-agent parsing and bot detection for scans.

A scan's agent answers two questions: what device is it (ua-parser's uap-core regexes,
through its Rust resolver ``ua-parser-rs``, browser and OS domains only) and is it a
person? Not a person, in order of precedence (``Device.bot_reason``):

``previewer``
    a link previewer or unfurler: messaging and social apps fetch a short link when it
    is pasted in a chat or a post (Slack, WhatsApp, iMessage, Discord, ...).
``scanner``
    a URL-safety scanner checking a link before a person opens it (Google's Safe
    Browsing fetcher, Microsoft Office's link checks).
``crawler``
    exactly CrawlerDetect's verdict (JayBizzle's Crawler-Detect list as packaged by
    ``crawlerdetect``; see ``is_crawler``).
``no_user_agent``
    no agent, or one too short to be any browser's (fewer than 8 characters).

Cost: a first-seen agent is the common case (a poster or a TV spot brings thousands of
new agents a minute, and in-app browsers carry per-install build fields), so nothing
here runs Python's ``re`` over the 1,462 crawler patterns (1 to 3 ms an agent); they are
compiled once into one RE2 automaton (``google-re2``), which matches in linear time.
``benchmarks/user_agents.py`` measures the cold cost per component. Results are then
memoised (8,192 agents) for repeat visitors.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from functools import lru_cache
from typing import Literal, NamedTuple

import re2
from crawlerdetect import CrawlerDetect
from crawlerdetect.providers.crawlers import data as _crawler_patterns
from crawlerdetect.providers.exclusions import data as _exclusion_patterns
from ua_parser import Domain, load_lazy_builtins
from ua_parser.regex import Resolver

BotReason = Literal["previewer", "scanner", "crawler", "no_user_agent"]

#: Shorter agents (after stripping spaces) are no browser's: the shortest real ones are
#: tens of characters.
MIN_AGENT_LENGTH = 8
#: Only this prefix of an agent is looked at, so the cost and the memo stay bounded
#: whatever a client sends.
MAX_AGENT_LENGTH = 512

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.case_sensitive = False
_RE2_OPTIONS.log_errors = False  # a pattern RE2 rejects is handled below, not logged

#: Link previewers and unfurlers that fetch a URL without a person tapping it.
_PREVIEWERS = (
    r"slackbot|slack-imgproxy|facebookexternalhit|facebookcatalog|meta-externalagent|"
    r"whatsapp|twitterbot|discordbot|telegrambot|linkedinbot|skypeuripreview|"
    r"pinterestbot|redditbot|embedly|iframely|vkshare|snap url preview|"
    r"google-pagerenderer|googleother|applebot|bingpreview|mastodon/|bluesky cardyb|"
    r"microsoftpreview|outlook-ios-linkpreview|quora link preview"
)
#: URL-safety scanners: Google's Safe Browsing fetcher and Microsoft Office's checks of a
#: link clicked in a document or a mail (it probes the URL before opening the browser).
_SCANNERS = (
    r"google-safety|ms-office|microsoft office existence discovery|"
    r"microsoft office protocol discovery"
)
#: Device-type hints, read when ua-parser's families leave the form factor open.
_TABLET = r"ipad|tablet|kindle|silk/|playbook|sm-t\d|\bnexus (7|9|10)\b"
_MOBILE = r"mobi|iphone|ipod|android.+mobile|windows phone|blackberry|opera mini"
# One RE2 set: a single pass over the agent tells which of these lists match (several
# may), ~1 µs where Python's ``re`` took ~40 µs for the same lists. The same set also
# holds crawlerdetect's exclusion patterns (``_EXCLUSION_OF_SET_INDEX``, below): a
# pattern's verdict in a set does not depend on the other patterns, and one pass (one
# call into RE2) over the agent answers both questions.
_PREVIEWER, _SCANNER, _IS_TABLET, _IS_MOBILE = range(4)
_SETS = re2.Set.SearchSet(_RE2_OPTIONS)
for _pattern in (_PREVIEWERS, _SCANNERS, _TABLET, _MOBILE):  # in the indices' order
    _SETS.Add(_pattern)


def _leading_literal(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with, lowercased ("" when
    there is none that is certain: an alternation, or a metacharacter first)."""
    if "|" in pattern:
        return ""
    pattern = pattern.removeprefix("^")
    end = next((i for i, c in enumerate(pattern) if c in "\\.^$*+?{}[]()|"), len(pattern))
    if pattern[end : end + 1] in ("*", "?", "{"):
        end -= 1  # a quantifier makes the character before it optional
    return pattern[: max(end, 0)].lower()


# CrawlerDetect's crawler patterns as one RE2 alternation, except those RE2 cannot
# express (look-arounds, back-references: today only ``Yandex(?!Search)``), compiled with
# Python's ``re`` and paired with the literal their matches start with: they are searched
# only when the agent contains it (``_leading_literal`` finds it, or "" to always search).
_re2_patterns: list[str] = []
_CRAWLERS_FOR_PYTHON: list[tuple[str, re.Pattern[str]]] = []
for _pattern in _crawler_patterns:
    try:
        re2.compile(_pattern, _RE2_OPTIONS)
    except re2.error:
        _CRAWLERS_FOR_PYTHON.append((_leading_literal(_pattern), re.compile(_pattern, re.I)))
    else:
        _re2_patterns.append(_pattern)
_CRAWLERS = re2.compile("|".join(_re2_patterns), _RE2_OPTIONS)
# Removed from an agent before the crawler patterns are searched (so "Mozilla" or
# "cubot" do not count), built the way crawlerdetect builds it: one alternation with
# Python's ``re`` semantics (leftmost-first, non-overlapping), which the removal's result
# depends on. Only printable-ASCII agents get here, on which ``re.ASCII`` changes no match.
_EXCLUSIONS = re.compile(f"({'|'.join(_exclusion_patterns)})", re.IGNORECASE | re.ASCII)
# Which exclusion patterns occur in an agent at all, in the RE2 pass of ``_SETS``.
# ``re.sub`` scans the ORIGINAL agent for leftmost-first, non-overlapping matches, so a
# pattern that matches nowhere in it never wins at any position: the alternation of the
# patterns that do occur, in their original order, removes exactly what the whole one
# removes, and with a handful of alternatives instead of ~50 it is several times faster.
# Patterns RE2 cannot express are always kept (today none). ``tests/scanning/
# test_device.py`` checks the verdicts against crawlerdetect's own agents.
_FIRST_EXCLUSION = _IS_MOBILE + 1  # the four lists come first in the set
_EXCLUSION_OF_SET_INDEX: dict[int, int] = {}  # set index -> exclusion pattern index
_EXCLUSIONS_ALWAYS: list[int] = []
for _index, _pattern in enumerate(_exclusion_patterns):
    try:
        _set_index = _SETS.Add(_pattern)
    except re2.error:
        _EXCLUSIONS_ALWAYS.append(_index)
    else:
        _EXCLUSION_OF_SET_INDEX[_set_index] = _index
_SETS.Compile()

# The removal runs case-sensitively on the LOWER-CASED agent, with each exclusion pattern
# lower-cased (``_lowered``): on printable ASCII, a case-insensitive match of ``p`` in
# ``s`` is a match of ``p.lower()`` in ``s.lower()`` at the same span, and Python's ``re``
# is ~40 % faster without ``IGNORECASE``. The crawler patterns are then searched
# case-insensitively on that lower-cased result, which gives the same verdict. Without
# ``IGNORECASE``, ``re`` also skips positions that cannot start any alternative (its
# first-character prefilter) when every alternative starts with a literal character: the
# two that do not are rewritten below, into the same matches (``(like )?Gecko`` is tried
# with "like " first, then without it: the alternation ``like gecko|gecko`` in that
# order). Together ~2.5 times faster (13 -> 5 µs on a long in-app agent).
_PREFIX_FRIENDLY = {
    "(like )?Gecko(.[\\d\\.]*)?": "like gecko(?:.[\\d\\.]*)?|gecko(?:.[\\d\\.]*)?",
    "[ ]Intel": " intel",
}
# Escapes that stand for letters, inline flags, or upper-case letters inside a class
# (a range such as ``[A-z]`` would change meaning): such a pattern keeps its text and
# gets a scoped case-insensitive group instead of being lower-cased.
_NOT_LOWERABLE = re.compile(r"\\[xuUN0-7]|\(\?[a-zA-Z]|\[[^\]]*[A-Z]")


def _lowered(pattern: str) -> str:
    """``pattern`` for a case-sensitive search of a lower-cased ASCII agent, as one
    alternative (or several, in order) of an alternation: its letters lower-cased, its
    escapes (``\\d``, ``\\.``) as they are; or, for a pattern not safe to lower-case,
    itself under ``(?i:...)``. Left bare when it has no ``|`` of its own, so that ``re``'s
    first-character prefilter sees its first literal."""
    if pattern in _PREFIX_FRIENDLY:
        return _PREFIX_FRIENDLY[pattern]
    if _NOT_LOWERABLE.search(pattern):
        return f"(?i:{pattern})"
    lowered = re.sub(r"\\.|[A-Z]", _lower_letter, pattern)
    return lowered if "|" not in lowered else f"(?:{lowered})"


def _lower_letter(match: re.Match[str]) -> str:
    text = match.group()
    return text if text.startswith("\\") else text.lower()


_LOWERED_EXCLUSIONS = [_lowered(pattern) for pattern in _exclusion_patterns]


@lru_cache(maxsize=4096)
def _exclusions_among(indices: tuple[int, ...]) -> re.Pattern[str]:
    """The lower-cased exclusion alternation restricted to ``indices`` (ascending: the
    original order, which decides which alternative wins at a position)."""
    return re.compile("|".join(_LOWERED_EXCLUSIONS[i] for i in indices), re.ASCII)


def _remove_exclusions(ua: str, matched: Collection[int] | None = None) -> str:
    """``_EXCLUSIONS.sub("", ua).lower()`` for a printable-ASCII ``ua``, computed on
    ``ua.lower()`` with only the exclusion patterns that occur in it (see
    :data:`_EXCLUSION_OF_SET_INDEX`); ``matched`` is ``_SETS.Match(ua)`` when the caller
    has it already."""
    if matched is None:
        matched = _SETS.Match(ua) or ()
    found = [_EXCLUSION_OF_SET_INDEX[i] for i in matched if i >= _FIRST_EXCLUSION]
    if _EXCLUSIONS_ALWAYS:
        found.extend(_EXCLUSIONS_ALWAYS)
    if not found:
        return ua.lower()
    return _exclusions_among(tuple(sorted(found))).sub("", ua.lower())


# The reference, for the rare agents that are not printable ASCII (see ``is_crawler``).
_crawler_detect = CrawlerDetect()
# Browser and OS only: the device domain (brand and model) is the costliest and unused.
_uap = Resolver(load_lazy_builtins())
_DOMAINS = Domain.USER_AGENT | Domain.OS
# The resolver's own Rust extractors, called directly: ``Resolver.__call__`` only copies
# their fields into new objects (a third of its ~10 µs). ``_uap(ua, _DOMAINS)`` gives the
# same families (tests compare them on our agent lists).
_extract_browser = _uap.ua.extract
_extract_os = _uap.os.extract


class Device(NamedTuple):
    """What a user agent says.

    ``device_type`` is ``mobile|tablet|desktop|bot|unknown``; ``os`` and ``browser`` are
    uap-core families (``"iOS"``, ``"Chrome Mobile"``), None when unknown; ``is_bot`` is
    ``bot_reason is not None``; ``bot_reason`` is ``previewer|scanner|crawler|
    no_user_agent`` (see the module's docstring) or None for a person.
    """

    device_type: str
    os: str | None
    browser: str | None
    is_bot: bool
    bot_reason: BotReason | None


def is_crawler(user_agent: str) -> bool:
    """CrawlerDetect's verdict, ``CrawlerDetect().is_crawler(user_agent)``, in microseconds.

    The same steps as crawlerdetect: strip, remove the exclusion patterns, then search
    the crawler patterns (all case-insensitively, so on the lower-cased agent); the
    search runs on RE2 instead of Python's ``re``. No crawler
    pattern can match the empty string (tests check it), so "some pattern matches" is
    the library's "the leftmost match is not empty", and the patterns RE2 cannot express
    are searched separately with ``re``, only when the agent contains the literal they
    start with. RE2's ``\\s``, ``\\d``, ``\\w``, ``$`` and case folding equal Python's on
    printable ASCII only, so any other agent (rare: the library's 169,000 test agents
    have 12) gets crawlerdetect itself. Tests compare both on all those agents.
    """
    return _is_crawler(user_agent.strip(), None)


def _is_crawler(ua: str, matched: Collection[int] | None) -> bool:
    """:func:`is_crawler` of a stripped agent ``ua``; ``matched`` is ``_SETS.Match(ua)``
    when the caller has it already (None: matched here)."""
    if not (ua.isascii() and ua.isprintable()):
        return bool(_crawler_detect.is_crawler(ua))
    agent = _remove_exclusions(ua, matched)  # lower-cased: every search below ignores case
    if not agent:
        return False
    # Bytes (the agent is ASCII): the wrapper skips its offset bookkeeping for text.
    if _CRAWLERS.search(agent.encode("ascii")) is not None:
        return True
    return any(
        literal in agent and pattern.search(agent) is not None
        for literal, pattern in _CRAWLERS_FOR_PYTHON
    )


def parse_device(user_agent: str | None) -> Device:
    """Parse a ``User-Agent`` header; only its first 512 characters are looked at.

    No agent gives ``Device("unknown", None, None, True, "no_user_agent")``; a bot's
    ``device_type`` is ``"bot"`` (its OS and browser are still parsed).
    """
    if not user_agent:
        return Device("unknown", None, None, True, "no_user_agent")
    ua = user_agent[:MAX_AGENT_LENGTH]
    if not ua.isascii():
        # Lone surrogates (never in a header decoded as Latin-1) cannot be encoded for
        # RE2 and ua-parser: they become "?".
        ua = ua.encode("utf-8", "replace").decode("utf-8")
    return _parse(ua)


def _bot_reason(ua: str, matched: Collection[int]) -> BotReason | None:
    if _PREVIEWER in matched:
        return "previewer"
    if _SCANNER in matched:
        return "scanner"
    stripped = ua.strip()
    # The set's matches of ``ua`` are those of the stripped agent when nothing was
    # stripped (the usual case); else the crawler check matches the stripped one itself.
    if _is_crawler(stripped, matched if len(stripped) == len(ua) else None):
        return "crawler"
    if len(ua.strip()) < MIN_AGENT_LENGTH:
        return "no_user_agent"
    return None


@lru_cache(maxsize=8192)
def _parse(ua: str) -> Device:
    # Memoised on the 512-character prefix, never on the whole header: the memo's memory
    # stays bounded (8192 x 512 characters) whatever clients send.
    matched = _SETS.Match(ua) or ()
    reason = _bot_reason(ua, matched)
    found_os = _extract_os(ua)
    os_family = found_os.family if found_os and found_os.family != "Other" else None
    found_browser = _extract_browser(ua)
    browser = found_browser.family if found_browser and found_browser.family != "Other" else None
    if reason is not None:
        device_type = "bot"
    elif _IS_TABLET in matched or (os_family == "Android" and "mobile" not in ua.lower()):
        device_type = "tablet"
    elif _IS_MOBILE in matched:
        device_type = "mobile"
    elif os_family is not None or browser is not None:
        device_type = "desktop"
    else:
        device_type = "unknown"
    return Device(device_type, os_family, browser, reason is not None, reason)
