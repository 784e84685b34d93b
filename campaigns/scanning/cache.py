"""In-memory index of what decides a redirect: active tags and their campaigns.

The hot path (``GET /s/{code}``) resolves codes here and never touches the database.
Each server process holds its own copy: loaded in full at start, refreshed within
milliseconds through PostgreSQL ``LISTEN passerelle_cache`` (statement triggers on
``tags`` and ``campaigns`` send ``"<table>:<id>,<id>..."``, or ``"<table>:*"`` for a bulk
change), reconciled periodically from ``updated_at`` as a safety net, and saved to a
snapshot file so a process can serve while the database is down at start-up.

NTAG 424 DNA (``nfc_sun``) tags carry their UID and SDM keys (:class:`SunTag`), so the
NFC verification step checks a tap's SUN message in memory. The keys are unsealed once,
when the row is loaded (from the database, the snapshot or the journal), with the
settings' secret key; the snapshot and the journal hold them sealed, exactly as the
``tags`` row does (AES-GCM, :mod:`campaigns.crypto`), never in clear. A process started
while the database is down can therefore still verify taps.

Memory: one :class:`TagEntry` (a tuple) per tag, about 290 bytes with its key and label;
a server process holding a million tags measured 471 MiB resident (benchmarks/scan_redirect.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg.rows import TupleRow

from campaigns.crypto import SealedValueError, SecretKeys
from campaigns.payloads.keys import SunKeys, unseal_sun_keys

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "passerelle_cache"
SNAPSHOT_FORMAT = "passerelle-tags/1"

_CAMPAIGN_COLUMNS = (
    "id, organization_id, slug, destination_url, fallback_url, starts_at, ends_at, utm, "
    "archived, deleted_at IS NOT NULL, nfc_invalid_tap, precise_location"
)
# After status: nfc_sun tags' organization, UID and keys as stored (sealed), hex so that
# journal lines stay JSON (organization_id binds the sealed keys to their row: the
# ``aad`` of campaigns.crypto); then the placement as lon/lat doubles (WGS 84 degrees),
# what the geolocation step reads. Older journal and snapshot lines stop earlier.
_TAG_COLUMNS = (
    "id, code, campaign_id, kind, label, destination_url, status, organization_id, "
    "encode(nfc_uid, 'hex'), encode(nfc_keys_encrypted, 'hex'), location_id, "
    "ST_X(placement::geometry), ST_Y(placement::geometry)"
)


class Changes(NamedTuple):
    """Rows a re-read applied, for the cache journal: ``campaigns`` and ``tags`` rows in
    their ``_CAMPAIGN_COLUMNS`` / ``_TAG_COLUMNS`` order followed by their ``updated_at``;
    ids whose rows no longer exist; ``read_at``, the database time of the re-read."""

    campaigns: list[tuple[Any, ...]]
    tags: list[tuple[Any, ...]]
    gone_campaigns: list[int]
    gone_tags: list[int]
    read_at: dt.datetime

    def __bool__(self) -> bool:
        return bool(self.campaigns or self.tags or self.gone_campaigns or self.gone_tags)


@dataclass(frozen=True, slots=True)
class CampaignEntry:
    """What the hot path needs of a campaign. Times are aware UTC; ``utm`` maps
    ``source|medium|campaign|term|content`` to default values; ``precise_location``
    ``off`` or ``ask`` (the consent page asking the browser's position)."""

    id: int
    organization_id: int
    slug: str
    destination_url: str
    fallback_url: str | None
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    utm: dict[str, str]
    archived: bool
    #: What an NFC tap whose SUN message failed or was replayed gets: ``flag`` (redirect,
    #: stored with its verdict) or ``block`` (403 page).
    nfc_invalid_tap: str = "flag"
    precise_location: str = "off"

    def is_live(self, now: dt.datetime) -> bool:
        """True when the campaign is not archived and ``now`` is inside its schedule."""
        if self.archived:
            return False
        if self.starts_at is not None and now < self.starts_at:
            return False
        return self.ends_at is None or now < self.ends_at


@dataclass(frozen=True, slots=True)
class SunTag:
    """What verifying a tap of an ``nfc_sun`` tag needs: its ``uid`` (7 bytes) and its SDM
    ``keys``, unsealed once when the row is loaded (None when they do not open with this
    process's secret key: every tap is then ``invalid``, and the load logged it). On disk
    (snapshot, journal) only ``sealed`` is written, with ``organization_id`` that binds it
    to its row: keys are never written in clear."""

    organization_id: int
    uid: bytes
    sealed: bytes
    keys: SunKeys | None

    def to_disk(self) -> list[Any]:
        """``[organization_id, uid hex, sealed hex]``, the snapshot's form."""
        return [self.organization_id, self.uid.hex(), self.sealed.hex()]


class TagEntry(NamedTuple):
    """An active tag. ``code`` is upper case; ``destination_url`` overrides the campaign's;
    ``sun`` is set for ``nfc_sun`` tags only; ``location_id`` is the store it is placed in
    and ``placement_lon``/``placement_lat`` where (WGS 84 degrees), None when unplaced."""

    id: int
    code: str
    campaign_id: int
    kind: str
    label: str | None
    destination_url: str | None
    sun: SunTag | None = None
    location_id: int | None = None
    placement_lon: float | None = None
    placement_lat: float | None = None


class TagCache:
    """Code -> (tag, campaign) lookups, with loaders that read PostgreSQL.

    Loader methods take an open ``psycopg.AsyncConnection`` and raise ``psycopg.Error``
    when the database fails; lookups never raise and never block. ``secret_key``
    (``PASSERELLE_SECRET_KEY``) unseals the SDM keys of ``nfc_sun`` tags as their rows are
    loaded (without it, such tags are cached without keys and their taps are ``invalid``).
    """

    def __init__(self, *, secret_key: SecretKeys | None = None) -> None:
        self._secret_key = secret_key
        self._tags: dict[str, TagEntry] = {}
        self._campaigns: dict[int, CampaignEntry] = {}
        # One shared object per campaign id and tag kind, instead of one per tag: a
        # million tags then cost ~40 MB less.
        self._shared: dict[object, object] = {}
        #: Database time of the last successful load, the lower bound of the next reconcile.
        self.synced_at: dt.datetime | None = None
        #: True once loaded from the database (not only from a snapshot).
        self.loaded_from_db = False
        #: True once filled from a snapshot file (start-up while the database was down).
        self.loaded_from_snapshot = False
        #: ``synced_at`` of the process that wrote the snapshot loaded (None if unknown).
        self.snapshot_synced_at: dt.datetime | None = None
        # Rows re-read (after a NOTIFY) while a load or reconcile is in flight: that sync
        # may apply an older version of them afterwards, so it re-reads them at its end.
        self._syncs = 0
        self._touched: tuple[set[int], set[int]] = (set(), set())

    def __len__(self) -> int:
        return len(self._tags)

    def lookup(self, code: str) -> tuple[TagEntry, CampaignEntry] | None:
        """The active tag with ``code`` (already upper case) and its campaign, or None."""
        tag = self._tags.get(code)
        if tag is None:
            return None
        campaign = self._campaigns.get(tag.campaign_id)
        if campaign is None:
            return None
        return tag, campaign

    # -- applying rows -------------------------------------------------------------------

    def _apply_campaign(self, row: tuple[Any, ...]) -> None:
        # Rows journaled before NFC or precise_location existed end earlier.
        (cid, org, slug, dest, fallback, starts, ends, utm, archived, deleted, *rest) = row
        if deleted:
            self._campaigns.pop(cid, None)
            return
        self._campaigns[cid] = CampaignEntry(
            cid,
            org,
            slug,
            dest,
            fallback,
            starts,
            ends,
            dict(utm or {}),
            archived,
            *rest[:2],
        )

    def _apply_tag(self, row: tuple[Any, ...]) -> None:
        # Rows journaled before NFC verification have 7 columns, before placements 10.
        tid, code, campaign_id, kind, label, dest, status, *more = row
        nfc, placed = more[:3], more[3:6]
        if status != "active":
            self._tags.pop(code, None)  # codes never change, so the row names its key
            return
        campaign_id = self._shared.setdefault(campaign_id, campaign_id)
        kind = self._shared.setdefault(kind, kind)
        sun = self._sun_tag(*nfc) if len(nfc) == 3 and nfc[1] and nfc[2] else None
        self._tags[code] = TagEntry(tid, code, campaign_id, kind, label, dest, sun, *placed)  # type: ignore[arg-type]

    def _sun_tag(self, organization_id: int, uid_hex: str, sealed_hex: str) -> SunTag:
        """Unseal an ``nfc_sun`` row's keys: once per load of the row, never per tap."""
        uid, sealed = bytes.fromhex(uid_hex), bytes.fromhex(sealed_hex)
        keys = None
        if self._secret_key is not None:
            try:
                keys = unseal_sun_keys(
                    self._secret_key, organization_id=organization_id, uid=uid, sealed=sealed
                )
            except SealedValueError:
                log.error("SUN keys of tag uid %s do not open: its taps are invalid", uid_hex)
        return SunTag(organization_id, uid, sealed, keys)

    def _forget_tag_ids(self, ids: set[int]) -> None:
        """Drop tags by id: a scan of the whole cache, only for rows hard-deleted."""
        if ids:
            for code in [code for code, tag in self._tags.items() if tag.id in ids]:
                del self._tags[code]

    # -- loaders ------------------------------------------------------------------------

    async def load_all(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        """Replace the whole cache with the database's active tags and live campaigns."""
        async with self._sync(conn):
            await self._load_all(conn)

    async def _load_all(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        async with conn.transaction():
            now = await _db_now(conn)
            campaigns = await (
                await conn.execute(
                    f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE deleted_at IS NULL"  # noqa: S608
                )
            ).fetchall()
            fresh = TagCache(secret_key=self._secret_key)
            for row in campaigns:
                fresh._apply_campaign(row)
            async with conn.cursor(name="passerelle_tag_cache") as cur:
                cur.itersize = 20_000
                await cur.execute(
                    f"SELECT {_TAG_COLUMNS} FROM tags WHERE status = 'active'"  # noqa: S608
                )
                async for row in cur:
                    fresh._apply_tag(row)
        self._tags, self._campaigns, self._shared = fresh._tags, fresh._campaigns, fresh._shared
        self.synced_at = now
        self.loaded_from_db = True

    @contextlib.asynccontextmanager
    async def _sync(self, conn: psycopg.AsyncConnection[TupleRow]) -> AsyncIterator[None]:
        """Bracket a load or reconcile: rows re-read meanwhile are re-read again after it,
        so a row version it fetched before a concurrent change cannot win."""
        if self._syncs == 0:
            self._touched = (set(), set())
        self._syncs += 1
        try:
            yield
        finally:
            self._syncs -= 1
        tags, campaigns = self._touched
        if self._syncs == 0 and (tags or campaigns):
            self._touched = (set(), set())
            await self.reload(conn, tag_ids=tags, campaign_ids=campaigns)

    async def reload(
        self,
        conn: psycopg.AsyncConnection[TupleRow],
        *,
        tag_ids: Iterable[int] = (),
        campaign_ids: Iterable[int] = (),
    ) -> Changes:
        """Re-read the given rows (after a NOTIFY or a write in this process); returns
        what was applied."""
        tag_list, campaign_list = list(set(tag_ids)), list(set(campaign_ids))
        if self._syncs:
            self._touched[0].update(tag_list)
            self._touched[1].update(campaign_list)
        if not tag_list and not campaign_list:
            return Changes([], [], [], [], dt.datetime.now(dt.UTC))
        read_at = await _db_now(conn)
        campaign_rows: list[tuple[Any, ...]] = []
        tag_rows: list[tuple[Any, ...]] = []
        gone_campaigns: set[int] = set()
        gone_tags: set[int] = set()
        if campaign_list:
            campaign_rows = await (
                await conn.execute(
                    f"SELECT {_CAMPAIGN_COLUMNS}, updated_at FROM campaigns WHERE id = ANY(%s)",  # noqa: S608
                    (campaign_list,),
                )
            ).fetchall()
            gone_campaigns = set(campaign_list) - {row[0] for row in campaign_rows}
        if tag_list:
            tag_rows = await (
                await conn.execute(
                    f"SELECT {_TAG_COLUMNS}, updated_at FROM tags WHERE id = ANY(%s)",  # noqa: S608
                    (tag_list,),
                )
            ).fetchall()
            gone_tags = set(tag_list) - {row[0] for row in tag_rows}
        changes = Changes(
            campaign_rows, tag_rows, sorted(gone_campaigns), sorted(gone_tags), read_at
        )
        self.apply(changes)
        return changes

    def apply(self, changes: Changes) -> None:
        """Apply re-read rows (from :meth:`reload`, or replayed from the journal)."""
        for row in changes.campaigns:
            self._apply_campaign(row[:-1])
        for cid in changes.gone_campaigns:
            self._campaigns.pop(cid, None)
        for row in changes.tags:
            self._apply_tag(row[:-1])
        self._forget_tag_ids(set(changes.gone_tags))

    async def reconcile(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        """Apply every row changed since the last sync (with a 60 s overlap for clock skew
        and long transactions); a full load when never synced."""
        if self.synced_at is None:
            await self.load_all(conn)
            return
        async with self._sync(conn):
            await self._reconcile(conn)

    async def _reconcile(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        assert self.synced_at is not None
        since = self.synced_at - dt.timedelta(seconds=60)
        now = await _db_now(conn)
        for row in await (
            await conn.execute(
                f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE updated_at >= %s",  # noqa: S608
                (since,),
            )
        ).fetchall():
            self._apply_campaign(row)
        # Streamed: after a bulk import this can be every tag, and a fetchall() would
        # briefly hold a second copy of them all.
        async with conn.transaction(), conn.cursor(name="passerelle_tag_reconcile") as cur:
            cur.itersize = 20_000
            await cur.execute(
                f"SELECT {_TAG_COLUMNS} FROM tags WHERE updated_at >= %s",  # noqa: S608
                (since,),
            )
            async for row in cur:
                self._apply_tag(row)
        self.synced_at = now
        self.loaded_from_db = True

    async def prune(self, conn: psycopg.AsyncConnection[TupleRow], *, chunk: int = 50_000) -> int:
        """Forget cached tags and campaigns whose rows no longer exist (hard deletes whose
        NOTIFY was missed while the listener was reconnecting). Reads ids in chunks, so a
        million tags cost twenty index-only queries; run it every few minutes, not per
        reconcile. Returns the number of tags forgotten."""
        gone_campaigns = await _missing(
            conn,
            "SELECT id FROM campaigns WHERE id = ANY(%s) AND deleted_at IS NULL",
            list(self._campaigns),
            chunk,
        )
        for cid in gone_campaigns:
            self._campaigns.pop(cid, None)
        gone_tags = await _missing(
            conn,
            "SELECT id FROM tags WHERE id = ANY(%s) AND status = 'active'",
            [tag.id for tag in self._tags.values()],
            chunk,
        )
        self._forget_tag_ids(gone_tags)
        return len(gone_tags)

    # -- snapshot -------------------------------------------------------------------------

    def save_snapshot(self, path: Path) -> None:
        """Write the cache atomically (temp file, fsync, rename) as JSON lines: a header,
        one line per campaign, one per tag, streamed so a million tags need no second
        copy in memory. Blocking: call it from a thread."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        with tmp.open("w", encoding="utf-8") as fh:
            # list() of a dict's values runs in C under the GIL: a consistent copy even
            # while the event loop applies changes (this runs in a thread).
            campaigns, tags = list(self._campaigns.values()), list(self._tags.values())
            header = {
                "format": SNAPSHOT_FORMAT,
                "campaigns": len(campaigns),
                "synced_at": _iso(self.synced_at),
            }
            fh.write(dumps(header) + "\n")
            for c in campaigns:
                row = [
                    c.id,
                    c.organization_id,
                    c.slug,
                    c.destination_url,
                    c.fallback_url,
                    _iso(c.starts_at),
                    _iso(c.ends_at),
                    c.utm,
                    c.archived,
                    c.nfc_invalid_tap,
                    c.precise_location,
                ]
                fh.write(dumps(row) + "\n")
            for tag in tags:
                # Keys stay sealed on disk: the snapshot holds what the row holds, in the
                # order of the row after status (see _TAG_COLUMNS).
                sun = tag.sun.to_disk() if tag.sun else [None, None, None]
                placed = [tag.location_id, tag.placement_lon, tag.placement_lat]
                fh.write(dumps([*tag[:6], *sun, *placed]) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)

    def load_snapshot(self, path: Path) -> bool:
        """Fill the cache from a snapshot; False (cache unchanged) when there is none or
        it is unreadable or truncated."""
        fresh = TagCache(secret_key=self._secret_key)
        try:
            with path.open(encoding="utf-8") as fh:
                header = json.loads(fh.readline())
                if header.get("format") != SNAPSHOT_FORMAT:
                    return False
                synced_at = _parse(header.get("synced_at"))
                for _ in range(header["campaigns"]):
                    c = json.loads(fh.readline())
                    fresh._campaigns[c[0]] = CampaignEntry(
                        c[0], c[1], c[2], c[3], c[4], _parse(c[5]), _parse(c[6]), *c[7:]
                    )
                for line in fh:
                    # Older snapshots stop after destination_url (no NFC, no placement).
                    tid, code, campaign_id, kind, label, dest, *more = json.loads(line)
                    fresh._apply_tag((tid, code, campaign_id, kind, label, dest, "active", *more))
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            return False
        self._tags, self._campaigns, self._shared = fresh._tags, fresh._campaigns, fresh._shared
        self.loaded_from_snapshot = True
        self.snapshot_synced_at = synced_at
        return True


async def _missing(
    conn: psycopg.AsyncConnection[TupleRow], query: str, ids: list[int], chunk: int
) -> set[int]:
    """The ``ids`` that ``query`` (``... WHERE id = ANY(%s) AND <still live>``) does not
    return, asked ``chunk`` ids at a time."""
    gone = set(ids)
    for start in range(0, len(ids), chunk):
        cur = await conn.execute(query, (ids[start : start + chunk],))
        gone.difference_update(row[0] for row in await cur.fetchall())
    return gone


async def _db_now(conn: psycopg.AsyncConnection[TupleRow]) -> dt.datetime:
    row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
    assert row is not None
    value: dt.datetime = row[0]
    return value


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None
