"""Pure functions of the scan path: tag codes, click ids, short URLs, destinations."""

from __future__ import annotations

import base64
import random
import re
from urllib.parse import parse_qsl, urlsplit

import pytest

from campaigns.payloads.qr import qr_version
from campaigns.scanning.links import (
    CLICK_ID_PARAM,
    CODE_LENGTH,
    CROCKFORD_ALPHABET,
    build_destination,
    largest_qr_url,
    new_click_id,
    new_code,
    normalize_code,
    qr_url,
    scan_utm,
    short_url,
)

CODE_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{8}$")
UTM = {"source": "passerelle", "medium": "qr", "campaign": "summer", "content": "window-1"}


def test_alphabet_is_crockford_base32() -> None:
    assert len(CROCKFORD_ALPHABET) == 32
    assert len(set(CROCKFORD_ALPHABET)) == 32
    assert not set("ILOU") & set(CROCKFORD_ALPHABET)
    assert CROCKFORD_ALPHABET == CROCKFORD_ALPHABET.upper()


def test_new_code_is_8_upper_case_crockford_characters() -> None:
    codes = [new_code() for _ in range(2000)]
    assert CODE_LENGTH == 8
    assert all(CODE_RE.fullmatch(code) for code in codes)
    assert len(set(codes)) == len(codes)  # 40 random bits: no collision in 2000 draws


def test_new_code_uses_the_whole_alphabet_at_every_position() -> None:
    codes = [new_code() for _ in range(3000)]
    for position in range(CODE_LENGTH):
        # 3000 draws over 32 symbols: a fair source misses none of them.
        assert {code[position] for code in codes} == set(CROCKFORD_ALPHABET)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ABCD2345", "ABCD2345"),
        ("abcd2345", "ABCD2345"),
        ("AbCd2345", "ABCD2345"),
        # Crockford look-alikes typed by people: I and L read as 1, O as 0.
        ("ab0i1lo9", "AB01110" + "9"),
        ("OOOOOOOO", "00000000"),
    ],
)
def test_normalize_code_accepts_any_case_and_look_alikes(raw: str, expected: str) -> None:
    assert normalize_code(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ABCD234",  # 7
        "ABCD23456",  # 9
        "A" * 10_000,
        "ABCD234U",  # U is not in the alphabet
        "ABCD-234",
        "ABCD 234",
        "ABCD23%5",
        "ABCD234é",
        "ＡＢＣＤ２３４５",  # full-width: upper() would not make these ASCII
        "ABCD234\u0131",  # dotless i upper-cases to ASCII I
        "abcd234\u017f",  # long s upper-cases to ASCII S
        "ABCD234\x00",
        "../../..",
    ],
)
def test_normalize_code_rejects_what_cannot_be_a_code(raw: str) -> None:
    assert normalize_code(raw) is None


def test_click_ids_are_url_safe_unguessable_and_unique() -> None:
    ids = [new_click_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for click_id in ids[:100]:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", click_id)
        raw = base64.urlsafe_b64decode(click_id + "=" * (-len(click_id) % 4))
        assert len(raw) * 8 >= 64


def test_short_url_is_origin_slash_s_slash_code() -> None:
    assert short_url("https://go.example.com", "ABCD2345") == "https://go.example.com/s/ABCD2345"
    assert short_url("https://go.example.com/", "ABCD2345") == "https://go.example.com/s/ABCD2345"


def test_qr_url_fits_the_qr_alphanumeric_mode_after_the_scheme() -> None:
    url = qr_url("https://go.example.com", "abcd2345")
    assert url == "https://GO.EXAMPLE.COM/S/ABCD2345"
    rest = url.removeprefix("https://")
    assert set(rest) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def test_build_destination_adds_utm_and_click_id() -> None:
    url = build_destination("https://shop.example.com/summer", utm=UTM, click_id="abc_-123")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "shop.example.com", "/summer")
    assert dict(_query(url)) == {
        "utm_source": "passerelle",
        "utm_medium": "qr",
        "utm_campaign": "summer",
        "utm_content": "window-1",
        CLICK_ID_PARAM: "abc_-123",
    }


