"""User-agent parsing and bot detection with real, current user agents.

Phones (including in-app browsers of social apps) must count as people; crawlers and
the link previewers of messaging apps (which fetch a short link when it is pasted in a
chat) must not, or scan counts and unique visitors are inflated.
"""

from __future__ import annotations

import pytest

from campaigns.scanning import device
from campaigns.scanning.device import Device, is_bot, parse_device

IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1"
)
ANDROID_CHROME = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/137.0.0.0 Mobile Safari/537.36"
)
SAMSUNG_INTERNET = (
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/27.0 Chrome/125.0.0.0 Mobile Safari/537.36"
)
INSTAGRAM_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 Instagram 384.0.0.26.83 (iPhone15,3; iOS 18_5; "
    "en_US; en; scale=3.00; 1290x2796; 746358201; IABMV/1)"
)
INSTAGRAM_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/136.0.7103.125 Mobile Safari/537.36 "
    "Instagram 382.0.0.49.84 Android (34/14; 450dpi; 1080x2340; samsung; SM-S918B; dm3q; "
    "qcom; fr_FR; 745312365)"
)
FACEBOOK_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/517.0.0.41.108;FBBV/735338010;"
    "FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/18.5;FBSS/3;FBID/phone;FBLC/fr_FR;FBOP/5;"
    "FBRV/737042541;IABMV/1]"
)
FACEBOOK_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/136.0.7103.125 Mobile Safari/537.36 "
    "[FB_IAB/FB4A;FBAV/515.0.0.51.109;IABMV/1;]"
)
SNAPCHAT_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 Snapchat/13.45.0.36 (like Safari/8621.2.5.10.8, panda)"
)
SNAPCHAT_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240905.003; wv) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Version/4.0 Chrome/136.0.7103.125 Mobile Safari/537.36 "
    "Snapchat/13.45.0.36 (like Chrome/136.0.7103.125, panda)"
)
TIKTOK_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 musical_ly_40.0.0 JsSdk/2.0 NetType/WIFI "
    "Channel/App Store ByteLocale/fr Region/FR ByteFullLocale/fr-FR isDarkMode/0 "
    "WKWebView/1 RevealType/Dialog BytedanceWebview/d8a21c6"
)
LINKEDIN_APP = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [LinkedInApp]/9.31.2231"
)
IPAD_SAFARI = (
    "Mozilla/5.0 (iPad; CPU OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.5 Mobile/15E148 Safari/604.1"
)
GALAXY_TAB = (
    "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/137.0.0.0 Safari/537.36"
)
DESKTOP_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/137.0.0.0 Safari/537.36"
)
DESKTOP_SAFARI = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.5 Safari/605.1.15"
)

HUMANS = [
    pytest.param(IPHONE_SAFARI, "mobile", "iOS", "Mobile Safari", id="iphone-safari"),
    pytest.param(ANDROID_CHROME, "mobile", "Android", "Chrome Mobile", id="android-chrome"),
    pytest.param(SAMSUNG_INTERNET, "mobile", "Android", "Samsung Internet", id="samsung-internet"),
    pytest.param(INSTAGRAM_IOS, "mobile", "iOS", "Instagram", id="instagram-ios"),
    pytest.param(INSTAGRAM_ANDROID, "mobile", "Android", "Instagram", id="instagram-android"),
    pytest.param(FACEBOOK_IOS, "mobile", "iOS", "Facebook", id="facebook-ios-fban"),
    pytest.param(FACEBOOK_ANDROID, "mobile", "Android", "Facebook", id="facebook-android"),
    pytest.param(SNAPCHAT_IOS, "mobile", "iOS", None, id="snapchat-ios"),
    pytest.param(SNAPCHAT_ANDROID, "mobile", "Android", None, id="snapchat-android"),
    pytest.param(TIKTOK_IOS, "mobile", "iOS", None, id="tiktok-ios"),
    pytest.param(LINKEDIN_APP, "mobile", "iOS", None, id="linkedin-app"),
    pytest.param(IPAD_SAFARI, "tablet", "iOS", "Mobile Safari", id="ipad"),
    pytest.param(GALAXY_TAB, "tablet", "Android", None, id="android-tablet"),
    pytest.param(DESKTOP_CHROME, "desktop", "Windows", "Chrome", id="desktop-chrome"),
    pytest.param(DESKTOP_SAFARI, "desktop", "Mac OS X", "Safari", id="desktop-safari"),
]

