"""Attribution models (``campaigns/attribution.py``): credits computed by hand for journeys
of 1, 2, 3 and 5 touches, exact minor-unit splits, and properties over random journeys."""

from __future__ import annotations

import datetime as dt
import itertools
from fractions import Fraction as F

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.attribution import (
    MODELS,
    TIME_DECAY_DENOMINATOR,
    Model,
    Share,
    apportion,
    attribute,
    credits,
)

CONVERTED = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
D = TIME_DECAY_DENOMINATOR  # 10**15


def days_before(*days: int) -> list[dt.datetime]:
    """Touch times ``days`` before the conversion (oldest first)."""
    return [CONVERTED - d * DAY for d in days]


# Journeys whose touches are whole half-lives (7 days) apart, so time-decay weights are
# exact powers of 1/2 and the credits can be worked out by hand.
ONE = days_before(1)
TWO = days_before(8, 1)
THREE = days_before(15, 8, 1)
FIVE = days_before(29, 22, 15, 8, 1)

# Hand-computed credits. Time decay: weights 2^(-Δt/7 days) relative to the last touch.
# TWO:   weights 1/2, 1 -> 1/3, 2/3; in units of 1e-15: 333333333333333.33 and
#        666666666666666.67 -> floors sum to D - 1, the unit left goes to .67.
# THREE: weights 1/4, 1/2, 1 -> 1/7, 2/7, 4/7: 142857142857142.857, 285714285714285.714,
#        571428571428571.428 -> floors sum to D - 2, units to .857 and .714.
# FIVE:  weights 1/16 .. 1 -> 1/31, 2/31, 4/31, 8/31, 16/31: remainders .032, .065, .129,
#        .258, .516 -> floors sum to D - 1, the unit goes to the last touch.
EXPECTED_CREDITS: dict[Model, dict[int, list[F]]] = {
    "last_touch": {
        1: [F(1)],
        2: [F(0), F(1)],
        3: [F(0), F(0), F(1)],
        5: [F(0), F(0), F(0), F(0), F(1)],
    },
    "first_touch": {
        1: [F(1)],
        2: [F(1), F(0)],
        3: [F(1), F(0), F(0)],
        5: [F(1), F(0), F(0), F(0), F(0)],
    },
    "linear": {
        1: [F(1)],
        2: [F(1, 2), F(1, 2)],
        3: [F(1, 3), F(1, 3), F(1, 3)],
        5: [F(1, 5)] * 5,
    },
    "time_decay": {
        1: [F(1)],
        2: [F(333333333333333, D), F(666666666666667, D)],
        3: [F(142857142857143, D), F(285714285714286, D), F(571428571428571, D)],
        5: [
            F(32258064516129, D),
            F(64516129032258, D),
            F(129032258064516, D),
            F(258064516129032, D),
            F(516129032258065, D),
        ],
    },
    "position_based": {
        1: [F(1)],
        2: [F(1, 2), F(1, 2)],
        3: [F(2, 5), F(1, 5), F(2, 5)],
        5: [F(2, 5), F(1, 15), F(1, 15), F(1, 15), F(2, 5)],
    },
}

JOURNEYS = {1: ONE, 2: TWO, 3: THREE, 5: FIVE}