def test_build_destination_keeps_the_destinations_own_query_verbatim() -> None:
    # Valueless flags, percent-encodings and odd characters are the merchant's business
    # (some destinations sign their query string): they must come out byte for byte.
    own = "ref=print&flag&q=caf%C3%A9%20au%20lait&list=a,b&empty=&x=%2F~*"
    url = build_destination(f"https://shop.example.com/p?{own}#top", utm=UTM, click_id="c1")
    parts = urlsplit(url)
    assert parts.query.startswith(own + "&")
    assert parts.fragment == "top"
    assert _query(url)[-1] == (CLICK_ID_PARAM, "c1")


def test_build_destination_keeps_utm_values_the_destination_already_sets() -> None:
    url = build_destination(
        "https://shop.example.com/?utm_source=flyer&utm_campaign=", utm=UTM, click_id="c1"
    )
    pairs = _query(url)
    assert pairs.count(("utm_source", "flyer")) == 1
    assert ("utm_source", "passerelle") not in pairs
    assert [v for k, v in pairs if k == "utm_campaign"] == [""]
    assert ("utm_medium", "qr") in pairs
    assert ("utm_content", "window-1") in pairs


def test_build_destination_replaces_a_foreign_click_id() -> None:
    url = build_destination("https://shop.example.com/?pcid=forged&a=1", utm={}, click_id="real")
    assert _query(url) == [("a", "1"), (CLICK_ID_PARAM, "real")]


def test_build_destination_skips_empty_utm_values_and_missing_click_id() -> None:
    url = build_destination(
        "https://shop.example.com/x", utm={"source": "s", "term": ""}, click_id=None
    )
    assert url == "https://shop.example.com/x?utm_source=s"


def test_build_destination_encodes_utm_values() -> None:
    url = build_destination(
        "https://shop.example.com/", utm={"content": "Vitrine 1 & 2 — été"}, click_id=None
    )
    assert dict(_query(url)) == {"utm_content": "Vitrine 1 & 2 — été"}
    assert " " not in url and "é" not in url


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        (
            "https://shop.example.com/été?q=日本",
            "https://shop.example.com/%C3%A9t%C3%A9?q=%E6%97%A5%E6%9C%AC",
        ),
        ("https://shop.example.com/a|b{c}", "https://shop.example.com/a%7Cb%7Bc%7D"),
        ("https://shop.example.com/a\u2028b", "https://shop.example.com/a%E2%80%A8b"),
        ("https://shop.example.com/%E2%82%AC?x=%26", "https://shop.example.com/%E2%82%AC?x=%26"),
    ],
)
def test_build_destination_is_ascii_for_the_location_header(
    destination: str, expected: str
) -> None:
    url = build_destination(destination, utm={}, click_id=None)
    assert url == expected
    url.encode("ascii")


def test_scan_utm_defaults_and_what_wins() -> None:
    assert scan_utm(
        {}, channel="qr", campaign_slug="summer", tag_code="7KQ2M9XD", tag_label=None
    ) == {
        "source": "passerelle",
        "medium": "qr",
        "campaign": "summer",
        "content": "7KQ2M9XD",
        "term": "",
    }
    chosen = {"source": "flyer", "medium": "print", "campaign": "s26", "content": "c", "term": "t"}
    assert scan_utm(
        chosen, channel="nfc", campaign_slug="summer", tag_code="7KQ2M9XD", tag_label="door"
    ) == {"source": "flyer", "medium": "print", "campaign": "s26", "content": "door", "term": "t"}


@pytest.mark.parametrize(
    "origin", ["http://127.0.0.1:8794", "https://go.example.com", "https://x.fr", "https://a.b"]
)
def test_largest_qr_url_has_the_highest_version_of_any_code(origin: str) -> None:
    # A code's digits may use the denser numeric mode, so the version depends on the
    # code; largest_qr_url bounds every code (print.zip and sheets.pdf check sizes on it).
    rng = random.Random(1)
    codes = ["0" * 8, "00000ZZZ", "Z0Z0Z0Z0", "12345678"] + [
        "".join(rng.choice(CROCKFORD_ALPHABET) for _ in range(8)) for _ in range(200)
    ]
    for ecc in ("L", "M", "Q", "H"):
        largest = qr_version(largest_qr_url(origin), ecc=ecc)
        assert all(qr_version(qr_url(origin, code), ecc=ecc) <= largest for code in codes)
