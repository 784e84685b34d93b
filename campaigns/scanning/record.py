"""The scan record: the one definition of a scan's columns, and its spool format.

:class:`ScanRecord` is built by keyword; every enrichment column is optional (``None`` or
``False``), so an enrichment step only sets fields. Each field carries its PostgreSQL type
(``metadata["pg"]``), and everything else derives from the class: :data:`COLUMNS` (the
``COPY`` column list and order), :data:`COPY_SQL`, :data:`INSERT_SQL` (the ``unnest``
casts), :func:`row` (the tuple ``COPY`` writes) and the spool lines
(:meth:`ScanRecord.to_json`, :meth:`ScanRecord.from_json`). A test checks that the
columns match the ORM model ``campaigns.models.Scan`` (its computed columns, such as
``position``, are the database's). Adding a column: add the field here, the model column
and a migration.

Spool format (one JSON document per line, UTF-8, ``\\n``-terminated):

- **version 1** (written now): an object ``{"v": 1, "<column>": value, ...}`` with every
  column by name; ``timestamptz`` as ISO 8601 text with its offset, ``bytea`` as lower-case
  hex, ``inet`` and ``uuid`` as text, other values as JSON scalars.
- **version 0** (written until 2026-11-29): a positional array of the 16 columns of
  :data:`V0_COLUMNS`, same value encodings. Still read: a spool left by an older process.

``tests/fixtures/spool/`` keeps a spool file written by each version's code; each must
keep replaying with the right values (``tests/scanning/test_writer.py``).

Reading: columns missing from a line take their defaults, so adding an optional column
needs no new version (``internal``, added with issue 11, is read as false from the lines
written before it: ``tests/fixtures/spool/scans-v1.jsonl`` has none). A line from a
newer format, a ``"v"`` above :data:`SPOOL_VERSION` or a column this code does not know,
raises :class:`NewerSpoolFormat`: the writer keeps it in the dead-letter file for an
operator (replaying it with this code would drop the unknown columns). A version is
bumped only for changes an older reader cannot take by ignoring (a rename, a new
encoding); such a bump must keep reading the older versions.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import typing
import uuid
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Final

#: The spool format written by :meth:`ScanRecord.to_json`.
SPOOL_VERSION: Final = 1

#: Why a scan is not a person's (column ``bot_reason``); ``None`` for people.
BOT_REASONS: Final = ("head", "prefetch", "previewer", "scanner", "crawler", "no_user_agent")


def _pg(pg_type: str) -> dict[str, str]:
    return {"pg": pg_type}


@dataclass(slots=True, kw_only=True)
class ScanRecord:
    """One row of ``scans`` (its ``id`` is the database's).

    ``scanned_at`` is aware UTC; ``ip_truncated`` the client's /24 (IPv4) or /48 (IPv6)
    network address as text; ``visitor_id`` 16 bytes; ``bot_reason`` one of
    :data:`BOT_REASONS` or ``None``; ``burst`` true for a scan from an address past the
    per-address rate.
    """

    click_id: str = field(metadata=_pg("text"))
    organization_id: int = field(metadata=_pg("bigint"))
    campaign_id: int = field(metadata=_pg("bigint"))
    tag_id: int = field(metadata=_pg("bigint"))
    scanned_at: dt.datetime = field(metadata=_pg("timestamptz"))
    channel: str = field(metadata=_pg("text"))
    method: str = field(metadata=_pg("text"))
    outcome: str = field(metadata=_pg("text"))
    destination: str = field(metadata=_pg("text"))
    # Enrichment: each step sets its own fields.
    user_agent: str | None = field(default=None, metadata=_pg("text"))
    device_type: str | None = field(default=None, metadata=_pg("text"))
    os: str | None = field(default=None, metadata=_pg("text"))
    browser: str | None = field(default=None, metadata=_pg("text"))
    is_bot: bool = field(default=False, metadata=_pg("bool"))
    ip_truncated: str | None = field(default=None, metadata=_pg("inet"))
    visitor_id: bytes | None = field(default=None, metadata=_pg("bytea"))
    bot_reason: str | None = field(default=None, metadata=_pg("text"))
    burst: bool = field(default=False, metadata=_pg("bool"))
    #: NTAG 424 DNA taps: the SUN message's read counter and its verdict (``valid``,
    #: ``replayed``, ``invalid``); null for other scans.
    nfc_counter: int | None = field(default=None, metadata=_pg("integer"))
    nfc_verification: str | None = field(default=None, metadata=_pg("text"))
    #: The first-party visitor cookie's id, when the organization sets one (journeys).
    cookie_id: uuid.UUID | None = field(default=None, metadata=_pg("uuid"))
    #: Geolocation (see the ``Scan`` model): GeoIP country (ISO 3166-1 alpha-2), region,
    #: city and IP position (WGS 84, accuracy in metres); the position of record, its
    #: ``geo_source`` (``placement`` or ``ip``) and accuracy; the matched store; whether
    #: the IP position is far from the tag's placement.
    country: str | None = field(default=None, metadata=_pg("text"))
    region: str | None = field(default=None, metadata=_pg("text"))
    city: str | None = field(default=None, metadata=_pg("text"))
    ip_lat: float | None = field(default=None, metadata=_pg("float8"))
    ip_lon: float | None = field(default=None, metadata=_pg("float8"))
    ip_accuracy_m: int | None = field(default=None, metadata=_pg("integer"))
    position_lat: float | None = field(default=None, metadata=_pg("float8"))
    position_lon: float | None = field(default=None, metadata=_pg("float8"))
    geo_source: str | None = field(default=None, metadata=_pg("text"))
    accuracy_m: float | None = field(default=None, metadata=_pg("float8"))
    location_id: int | None = field(default=None, metadata=_pg("bigint"))
    far_from_placement: bool | None = field(default=None, metadata=_pg("bool"))
    #: The redirect rule that chose the destination, and the split variant served.
    rule_id: int | None = field(default=None, metadata=_pg("bigint"))
    variant: str | None = field(default=None, metadata=_pg("text"))
    #: A scan from a phone signed into the organization's dashboard (staff testing a
    #: poster, issue 11): stored, left out of every figure.
    internal: bool = field(default=False, metadata=_pg("bool"))
    #: In memory only (not a column, not spooled): the tap's campaign blocks replayed
    #: taps (``nfc_invalid_tap = block``), so a ``replayed`` verdict decided by the writer
    #: makes its ``outcome`` ``blocked`` (the 403 page). A spooled tap was redirected
    #: whatever its verdict: replayed from the spool, it keeps its outcome.
    block_if_replayed: bool = field(default=False, metadata={})

    @property
    def counter_to_accept(self) -> int | None:
        """The read counter of an authentic NTAG 424 DNA tap whose replay verdict is not
        decided yet (``nfc_counter`` set, ``nfc_verification`` None): the writer offers
        it to :func:`campaigns.scanning.nfc.accept_counter` in the transaction that stores
        the scan. None for every other scan."""
        return self.nfc_counter if self.nfc_verification is None else None

    def to_json(self) -> str:
        """This record as one current-version spool line (no newline)."""
        doc: dict[str, Any] = {"v": SPOOL_VERSION}
        for column in COLUMNS:
            value = getattr(self, column.name)
            doc[column.name] = value if value is None else column.encode(value)
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> ScanRecord:
        """Parse a spool line of any known version (see the module docstring).

        Raises :class:`NewerSpoolFormat` for a line of a newer format and ``ValueError``
        for a torn or foreign line (bad JSON, missing required column, bad encoding).
        """
        doc = json.loads(line)
        if isinstance(doc, list):  # version 0
            if len(doc) != len(V0_COLUMNS):
                raise ValueError("version 0 spool line has the wrong number of fields")
            doc = dict(zip(V0_COLUMNS, doc, strict=True))
        elif isinstance(doc, dict):
            version = doc.pop("v", None)
            if not isinstance(version, int) or version < 1:
                raise ValueError(f"spool line has no valid version: {version!r}")
            if version > SPOOL_VERSION:
                raise NewerSpoolFormat(f"spool line of version {version}")
            unknown = doc.keys() - _BY_NAME.keys()
            if unknown:
                raise NewerSpoolFormat(f"spool line with unknown columns {sorted(unknown)}")
        else:
            raise ValueError("spool line is neither an object nor an array")
        values: dict[str, Any] = {}
        for name, value in doc.items():
            values[name] = value if value is None else _BY_NAME[name].decode(value)
        try:
            return cls(**values)
        except TypeError as exc:  # a required column is missing
            raise ValueError(str(exc)) from exc


class NewerSpoolFormat(ValueError):
    """A spool line written by a newer version of Passerelle (kept, not replayed)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of ``scans`` as the writer sees it: ``pg_type`` is the PostgreSQL type
    of the ``unnest`` cast; ``encode``/``decode`` turn a non-null value into its JSON
    spool form and back (identity for JSON types); ``nullable`` when ``None`` is allowed."""

    name: str
    pg_type: str
    nullable: bool
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


_CODECS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "timestamptz": (dt.datetime.isoformat, dt.datetime.fromisoformat),
    "bytea": (bytes.hex, bytes.fromhex),
    "uuid": (str, uuid.UUID),
}


def _columns() -> tuple[Column, ...]:
    hints = typing.get_type_hints(ScanRecord)
    columns = []
    for f in fields(ScanRecord):
        if "pg" not in f.metadata:
            continue  # in memory only
        encode, decode = _CODECS.get(f.metadata["pg"], (_same, _same))
        nullable = type(None) in typing.get_args(hints[f.name])
        if nullable and f.default is MISSING:
            raise TypeError(f"nullable column {f.name} needs a default")
        columns.append(Column(f.name, f.metadata["pg"], nullable, encode, decode))
    return tuple(columns)


#: The columns, in ``COPY`` order.
COLUMNS: Final = _columns()
_BY_NAME: Final = {column.name: column for column in COLUMNS}

#: The column order of version 0 spool lines (frozen: never derive it from COLUMNS).
V0_COLUMNS: Final = (
    "click_id",
    "organization_id",
    "campaign_id",
    "tag_id",
    "scanned_at",
    "channel",
    "method",
    "outcome",
    "destination",
    "user_agent",
    "device_type",
    "os",
    "browser",
    "is_bot",
    "ip_truncated",
    "visitor_id",
)

_NAMES = ", ".join(column.name for column in COLUMNS)

#: The group commit: ``copy.write_row(row(record))`` per scan.
COPY_SQL: Final = f"COPY scans ({_NAMES}) FROM STDIN"

#: The idempotent insert of replay and of the row-by-row fallback: one parameter per
#: column, each the list of that column's values (:func:`column_lists`).
INSERT_SQL: Final = (
    f"INSERT INTO scans ({_NAMES}) SELECT * FROM unnest("  # noqa: S608 - constant columns
    + ", ".join(f"%s::{column.pg_type}[]" for column in COLUMNS)
    + ") ON CONFLICT (click_id) DO NOTHING"
)

#: ``row(record)``: the record's values as a tuple in :data:`COLUMNS` order (one C call).
row: Final[Callable[[ScanRecord], tuple[Any, ...]]] = operator.attrgetter(
    *(column.name for column in COLUMNS)
)


def column_lists(records: list[ScanRecord]) -> list[list[Any]]:
    """The parameters of :data:`INSERT_SQL`: one list per column, in column order."""
    return [list(values) for values in zip(*map(row, records), strict=True)]
