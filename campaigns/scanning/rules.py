"""Redirect rules held in memory: which destination a scan gets, decided per scan.

A rule of a campaign has conditions on the scan (every condition given must hold; an
empty rule matches every scan) and a target: one ``destination_url``, or a weighted
``split`` among variants. The rules of a campaign are tried by ``priority`` (lowest
first, then lowest id); the first that matches decides.

Conditions (each a list; the scan's value must be in it, and an unknown value never
matches): ``countries`` (ISO 3166-1 alpha-2 from GeoIP), ``location_ids`` (the matched
store), ``os`` and ``device_types`` (as parsed from the user agent, compared without
case), ``languages`` (the primary subtag of the visitor's most preferred language in
``Accept-Language``, RFC 9110 §12.5.4).

Splits are sticky per visitor and day: the variant is chosen by a hash of the visitor
id (itself daily) and the rule id, spread over the weights; without a visitor id, at
random.

One :class:`RuleCache` per server process: loaded at start, kept fresh by
``LISTEN passerelle_cache`` (``redirect_rules:<ids>``; a change reaches every process
within the notification's 50 ms window) and reloaded in full by the periodic reconcile;
its rows are written to the side snapshot (:mod:`campaigns.scanning.side_snapshot`), so a
process started while the database is away still applies them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.rows import TupleRow

_RULE_COLUMNS = "id, campaign_id, priority, conditions, destination_url, split"
#: Combinations of scan values whose first matching rule is remembered (``RuleCache``).
_FIRST_MATCH_MEMO_MAX = 65_536


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm of a split: its name, destination and weight (a positive integer)."""

    name: str
    destination_url: str
    weight: int


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule as the scan path needs it; a condition is None when not given."""

    id: int
    campaign_id: int
    priority: int
    countries: frozenset[str] | None
    location_ids: frozenset[int] | None
    os: frozenset[str] | None
    device_types: frozenset[str] | None
    languages: frozenset[str] | None
    destination_url: str | None
    split: tuple[Variant, ...]

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Rule:
        """From a row in ``_RULE_COLUMNS`` order (``conditions`` and ``split`` as JSON)."""
        rid, campaign_id, priority, conditions, destination_url, split = row
        conditions = conditions or {}

        def words(name: str, fold: bool) -> frozenset[str] | None:
            values = conditions.get(name)
            if values is None:
                return None
            return frozenset(str(v).lower() if fold else str(v) for v in values)

        raw_ids = conditions.get("location_ids")
        location_ids = frozenset(int(v) for v in raw_ids) if raw_ids is not None else None
        return cls(
            id=rid,
            campaign_id=campaign_id,
            priority=priority,
            countries=words("countries", False),
            location_ids=frozenset(int(v) for v in location_ids)
            if location_ids is not None
            else None,
            os=words("os", True),
            device_types=words("device_types", True),
            languages=words("languages", True),
            destination_url=destination_url,
            split=tuple(
                Variant(v["name"], v["destination_url"], int(v["weight"])) for v in split or ()
            ),
        )

    def matches(
        self,
        *,
        country: str | None,
        location_id: int | None,
        os: str | None,
        device_type: str | None,
        language: str | None,
    ) -> bool:
        """True when every condition given holds for these scan values."""
        return self.matches_folded(
            country=country,
            location_id=location_id,
            os=os.lower() if os else None,
            device_type=device_type.lower() if device_type else None,
            language=language,
        )

    def matches_folded(
        self,
        *,
        country: str | None,
        location_id: int | None,
        os: str | None,
        device_type: str | None,
        language: str | None,
    ) -> bool:
        """:meth:`matches` with ``os`` and ``device_type`` already lower-cased (the scan
        path folds them once for all the campaign's rules)."""
        return (
            _within(self.countries, country)
            and (self.location_ids is None or location_id in self.location_ids)
            and _within(self.os, os)
            and _within(self.device_types, device_type)
            and _within(self.languages, language)
        )

    def choose(self, visitor_id: bytes | None) -> tuple[str, str | None]:
        """The destination and the variant name (None without a split)."""
        if self.destination_url is not None or not self.split:
            assert self.destination_url is not None
            return self.destination_url, None
        total = sum(v.weight for v in self.split)
        if visitor_id is not None:
            digest = hashlib.blake2b(
                visitor_id + self.id.to_bytes(8, "big"), digest_size=8
            ).digest()
            point = int.from_bytes(digest, "big") % total
        else:
            point = random.randrange(total)  # noqa: S311 - a split, not a secret
        for variant in self.split:
            if point < variant.weight:
                return variant.destination_url, variant.name
            point -= variant.weight
        last = self.split[-1]
        return last.destination_url, last.name


def _within(allowed: frozenset[str] | None, value: str | None) -> bool:
    return allowed is None or (value is not None and value in allowed)


def preferred_languages(accept_language: str | None) -> list[str]:
    """The primary language subtags of an ``Accept-Language`` header, most preferred first
    (RFC 9110 §12.5.4: weight ``q``, then the order given; ``q=0``, ``*`` and malformed
    tags skipped; at most the first 32 items read), lower case, without repeats."""
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate((accept_language or "").split(",")[:32]):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        if not primary or primary == "*" or not primary.isalpha():
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            ranked.append((-q, index, primary))
    return list(dict.fromkeys(primary for _, _, primary in sorted(ranked)))


@lru_cache(maxsize=1024)
def preferred_language(accept_language: str | None) -> str | None:
    """The visitor's most preferred primary language subtag (:func:`preferred_languages`),
    or None. Memoised: browsers send a few distinct headers (one per locale setting)."""
    languages = preferred_languages(accept_language)
    return languages[0] if languages else None


class RuleCache:
    """Campaign id -> its rules in evaluation order. Lookups never block nor raise;
    loaders take an open psycopg connection and raise ``psycopg.Error``."""

    def __init__(self) -> None:
        self._by_campaign: dict[int, tuple[Rule, ...]] = {}
        # (campaign id, country, location id, os, device type, language) -> the first
        # rule matching them: scans share few such combinations, so most scans skip the
        # walk through the rules. Emptied whenever rules change, and when full.
        self._first: dict[tuple[Any, ...], Rule | None] = {}
        self._campaign_of: dict[int, int] = {}
        # rule id -> its row (``_RULE_COLUMNS`` order), for the side snapshot.
        self._rows: dict[int, tuple[Any, ...]] = {}

    def __len__(self) -> int:
        return len(self._campaign_of)

    def rules_for(self, campaign_id: int) -> tuple[Rule, ...]:
        """The campaign's rules, lowest priority number first (then lowest id)."""
        return self._by_campaign.get(campaign_id, ())

    def first_match(
        self,
        campaign_id: int,
        *,
        country: str | None,
        location_id: int | None,
        os: str | None,
        device_type: str | None,
        language: str | None,
    ) -> Rule | None:
        """The campaign's first rule (in :meth:`rules_for` order) matching these scan
        values (``os`` and ``device_type`` lower-cased, see
        :meth:`Rule.matches_folded`), or None. Memoised per combination of values."""
        key = (campaign_id, country, location_id, os, device_type, language)
        try:
            return self._first[key]
        except KeyError:
            pass
        found = None
        for rule in self._by_campaign.get(campaign_id, ()):
            if rule.matches_folded(
                country=country,
                location_id=location_id,
                os=os,
                device_type=device_type,
                language=language,
            ):
                found = rule
                break
        if len(self._first) >= _FIRST_MATCH_MEMO_MAX:
            self._first.clear()
        self._first[key] = found
        return found

    def _index(self, rules: Iterable[Rule]) -> dict[int, tuple[Rule, ...]]:
        grouped: dict[int, list[Rule]] = {}
        for rule in rules:
            grouped.setdefault(rule.campaign_id, []).append(rule)
        return {
            cid: tuple(sorted(rs, key=lambda r: (r.priority, r.id))) for cid, rs in grouped.items()
        }

    async def load_all(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        """Replace every rule."""
        rows = await (await conn.execute(f"SELECT {_RULE_COLUMNS} FROM redirect_rules")).fetchall()  # noqa: S608
        rules = [Rule.from_row(row) for row in rows]
        self._by_campaign = self._index(rules)
        self._first = {}
        self._campaign_of = {rule.id: rule.campaign_id for rule in rules}
        self._rows = {row[0]: tuple(row) for row in rows}

    async def reload(self, conn: psycopg.AsyncConnection[TupleRow], ids: Iterable[int]) -> None:
        """Re-read the campaigns owning the rules ``ids`` (now or before: a deleted rule's
        campaign is re-read too)."""
        ids = list(set(ids))
        if not ids:
            return
        owners = await (
            await conn.execute("SELECT campaign_id FROM redirect_rules WHERE id = ANY(%s)", (ids,))
        ).fetchall()
        campaigns = {row[0] for row in owners} | {
            self._campaign_of[i] for i in ids if i in self._campaign_of
        }
        rows = await (
            await conn.execute(
                f"SELECT {_RULE_COLUMNS} FROM redirect_rules WHERE campaign_id = ANY(%s)",  # noqa: S608
                (sorted(campaigns),),
            )
        ).fetchall()
        rules = [Rule.from_row(row) for row in rows]
        fresh = self._index(rules)
        for cid in campaigns:
            for rid in [rid for rid, owner in self._campaign_of.items() if owner == cid]:
                del self._campaign_of[rid]
                self._rows.pop(rid, None)
            if cid in fresh:
                self._by_campaign[cid] = fresh[cid]
            else:
                self._by_campaign.pop(cid, None)
        self._first = {}
        self._campaign_of.update((rule.id, rule.campaign_id) for rule in rules)
        self._rows.update((row[0], tuple(row)) for row in rows)

    def to_disk(self) -> list[Any]:
        """Every rule row as JSON-able ``[id, campaign_id, priority, conditions,
        destination_url, split]``, for the side snapshot."""
        return [list(row) for row in self._rows.values()]

    def from_disk(self, rows: list[Any]) -> None:
        """Replace every rule with rows of :meth:`to_disk` (a start while the database
        is away). Raises ``ValueError``/``TypeError``/``KeyError`` for rows not of that
        form (the cache is then unchanged)."""
        parsed = [tuple(row) for row in rows]
        rules = [Rule.from_row(row) for row in parsed]
        self._by_campaign = self._index(rules)
        self._campaign_of = {rule.id: rule.campaign_id for rule in rules}
        self._rows = {row[0]: row for row in parsed}
