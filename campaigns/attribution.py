"""Multi-touch attribution models: how one conversion's credit and value are split among
the touches (scans) of its journey. Pure functions, no database.

A *journey* is the ordered list of a visitor's touches before a conversion, oldest first,
ending with the scan of the conversion's click id (see
:mod:`campaigns.services.attribution` for how journeys are found). Each model gives every
touch a *credit*, an exact :class:`~fractions.Fraction`; the credits of one conversion
add up to exactly 1. The conversion's value (and each refund of it) is then split into
integer minor units by the largest-remainder method (:func:`apportion`), so the shares add
up exactly to the amount.

The models are the rule-based ones of Google Ads and Google Analytics 4, with their
definitions:

- Google Ads Help, "About attribution models" (support.google.com/google-ads/answer/6259715);
- Google Ads API reference, ``AttributionModelEnum.AttributionModel``
  (developers.google.com/google-ads/api/reference/rpc/latest/AttributionModelEnum.AttributionModel):
  "time decay ... half-life is 1 week", "position based: 40% of the credit ... to its first
  and last clicks. Remaining 20% is evenly distributed across all other clicks";
- GA4 Help (support.google.com/analytics), "[GA4] Get started with attribution" and
  "[GA4] Select attribution settings", which defined the same first-click, linear,
  position-based and time-decay (7-day half-life) models until Google retired them from
  GA4 and Google Ads in 2023 in favour of data-driven attribution. The definitions
  remain the industry's reference ones (Matomo's multi-channel attribution uses the
  same).

``last_touch`` is Google's "last click": in Passerelle a touch is a scan, not an ad click.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, get_args

Model = Literal["last_touch", "first_touch", "linear", "time_decay", "position_based"]
#: Every model name, in documentation order.
MODELS: tuple[Model, ...] = get_args(Model)

#: Google's time-decay half-life ("a click 8 days before a conversion gets half as much
#: credit as a click 1 day before").
DEFAULT_HALF_LIFE = dt.timedelta(days=7)

#: Time-decay credits are whole multiples of ``1 / TIME_DECAY_DENOMINATOR``. Its weights
#: are irrational (powers of 2 with real exponents) and only known to double precision
#: (~1e-16 relative), so 15 decimal digits keep every meaningful digit; a fixed
#: denominator also keeps report sums over thousands of conversions small fractions.
TIME_DECAY_DENOMINATOR = 10**15

_POSITION_END = Fraction(2, 5)  # 40 % to the first touch, 40 % to the last
_POSITION_MIDDLE = Fraction(1, 5)  # 20 % shared equally by the touches in between


@dataclass(frozen=True, slots=True)
class Share:
    """One touch's part of a conversion: ``credit`` (exact, ``0 <= credit <= 1``; a
    conversion's credits sum to 1) and ``revenue_minor`` (minor currency units; a
    conversion's shares sum to its value)."""

    credit: Fraction
    revenue_minor: int