# Revenue of a 100.00 EUR conversion (10000 cents) and of a 9999 JPY one (no minor
# unit), by hand: floors of credit x value, then the units left to the largest remainders
# (equal remainders: the earlier touch).
EXPECTED_EUR_10000: dict[Model, dict[int, list[int]]] = {
    "last_touch": {1: [10000], 2: [0, 10000], 3: [0, 0, 10000], 5: [0, 0, 0, 0, 10000]},
    "first_touch": {1: [10000], 2: [10000, 0], 3: [10000, 0, 0], 5: [10000, 0, 0, 0, 0]},
    # 3 touches: 3333.33 each, one cent left -> the first touch (tie).
    "linear": {1: [10000], 2: [5000, 5000], 3: [3334, 3333, 3333], 5: [2000] * 5},
    # 2: 3333.33 / 6666.67 -> the cent to the second; 3: 1428.57 / 2857.14 / 5714.29 ->
    # the cent to the first (.57); 5: 322.58 / 645.16 / 1290.32 / 2580.65 / 5161.29 ->
    # cents to the fourth (.65) and the first (.58).
    "time_decay": {
        1: [10000],
        2: [3333, 6667],
        3: [1429, 2857, 5714],
        5: [323, 645, 1290, 2581, 5161],
    },
    # 5 touches: 4000, three times 666.67, 4000 -> two cents to the first two middles.
    "position_based": {
        1: [10000],
        2: [5000, 5000],
        3: [4000, 2000, 4000],
        5: [4000, 667, 667, 666, 4000],
    },
}
EXPECTED_JPY_9999: dict[Model, dict[int, list[int]]] = {
    "last_touch": {1: [9999], 2: [0, 9999], 3: [0, 0, 9999], 5: [0, 0, 0, 0, 9999]},
    "first_touch": {1: [9999], 2: [9999, 0], 3: [9999, 0, 0], 5: [9999, 0, 0, 0, 0]},
    # 2: 4999.5 each -> the yen left to the first; 5: 1999.8 each -> four yen left, to the
    # first four.
    "linear": {1: [9999], 2: [5000, 4999], 3: [3333] * 3, 5: [2000, 2000, 2000, 2000, 1999]},
    # 2: 3332.99997 / 6666.00003 -> 3332 + 6666 = 9998, the yen to the first (.99997);
    # 3: 1428.43 / 2856.86 / 5713.71 -> 9997, yen to .86 and .71; 5: 322.55 / 645.10 /
    # 1290.19 / 2580.39 / 5160.77 -> 9997, yen to .77 and .55.
    "time_decay": {
        1: [9999],
        2: [3333, 6666],
        3: [1428, 2857, 5714],
        5: [323, 645, 1290, 2580, 5161],
    },
    # 3: 3999.6 / 1999.8 / 3999.6 -> 9997; two yen: .8 (middle) then .6 tie -> first.
    # 5: 3999.6, 666.6 x3, 3999.6 -> 3999 + 666 x3 + 3999 = 9996; three yen: .6 ties in
    # order -> first, second, third.
    "position_based": {
        1: [9999],
        2: [5000, 4999],
        3: [4000, 2000, 3999],
        5: [4000, 667, 667, 666, 3999],
    },
}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_hand_computed_credits(model: Model, n: int) -> None:
    result = credits(model, JOURNEYS[n], CONVERTED)
    assert result == EXPECTED_CREDITS[model][n]
    assert sum(result) == 1


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_hand_computed_revenue_in_two_currencies(model: Model, n: int) -> None:
    eur = attribute(model, JOURNEYS[n], CONVERTED, 10000)
    assert [s.revenue_minor for s in eur] == EXPECTED_EUR_10000[model][n]
    assert [s.credit for s in eur] == EXPECTED_CREDITS[model][n]
    jpy = attribute(model, JOURNEYS[n], CONVERTED, 9999)
    assert [s.revenue_minor for s in jpy] == EXPECTED_JPY_9999[model][n]
    assert sum(s.revenue_minor for s in jpy) == 9999


def test_time_decay_half_life_per_request() -> None:
    # Touches 2 and 1 days before: with a 1-day half-life the weights are 1/2 and 1.
    result = credits("time_decay", days_before(2, 1), CONVERTED, half_life=DAY)
    assert result == [F(333333333333333, D), F(666666666666667, D)]
    # 1 and 0 days before with a 0.5-day half-life: weights 1/4 and 1 -> 1/5 and 4/5.
    result = credits("time_decay", days_before(1, 0), CONVERTED, half_life=DAY / 2)
    assert result == [F(1, 5), F(4, 5)]