BOTS = [
    pytest.param("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", id="slackbot"),
    pytest.param("Slackbot 1.0 (+https://api.slack.com/robots)", id="slackbot-plain"),
    pytest.param(
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        id="facebookexternalhit",
    ),
    pytest.param("WhatsApp/2.23.20.0 A", id="whatsapp-android"),
    pytest.param("WhatsApp/2.24.14.78 i", id="whatsapp-ios"),
    pytest.param("Twitterbot/1.0", id="twitterbot"),
    pytest.param(
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", id="discordbot"
    ),
    pytest.param("TelegramBot (like TwitterBot)", id="telegrambot"),
    pytest.param(
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        id="linkedinbot",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 "
        "(KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot "
        "Twitterbot/1.0",
        id="imessage-preview",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; Snap URL Preview Service; bot; snapchat; "
        "https://developers.snap.com/robots)",
        id="snapchat-previewer",
    ),
    pytest.param(
        "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 "
        "skype-url-preview@microsoft.com",
        id="skype-preview",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/137.0.7151.119 Mobile Safari/537.36 "
        "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        id="googlebot-smartphone",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", id="bingbot"
    ),
    pytest.param("curl/8.5.0", id="curl"),
    pytest.param("python-requests/2.32.3", id="python-requests"),
]


@pytest.mark.parametrize(("user_agent", "device_type", "os", "browser"), HUMANS)
def test_people_count_as_humans(
    user_agent: str, device_type: str, os: str, browser: str | None
) -> None:
    device = parse_device(user_agent)
    assert device.is_bot is False, device
    assert device.device_type == device_type
    assert device.os == os
    if browser is not None:
        assert device.browser == browser
    assert is_bot(user_agent) is False


@pytest.mark.parametrize("user_agent", BOTS)
def test_crawlers_and_link_previewers_are_bots(user_agent: str) -> None:
    device = parse_device(user_agent)
    assert device.is_bot is True
    assert device.device_type == "bot"
    assert is_bot(user_agent) is True


@pytest.mark.parametrize("user_agent", [None, "", " ", "x", "Mozilla"])
def test_missing_or_meaningless_agents_are_not_people(user_agent: str | None) -> None:
    assert parse_device(user_agent).is_bot is True


def test_no_agent_is_unknown_device() -> None:
    assert parse_device(None) == Device("unknown", None, None, True, "no_user_agent")
    assert parse_device("") == Device("unknown", None, None, True, "no_user_agent")


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


@pytest.mark.parametrize(
    ("user_agent", "reason"),
    [
        pytest.param(None, "no_user_agent", id="missing"),
        pytest.param("Mozilla", "no_user_agent", id="too-short"),
        pytest.param("WhatsApp/2.23.20.0 A", "previewer", id="whatsapp"),
        pytest.param(
            "Mozilla/5.0 (compatible; Google-Safety; +http://www.google.com/bot.html)",
            "scanner",
            id="google-safety",
        ),
        pytest.param("Mozilla/4.0 (compatible; ms-office; MSOffice 16)", "scanner", id="ms-office"),
        pytest.param("Microsoft Office Existence Discovery", "scanner", id="office-existence"),
        pytest.param(
            "Microsoft Office Protocol Discovery", "scanner", id="office-protocol-discovery"
        ),
        pytest.param("curl/8.5.0", "crawler", id="curl"),
        pytest.param(IPHONE_SAFARI, None, id="iphone"),
    ],
)
def test_bot_reason_names_the_first_rule_that_applies(
    user_agent: str | None, reason: str | None
) -> None:
    device = parse_device(user_agent)
    assert device.bot_reason == reason
    assert device.is_bot is (reason is not None)
