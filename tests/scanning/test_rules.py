"""Redirect rules in memory: conditions, order, sticky splits, preferred language."""

from __future__ import annotations

from typing import Any

import pytest

from campaigns.scanning.rules import Rule, RuleCache, preferred_language, preferred_languages

SPLIT = [
    {"name": "a", "destination_url": "https://x.example/a", "weight": 3},
    {"name": "b", "destination_url": "https://x.example/b", "weight": 1},
]


def rule(conditions: dict[str, object], *, split: list[dict[str, object]] | None = None) -> Rule:
    destination = None if split else "https://x.example/"
    return Rule.from_row((7, 1, 10, conditions, destination, split))


SCAN: dict[str, Any] = {
    "country": "FR",
    "location_id": 3,
    "os": "iOS",
    "device_type": "mobile",
    "language": "fr",
}


@pytest.mark.parametrize(
    ("conditions", "matches"),
    [
        ({}, True),
        ({"countries": ["FR", "BE"]}, True),
        ({"countries": ["BE"]}, False),
        ({"location_ids": [3]}, True),
        ({"location_ids": [4]}, False),
        ({"os": ["ios"]}, True),  # without case
        ({"os": ["Android"]}, False),
        ({"device_types": ["MOBILE"]}, True),
        ({"languages": ["fr"]}, True),
        ({"languages": ["en"]}, False),
        ({"countries": ["FR"], "os": ["Android"]}, False),  # every condition must hold
    ],
)
def test_conditions(conditions: dict[str, object], matches: bool) -> None:
    assert rule(conditions).matches(**SCAN) is matches


def test_an_unknown_value_never_meets_a_condition() -> None:
    unknown = {**SCAN, "country": None, "location_id": None}
    assert rule({"countries": ["FR"]}).matches(**unknown) is False
    assert rule({"location_ids": [3]}).matches(**unknown) is False
    assert rule({"os": ["iOS"]}).matches(**unknown) is True


def test_splits_follow_the_weights_and_stick_to_the_visitor() -> None:
    split = rule({}, split=SPLIT)
    picks = [split.choose(i.to_bytes(16, "big"))[1] for i in range(4000)]
    assert 2800 < picks.count("a") < 3200  # weight 3 of 4
    assert picks.count("a") + picks.count("b") == 4000
    visitor = bytes(range(16))
    assert len({split.choose(visitor) for _ in range(10)}) == 1
    url, variant = split.choose(visitor)
    assert url == f"https://x.example/{variant}"
    assert rule({}).choose(visitor) == ("https://x.example/", None)


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, None),
        ("", None),
        ("fr-FR,fr;q=0.9,en;q=0.8", "fr"),
        ("en;q=0.5, de;q=0.9", "de"),
        ("*, es", "es"),
        ("fr;q=0, nl", "nl"),
        ("pt-BR;q=abc, it;q=0.1", "it"),
    ],
)
def test_preferred_language(header: str | None, language: str | None) -> None:
    assert preferred_language(header) == language


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, []),
        ("", []),
        ("fr-FR,fr;q=0.9,en;q=0.8", ["fr", "en"]),
        ("en;q=0.5, de, *;q=0.1", ["de", "en"]),
        ("nl;q=0, es", ["es"]),
        ("pt-BR;q=0.8, it;q=0.8", ["pt", "it"]),  # ties keep the order given
        ("x1;q=1, ja;q=abc, ko", ["ko"]),  # malformed tag and weight skipped
    ],
)
def test_preferred_languages_follow_weights_then_order(
    header: str | None, expected: list[str]
) -> None:
    assert preferred_languages(header) == expected


class _Rows:
    """A stand-in psycopg connection answering every query with ``rows``."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    async def execute(self, *_: object) -> _Rows:
        return self

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


async def test_first_match_walks_by_priority_and_forgets_when_rules_change() -> None:
    cache = RuleCache()
    folded = {**SCAN, "os": "ios"}
    await cache.load_all(
        _Rows(  # type: ignore[arg-type]
            [
                (1, 1, 20, {}, "https://x.example/catch-all", None),
                (2, 1, 10, {"countries": ["BE"]}, "https://x.example/be", None),
                (3, 1, 10, {"os": ["iOS"], "languages": ["fr"]}, "https://x.example/ios", None),
            ]
        )
    )
    first = cache.first_match(1, **folded)
    assert first is not None and first.id == 3
    assert cache.first_match(1, **folded) is first  # remembered
    assert cache.first_match(1, **{**folded, "os": "android"}).id == 1  # type: ignore[union-attr]
    assert cache.first_match(2, **folded) is None  # another campaign: no rules
    await cache.load_all(_Rows([(1, 1, 20, {}, "https://x.example/catch-all", None)]))  # type: ignore[arg-type]
    again = cache.first_match(1, **folded)
    assert again is not None and again.id == 1