def test_time_decay_touch_after_the_conversion_counts_as_now() -> None:
    # Merchant clocks drift: a touch stamped after the conversion has Δt = 0, not a
    # weight above 1.
    touches = [CONVERTED - 7 * DAY, CONVERTED + dt.timedelta(minutes=5)]
    assert credits("time_decay", touches, CONVERTED) == [
        F(333333333333333, D),
        F(666666666666667, D),
    ]


def test_time_decay_equal_times_share_equally_with_ties_to_the_earlier() -> None:
    same = [CONVERTED - DAY] * 3
    # 1e15 / 3 = 333333333333333.33 each; the one unit left goes to the first touch.
    assert credits("time_decay", same, CONVERTED) == [
        F(333333333333334, D),
        F(333333333333333, D),
        F(333333333333333, D),
    ]


def test_apportion_largest_remainder() -> None:
    # Quotas 1.6, 1.6, 0.8 of 4 -> floors 1, 1, 0; 2 units left: to .8, then to the
    # earlier of the two .6
    assert apportion(4, [F(2), F(2), F(1)]) == [2, 1, 1]
    # Quotas 2.5, 2.5 -> the unit to the earlier
    assert apportion(5, [F(1), F(1)]) == [3, 2]
    assert apportion(0, [F(1), F(3)]) == [0, 0]
    assert apportion(7, [F(0), F(1)]) == [0, 7]


@pytest.mark.parametrize(
    ("total", "weights"),
    [(-1, [F(1)]), (1, [F(-1), F(2)]), (1, [F(0), F(0)]), (1, [])],
)
def test_apportion_rejects(total: int, weights: list[F]) -> None:
    with pytest.raises(ValueError):
        apportion(total, weights)


def test_bad_journeys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        credits("linear", [], CONVERTED)
    with pytest.raises(ValueError, match="oldest first"):
        credits("linear", days_before(1, 2), CONVERTED)
    with pytest.raises(ValueError, match="timezone"):
        credits("linear", [dt.datetime(2026, 11, 1)], CONVERTED)
    with pytest.raises(ValueError, match="half_life"):
        credits("time_decay", ONE, CONVERTED, half_life=dt.timedelta(0))
    with pytest.raises(ValueError, match="unknown"):
        credits("data_driven", ONE, CONVERTED)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        attribute("linear", ONE, CONVERTED, -1)


# Random journeys: up to 12 touches within 90 days before the conversion (ties likely
# with whole-hour offsets), values up to the API's limit of 10^15 minor units.
journeys = st.lists(st.integers(min_value=0, max_value=90 * 24), min_size=1, max_size=12).map(
    lambda hours: [CONVERTED - dt.timedelta(hours=h) for h in sorted(hours, reverse=True)]
)
values = st.integers(min_value=0, max_value=10**15)
half_lives = st.integers(min_value=1, max_value=90 * 24).map(lambda h: dt.timedelta(hours=h))


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(MODELS), touches=journeys, value=values, half_life=half_lives)
def test_properties_of_every_split(
    model: Model, touches: list[dt.datetime], value: int, half_life: dt.timedelta
) -> None:
    shares = attribute(model, touches, CONVERTED, value, half_life=half_life)
    assert len(shares) == len(touches)
    assert all(isinstance(s, Share) for s in shares)
    assert sum(s.credit for s in shares) == 1
    assert all(0 <= s.credit <= 1 for s in shares)
    assert sum(s.revenue_minor for s in shares) == value
    for s in shares:
        quota = s.credit * value
        # Each share is its exact quota rounded down or up, never negative.
        assert s.revenue_minor in (quota.__floor__(), quota.__ceil__())
        assert s.revenue_minor >= 0
    # Ties: of two touches with equal credit, the earlier never gets less.
    for i, a in enumerate(shares):
        for b in shares[i + 1 :]:
            if a.credit == b.credit:
                assert a.revenue_minor >= b.revenue_minor
    if model == "time_decay":
        # More recent touches never get less credit (up to the one unit of 1e-15 a tie
        # may move to the earlier touch).
        for a, b in itertools.pairwise(shares):
            assert b.credit >= a.credit - F(1, D)