def apportion(total: int, weights: Sequence[Fraction]) -> list[int]:
    """Split ``total`` (an integer >= 0, e.g. minor currency units) in proportion to
    ``weights`` (>= 0, positive sum) into integers that add up exactly to ``total``.

    Largest-remainder (Hamilton) method: each part gets the floor of its exact quota
    ``total * w / sum(w)``; the units left over go one each to the parts with the largest
    fractional remainders; equal remainders favour the earlier part (lower index), so the
    result is deterministic and, for equal weights, earlier touches never get less than
    later ones. Every part is its quota's floor or ceiling.

    Raises :class:`ValueError` for a negative total, a negative weight or a zero sum.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    if any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0")
    weight_sum = sum(weights, Fraction(0))
    if weight_sum <= 0:
        raise ValueError("weights must have a positive sum")
    quotas = [total * w / weight_sum for w in weights]
    parts = [q.numerator // q.denominator for q in quotas]
    left = total - sum(parts)
    # Sorting is stable on (-remainder, index): ties go to the earlier index.
    by_remainder = sorted(range(len(quotas)), key=lambda i: (parts[i] - quotas[i], i))
    for i in by_remainder[:left]:
        parts[i] += 1
    return parts


def _check_journey(touched_at: Sequence[dt.datetime], converted_at: dt.datetime) -> None:
    if not touched_at:
        raise ValueError("a journey has at least one touch")
    if converted_at.utcoffset() is None or any(t.utcoffset() is None for t in touched_at):
        raise ValueError("times must be timezone-aware")
    if any(later < earlier for earlier, later in itertools.pairwise(touched_at)):
        raise ValueError("touches must be ordered oldest first")


def _time_decay(
    touched_at: Sequence[dt.datetime], converted_at: dt.datetime, half_life: dt.timedelta
) -> list[Fraction]:
    # Weight 2^(-Δt / half-life), Δt from the touch to the conversion; a touch stamped
    # after the conversion (merchant clock skew) counts as Δt = 0. Weights are taken
    # relative to the most recent touch (scale does not change the normalised credits),
    # so the latest weighs exactly 1.0 and the sum can never underflow to zero.
    # Differences are taken on exact timedeltas before dividing, so touches whole
    # half-lives apart weigh exactly 1/2, 1/4, ...
    ages = [max(converted_at - t, dt.timedelta(0)) for t in touched_at]
    youngest = min(ages)
    weights = [Fraction(2.0 ** -((age - youngest) / half_life)) for age in ages]
    units = apportion(TIME_DECAY_DENOMINATOR, weights)
    return [Fraction(u, TIME_DECAY_DENOMINATOR) for u in units]


def credits(
    model: Model,
    touched_at: Sequence[dt.datetime],
    converted_at: dt.datetime,
    *,
    half_life: dt.timedelta = DEFAULT_HALF_LIFE,
) -> list[Fraction]:
    """Each touch's credit for one conversion, in journey order; they sum to exactly 1.

    ``touched_at`` are the touches' times, oldest first (ties allowed); ``converted_at``
    the conversion's time (only ``time_decay`` reads times). Models:

    - ``last_touch``: 1 to the last touch (Google "last click").
    - ``first_touch``: 1 to the first touch (Google "first click").
    - ``linear``: ``1/n`` to each of the ``n`` touches.
    - ``time_decay``: weight ``2^(-Δt / half_life)`` per touch, Δt from the touch to the
      conversion (never negative), normalised. The weights are evaluated in double
      precision; the credits are then made exact by apportioning
      :data:`TIME_DECAY_DENOMINATOR` units among the weights with :func:`apportion`
      (largest remainder, ties to the earlier touch), so they are multiples of 1e-15
      that sum to exactly 1 and differ from the real-number credits by less than 1e-15.
    - ``position_based``: 40 % to the first touch, 40 % to the last, 20 % shared equally
      by the touches in between; one touch gets 100 %, two get 50 % each (Google's
      definition has no middle touches to give 20 % to then).

    Raises :class:`ValueError` for an empty journey, naive times, touches out of order, a
    non-positive half-life or an unknown model.
    """
    _check_journey(touched_at, converted_at)
    n = len(touched_at)
    if model == "last_touch":
        return [Fraction(0)] * (n - 1) + [Fraction(1)]
    if model == "first_touch":
        return [Fraction(1)] + [Fraction(0)] * (n - 1)
    if model == "linear":
        return [Fraction(1, n)] * n
    if model == "time_decay":
        if half_life <= dt.timedelta(0):
            raise ValueError("half_life must be positive")
        return _time_decay(touched_at, converted_at, half_life)
    if model == "position_based":
        if n <= 2:
            return [Fraction(1, n)] * n
        middle = _POSITION_MIDDLE / (n - 2)
        return [_POSITION_END] + [middle] * (n - 2) + [_POSITION_END]
    raise ValueError(f"unknown attribution model {model!r}")


def attribute(
    model: Model,
    touched_at: Sequence[dt.datetime],
    converted_at: dt.datetime,
    value_minor: int,
    *,
    half_life: dt.timedelta = DEFAULT_HALF_LIFE,
) -> list[Share]:
    """Credit and revenue share of each touch of one conversion worth ``value_minor``
    minor units (>= 0) of its currency: :func:`credits`, then the value split by
    :func:`apportion` in proportion to them. The shares sum exactly to ``value_minor``.
    Raises :class:`ValueError` as :func:`credits` and :func:`apportion` do."""
    shares = credits(model, touched_at, converted_at, half_life=half_life)
    revenue = apportion(value_minor, shares)
    return [Share(c, r) for c, r in zip(shares, revenue, strict=True)]
