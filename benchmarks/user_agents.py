"""Cost of parsing a first-seen user agent (``parse_device`` on a memo miss), by component.

A scan's agent is parsed once per server process and memoised; a poster or a TV spot
brings thousands of agents the process has never seen (in-app browsers carry
per-install build fields), so the miss path is the one that matters under load. This
script builds a few thousand distinct, realistic agents (``realistic_agents``: the
``fake-useragent`` package's real browser agents, plus in-app variants of its phone
agents with random build fields, plus link previewers), then prints per-agent
microseconds (mean, p50, p99) for:

- ``parse_device`` cold (memo cleared, every agent new) and warm (memo hit);
- its components: previewer/scanner set (RE2), crawler exclusions (``re``), crawler
  patterns (RE2), the whole crawler verdict, ua-parser (Rust resolver, browser + OS);
- the previous implementation for comparison: ``CrawlerDetect().is_crawler`` (Python
  ``re`` over 1,462 patterns) and ``ua_parser.parse`` (all domains).

    pip install 'fake-useragent>=2.2'    # the ``bench`` extra
    python benchmarks/user_agents.py [--agents 4000] [--seed 1]

Figures on a shared machine are noisy: compare components within one run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campaigns.scanning import device  # noqa: E402

#: Link previewers, a small share of the traffic a shared link gets.
PREVIEWERS = (
    "WhatsApp/2.{minor}.{patch}.{build} A",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "TelegramBot (like TwitterBot)",
)


def _in_app(base: str, os: str, rng: random.Random, install: str) -> str:
    """``base`` (a phone browser's agent) as a social or messaging app's in-app browser:
    the app's token with its build fields, as those apps send them; ``install`` goes in
    the field that differs per install or build."""
    r = rng.randrange
    app = rng.choice(("instagram", "facebook", "tiktok", "whatsapp", "snapchat"))
    ios = os == "iOS"
    if app == "instagram" and ios:
        return (
            f"{base} Instagram {r(300, 400)}.0.0.{r(10, 60)}.{r(60, 120)} "
            f"(iPhone{r(12, 17)},{r(1, 5)}; iOS 18_{r(0, 7)}; fr_FR; fr; scale=3.00; "
            f"1179x2556; {install}; IABMV/1)"
        )
    if app == "instagram":
        return (
            f"{base} Instagram {r(300, 400)}.0.0.{r(10, 60)}.{r(60, 120)} Android "
            f"({r(29, 36)}/{r(10, 16)}; {rng.choice((420, 450, 480, 560))}dpi; 1080x2400; "
            f"samsung; SM-{rng.choice('ASGN')}{r(100, 999)}B; o1s; exynos2100; en_US; "
            f"{install})"
        )
    if app == "facebook" and ios:
        return (
            f"{base} [FBAN/FBIOS;FBAV/{r(400, 520)}.0.0.{r(10, 60)}.{r(10, 120)};"
            f"FBBV/{install};FBDV/iPhone{r(12, 17)},{r(1, 5)};FBMD/iPhone;"
            f"FBSN/iOS;FBSV/18.{r(0, 7)};FBSS/3;FBID/phone;FBLC/fr_FR;FBOP/5;"
            f"FBRV/{r(10**8, 10**9)};IABMV/1]"
        )
    if app == "facebook":
        return (
            f"{base} [FB_IAB/FB4A;FBAV/{r(400, 520)}.0.0.{r(10, 60)}.{r(10, 120)};"
            f"FBBV/{install};IABMV/1;]"
        )
    if app == "tiktok":
        return (
            f"{base} musical_ly_{r(30, 41)}.{r(0, 9)}.{r(0, 9)} JsSdk/2.0 NetType/"
            f"{rng.choice(('WIFI', '4G', '5G'))} Channel/App Store ByteLocale/fr Region/FR "
            f"isDarkMode/{r(2)} WKWebView/1 BytedanceWebview/d{install}"
        )
    if app == "whatsapp" and ios:
        return f"{base} [WAiOS/2.25.{install}]"
    if app == "whatsapp":
        return f"{base} [WA4A/2.25.{r(1, 40)}.{install};]"
    return f"{base} Snapchat/13.{r(20, 60)}.0.{install} (like Safari/8621.{r(1, 4)}, panda)"


def _phones() -> list[tuple[str, str]]:
    """(agent, OS) of fake-useragent's distinct iOS and Android browser agents."""
    from fake_useragent.utils import load  # bench extra: fake-useragent

    rows = load()
    return sorted({(r["useragent"], r["os"]) for r in rows if r["os"] in ("iOS", "Android")})


def realistic_agents(n: int, seed: int = 1) -> list[str]:
    """``n`` distinct agents in a phone-heavy mix: every distinct real agent of
    ``fake-useragent`` (up to ``n // 4``), ~2 % link previewers, the rest in-app browser
    variants of its iOS and Android agents. Deterministic for a seed."""
    from fake_useragent.utils import load  # bench extra: fake-useragent

    rng = random.Random(seed)
    real = sorted({row["useragent"] for row in load()})
    phones = _phones()
    agents: set[str] = set(rng.sample(real, min(len(real), n // 4)))
    while len(agents) < n:
        if rng.random() < 0.02:
            minor, patch, build = rng.randrange(20, 26), rng.randrange(1, 30), rng.randrange(99)
            agents.add(rng.choice(PREVIEWERS).format(minor=minor, patch=patch, build=build))
        else:
            base, os = rng.choice(phones)
            agents.add(_in_app(base, os, rng, str(rng.randrange(10**8, 10**9))))
    ordered = sorted(agents)
    rng.shuffle(ordered)
    return ordered


def in_app_templates(n: int, seed: int = 1) -> list[str]:
    """``n`` in-app browser agents with a ``%d`` (``printf``/Lua ``string.format``) where
    the per-install number goes: filling it with a number never used before gives an
    agent no server has seen, like each new install a TV spot brings."""
    rng = random.Random(seed)
    phones = _phones()
    templates = set()
    while len(templates) < n:
        base, os = rng.choice(phones)
        templates.add(_in_app(base.replace("%", "%%"), os, rng, "%d"))
    return sorted(templates)


def per_agent_us(fn: Callable[[str], object], agents: list[str]) -> list[float]:
    """Microseconds ``fn`` takes on each agent, one call each."""
    clock = time.perf_counter_ns
    out = []
    for ua in agents:
        started = clock()
        fn(ua)
        out.append((clock() - started) / 1000)
    return out


def report(label: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"{label:<52} mean {statistics.fmean(ordered):8.1f}   "
        f"p50 {statistics.median(ordered):8.1f}   p99 {p99:8.1f}   (n={len(ordered)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=4000, help="distinct agents per set")
    parser.add_argument("--reference", type=int, default=500, help="agents for the old path")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    # Disjoint sets, so no measurement profits from another's work on the same strings:
    # ``start`` is met by a process that just started (the regex engines' lazily built
    # DFA states are cold too), ``steady`` by a process that has already parsed ``start``
    # (agents still first-seen: the server's common case), ``parts`` for the components.
    pool = realistic_agents(3 * args.agents, args.seed)
    start, steady, parts = (pool[i * args.agents : (i + 1) * args.agents] for i in range(3))
    print(f"# 3 x {args.agents} distinct agents, µs per agent (shared machine: noisy)")

    device.parse_device(start[0] + " warm-up")  # first-call costs are paid at server start
    device._parse.cache_clear()
    report("parse_device, first-seen, fresh process", per_agent_us(device.parse_device, start))
    report("parse_device, first-seen, running process", per_agent_us(device.parse_device, steady))
    report("parse_device, memo hit", per_agent_us(device.parse_device, steady))

    stripped = [device._EXCLUSIONS.sub("", ua.strip()) for ua in parts]
    sets = per_agent_us(device._SETS.Match, parts)
    report("  previewer, scanner, tablet, mobile set (RE2)", sets)
    report(
        "  crawler exclusions (re, 52 patterns, ASCII)",
        per_agent_us(lambda ua: device._EXCLUSIONS.sub("", ua.strip()), parts),
    )
    report(
        "  crawler patterns (RE2, 1,461 patterns)", per_agent_us(device._CRAWLERS.search, stripped)
    )
    report("  crawler verdict in all (is_crawler)", per_agent_us(device.is_crawler, parts))
    report(
        "  ua-parser browser + OS (Rust resolver)",
        per_agent_us(lambda ua: device._uap(ua, device._DOMAINS), parts),
    )

    # The previous implementation, on fewer agents (it is slow).
    import ua_parser
    from crawlerdetect import CrawlerDetect

    reference = parts[: args.reference]
    ua_parser.parse("warm-up")
    old_crawler = per_agent_us(CrawlerDetect().is_crawler, reference)
    old_uap = per_agent_us(ua_parser.parse, reference)
    report("before: crawlerdetect is_crawler (re)", old_crawler)
    report("before: ua_parser.parse (all domains)", old_uap)
    report("before: both", [a + b for a, b in zip(old_crawler, old_uap, strict=True)])


if __name__ == "__main__":
    main()
