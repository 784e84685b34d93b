"""Locations (stores, venues): create, read, list, nearest, update, delete, bulk import.

Geometry arrives as GeoJSON validated by the schemas (``campaigns/schemas.py``); here it
becomes PostGIS values (WKB through GeoAlchemy2) and back. ``point`` is
``geography(Point, 4326)``, so distances are geodesic metres; ``geofence`` is
``geometry``, so coverage is planar in degrees, as GeoJSON polygons are drawn.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import shapely
from pydantic import ValidationError
from pydantic_core import PydanticCustomError
from shapely.geometry import Point
from sqlalchemy import Select, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from campaigns.db import flush_unique, note_written_rows
from campaigns.errors import Conflict, InvalidInput, NotFound
from campaigns.models import Campaign, Location, Tag, utcnow
from campaigns.schemas import (
    LocationCreate,
    LocationUpdate,
    check_area,
    shape_of_area,
    shape_of_point,
)
from campaigns.services.campaigns import MAX_ID, keyset_page
from geo.geofence import GeoArea
from geo.geojson import (
    GeoError,
    check_lon_lat,
    from_wkb_element,
    to_ewkt,
    to_geojson,
    to_wkb_element,
)

#: Rows per ``INSERT ... ON CONFLICT`` statement of an import (a bounded statement:
#: progress is reported and memory stays flat).
IMPORT_CHUNK = 1000
#: Largest number of rows one import may carry.
MAX_IMPORT_ROWS = 100_000
#: Columns of an import CSV; ``name``, ``lat`` and ``lon`` are required.
CSV_COLUMNS = ("name", "external_id", "lat", "lon", "radius_m", "address", "timezone")
_REQUIRED_CSV_COLUMNS = ("name", "lat", "lon")

ImportFormat = Literal["csv", "geojson"]


def _not_found(location_id: int) -> NotFound:
    return NotFound(f"Location {location_id} not found", code="location_not_found")


def _taken(external_id: str | None) -> Conflict:
    return Conflict(
        f"external_id {external_id!r} is already used by another location",
        code="location_external_id_taken",
    )


def location_geojson(location: Location) -> dict[str, Any]:
    """``point`` and ``geofence`` of a stored location as GeoJSON objects."""
    return {
        "point": to_geojson(from_wkb_element(location.point)),
        "geofence": (
            to_geojson(from_wkb_element(location.geofence))
            if location.geofence is not None
            else None
        ),
    }


def _columns(fields: dict[str, Any]) -> dict[str, Any]:
    """Column values from normalised schema fields (GeoJSON -> WKB, exact doubles)."""
    columns = dict(fields)
    if "point" in columns:
        columns["point"] = to_wkb_element(shape_of_point(columns["point"]))
    if columns.get("geofence") is not None:
        columns["geofence"] = to_wkb_element(shape_of_area(columns["geofence"]))
    return columns


async def _flush(session: AsyncSession, external_id: str | None, add: Location | None) -> None:
    """Flush inside a savepoint; an ``external_id`` clash raises :class:`Conflict`
    ``location_external_id_taken`` and leaves the session usable."""
    await flush_unique(
        session,
        add=add,
        constraint="uq_locations_organization_id_external_id",
        conflict=_taken(external_id),
    )


async def create_location(
    session: AsyncSession, *, organization_id: int, data: LocationCreate
) -> Location:
    """Create a location. Raises :class:`Conflict` (``location_external_id_taken``)."""
    location = Location(organization_id=organization_id, **_columns(data.model_dump()))
    await _flush(session, data.external_id, location)
    return location


async def get_location(
    session: AsyncSession, *, organization_id: int, location_id: int
) -> Location:
    """The organization's location. Raises :class:`NotFound` ``location_not_found``
    (also for another organization's id)."""
    if not 1 <= location_id <= MAX_ID:
        raise _not_found(location_id)
    location = await session.scalar(
        select(Location).where(
            Location.id == location_id, Location.organization_id == organization_id
        )
    )
    if location is None:
        raise _not_found(location_id)
    return location


async def list_locations(
    session: AsyncSession, *, organization_id: int, limit: int = 50, cursor: str | None = None
) -> tuple[list[Location], str | None]:
    """Newest first, ``limit`` per page; returns the page and the next cursor."""
    query = select(Location).where(Location.organization_id == organization_id)
    return await keyset_page(session, query, Location.id, limit=limit, cursor=cursor)


def parse_near(text: str) -> tuple[float, float]:
    """``"LON,LAT"`` (WGS 84 degrees) as floats. Raises :class:`InvalidInput`
    ``invalid_coordinates``."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        lon, lat = (float(p) for p in parts)
        return check_lon_lat(lon, lat)
    except (ValueError, GeoError) as exc:
        detail = exc.detail if isinstance(exc, GeoError) else "near must be LON,LAT in degrees"
        raise InvalidInput(detail, code="invalid_coordinates") from exc


async def nearest_locations(
    session: AsyncSession,
    *,
    organization_id: int,
    near: tuple[float, float],
    within_m: float | None = None,
    limit: int = 50,
) -> list[tuple[Location, float]]:
    """The organization's locations nearest ``near`` (``(lon, lat)``) first, with their
    geodesic distance in metres (WGS 84 spheroid), at most ``within_m`` away when given.

    Two index-assisted steps. The GiST KNN operator ``<->`` on geography orders by
    distance on a sphere, which can differ from the spheroid's by ~0.5%: it picks
    ``limit`` candidates, and the farthest of them (spheroid distance D) bounds the
    answer, since at least ``limit`` locations lie within D. Every location within D
    (``ST_DWithin``, spheroid) is then ordered by its exact distance."""
    origin = func.ST_GeogFromText(to_ewkt(Point(near)))
    scope = [Location.organization_id == organization_id]
    if within_m is not None:
        scope.append(func.ST_DWithin(Location.point, origin, within_m))
    candidates = (
        select(func.ST_Distance(Location.point, origin).label("d"))
        .where(*scope)
        .order_by(Location.point.op("<->")(origin))
        .limit(limit)
        .subquery()
    )
    # +1 mm so the farthest candidate itself passes ST_DWithin whatever its rounding.
    bound = select(func.max(candidates.c.d) + 0.001).scalar_subquery()
    distance = func.ST_Distance(Location.point, origin).label("distance_m")
    query: Select[Any] = (
        select(Location, distance)
        .where(*scope, func.ST_DWithin(Location.point, origin, bound))
        .order_by(distance, Location.id)
        .limit(limit)
    )
    return [(row[0], float(row[1])) for row in await session.execute(query)]


async def location_areas(session: AsyncSession, *, organization_id: int) -> list[GeoArea]:
    """The organization's locations that have an area, as :class:`geo.geofence.GeoArea`
    (``id`` the location id, ``centre`` its point, ``polygon`` its geofence or ``radius_m``
    its circle), ready for :class:`geo.geofence.Geofences`. Locations without an area are
    left out: scans reach them only through their tags."""
    rows = await session.scalars(
        select(Location).where(
            Location.organization_id == organization_id,
            (Location.geofence.is_not(None)) | (Location.radius_m.is_not(None)),
        )
    )
    areas = []
    for location in rows:
        point = from_wkb_element(location.point)
        polygon = from_wkb_element(location.geofence) if location.geofence is not None else None
        areas.append(
            GeoArea(
                location.id, centre=(point.x, point.y), polygon=polygon, radius_m=location.radius_m
            )
        )
    return areas


def _invalid(exc: PydanticCustomError | GeoError) -> InvalidInput:
    if isinstance(exc, GeoError):
        return InvalidInput(exc.detail, code=exc.code)
    return InvalidInput(exc.message(), code=exc.type)


async def update_location(
    session: AsyncSession, *, organization_id: int, location_id: int, data: LocationUpdate
) -> Location:
    """Apply the fields present in ``data`` and check the merged location. Raises
    :class:`NotFound`, :class:`Conflict` (``location_external_id_taken``) and
    :class:`InvalidInput` (``name_required``, ``point_required``, ``area_conflict``: a
    radius sent while a geofence stays or the reverse, ``geofence_excludes_point``)."""
    location = await get_location(session, organization_id=organization_id, location_id=location_id)
    fields = data.model_dump(exclude_unset=True)
    for required in ("name", "point"):
        if required in fields and fields[required] is None:
            raise InvalidInput(f"{required} cannot be removed", code=f"{required}_required")
    stored = location_geojson(location)
    merged = {
        "point": fields.get("point", stored["point"]),
        "geofence": fields.get("geofence", stored["geofence"]),
        "radius": fields.get("radius_m", location.radius_m),
    }
    try:
        check_area(merged["point"], merged["geofence"], merged["radius"])
    except PydanticCustomError as exc:
        raise _invalid(exc) from exc
    for key, value in _columns(fields).items():
        setattr(location, key, value)
    location.updated_at = utcnow()
    await _flush(session, location.external_id, None)
    return location


async def delete_location(
    session: AsyncSession, *, organization_id: int, location_id: int, detach: bool = False
) -> None:
    """Delete a location. Raises :class:`NotFound`, and :class:`Conflict`
    ``location_in_use`` while tags of live campaigns are placed in it, unless ``detach``:
    then those tags lose their ``location_id`` and keep their ``placement``."""
    location = await get_location(session, organization_id=organization_id, location_id=location_id)
    in_use = await session.scalar(
        select(func.count())
        .select_from(Tag)
        .join(Campaign, Campaign.id == Tag.campaign_id)
        .where(Tag.location_id == location.id, Campaign.deleted_at.is_(None))
    )
    if in_use and not detach:
        raise Conflict(
            f"Location {location_id} is used by {in_use} tag(s); detach them first or "
            "delete with ?detach=true",
            code="location_in_use",
        )
    # Also tags of deleted campaigns: the foreign key would null them anyway.
    await session.execute(
        update(Tag)
        .where(Tag.location_id == location.id, Tag.organization_id == organization_id)
        .values(location_id=None, updated_at=utcnow())
    )
    await session.delete(location)
    await session.flush()


# --- Bulk import ----------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: rows created, rows updated (matched on ``external_id``)."""

    created: int
    updated: int


@dataclass
class _Row:
    number: int
    fields: dict[str, Any]


def _problem(row: int, field: str | None, code: str, detail: str) -> dict[str, Any]:
    """One bad row: ``row`` (1 = first record), ``field``, ``code``, ``detail``; plus
    ``loc``/``msg``/``type``, the field-problem shape shared by every 422."""
    loc: list[str | int] = ["row", row, *([field] if field else [])]
    return {
        "row": row,
        "field": field,
        "code": code,
        "detail": detail,
        "loc": loc,
        "msg": detail,
        "type": code,
    }


def _csv_records(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records of an import CSV, and header problems (row 0).

    The header is read as spreadsheets write it: names in any case and padded with
    spaces; empty trailing names (a trailing comma) name columns that must stay empty;
    ``;`` as the delimiter when the header line has no comma (the French locale's CSV)."""
    text = text.lstrip("\ufeff")
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if "," not in first_line and ";" in first_line else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in reader.fieldnames or []]
    except csv.Error as exc:  # a header cell over the csv module's limit (128 KiB)...
        return [], [_problem(0, None, "invalid_csv", str(exc))]
    named = len(header)
    while named and not header[named - 1]:
        named -= 1  # trailing unnamed columns: allowed, if their cells are empty
    problems = [
        _problem(0, name, "missing_column", f"the header lacks column {name!r}")
        for name in _REQUIRED_CSV_COLUMNS
        if name not in header
    ] + [
        _problem(0, name, "unknown_column", f"unknown column {name!r}")
        for name in dict.fromkeys(header[:named])
        if name not in CSV_COLUMNS
    ]
    # A column named twice: DictReader would keep its last cell and drop the first.
    problems += [
        _problem(0, name, "duplicate_column", f"column {name!r} appears more than once")
        for name in dict.fromkeys(header)
        if name in CSV_COLUMNS and header.count(name) > 1
    ]
    if problems:
        return [], problems
    # Unnamed trailing columns get names no header can have (stripped: no leading space).
    reader.fieldnames = header[:named] + [f" {i}" for i in range(named, len(header))]
    records: list[dict[str, Any]] = []
    number = 0
    try:
        for number, raw in enumerate(reader, start=1):
            _csv_row(number, raw, records, problems)
    except csv.Error as exc:  # a cell over the csv module's limit (128 KiB), a NUL byte...
        problems.append(_problem(number + 1, None, "invalid_csv", str(exc)))
    return records, problems


def _csv_row(
    number: int, raw: dict[str, Any], records: list[dict[str, Any]], problems: list[dict[str, Any]]
) -> None:
    """Append the record of one CSV row to ``records``, or its problem to ``problems``."""
    unnamed = [v for k, v in raw.items() if k is not None and k.startswith(" ")]
    if None in raw or any(v and v.strip() for v in unnamed):
        problems.append(_problem(number, None, "too_many_columns", "more cells than columns"))
        return
    cells = {
        k: (v.strip() if isinstance(v, str) else v)
        for k, v in raw.items()
        if k is not None and not k.startswith(" ")
    }
    # An empty cell is an absent field: null for optional ones, "missing" for name.
    record: dict[str, Any] = {k: v for k, v in cells.items() if v and k not in ("lat", "lon")}
    try:
        lat, lon = _csv_number(cells.get("lat"), "lat"), _csv_number(cells.get("lon"), "lon")
        lon, lat = check_lon_lat(lon, lat)
    except GeoError as exc:
        field = "lat" if "latitude" in exc.detail else "lon"
        problems.append(_problem(number, field, exc.code, exc.detail))
        return
    record["point"] = {"type": "Point", "coordinates": [lon, lat]}
    if record.get("radius_m") is not None:
        try:
            record["radius_m"] = float(_decimal(record["radius_m"]))
        except ValueError:
            problems.append(_problem(number, "radius_m", "invalid_radius", "not a number"))
            return
    records.append({"number": number, "fields": record})


def _decimal(value: str) -> str:
    """``value`` with a decimal comma (``48,8566``, as a French spreadsheet writes it in
    a ``;``-separated file) read as a decimal point."""
    return value.replace(",", ".") if value.count(",") == 1 and "." not in value else value


def _csv_number(value: str | None, field: str) -> float:
    what = "latitude" if field == "lat" else "longitude"
    if not value:
        raise GeoError("invalid_coordinates", f"{what} is missing")
    try:
        return float(_decimal(value))
    except ValueError:
        raise GeoError("invalid_coordinates", f"{what} {value[:40]!r} is not a number") from None


def _feature_records(data: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records of a GeoJSON FeatureCollection. A Point geometry is the location's point;
    a Polygon/MultiPolygon is its geofence, with the point from the ``point`` property
    (a GeoJSON Point) or else the polygon's representative point (inside it)."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        return [], [_problem(0, None, "invalid_geojson", "expected a GeoJSON FeatureCollection")]
    features = data.get("features")
    if not isinstance(features, list):
        return [], [_problem(0, "features", "invalid_geojson", "features must be an array")]
    records: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for number, feature in enumerate(features, start=1):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            problems.append(_problem(number, None, "invalid_geojson", "not a GeoJSON Feature"))
            continue
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            problems.append(_problem(number, "properties", "invalid_geojson", "not an object"))
            continue
        fields = {k: v for k, v in properties.items() if k != "point"}
        geometry = feature.get("geometry")
        kind = geometry.get("type") if isinstance(geometry, dict) else None
        if kind in ("Polygon", "MultiPolygon"):
            try:
                area = shape_of_area(geometry)  # type: ignore[arg-type]
            except GeoError as exc:
                problems.append(_problem(number, "geometry", exc.code, exc.detail))
                continue
            fields["geofence"] = to_geojson(area)
            point = properties.get("point")
            fields["point"] = to_geojson(area.representative_point()) if point is None else point
        else:
            fields["point"] = geometry  # a Point, else the schema names the problem
        records.append({"number": number, "fields": fields})
    return records, problems


def _validate(records: list[dict[str, Any]]) -> tuple[list[_Row], list[dict[str, Any]]]:
    rows: list[_Row] = []
    problems: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for record in records:
        number = record["number"]
        try:
            data = LocationCreate.model_validate(record["fields"])
        except ValidationError as exc:
            for error in exc.errors():
                loc = [str(part) for part in error["loc"]]
                field = loc[0] if loc else None
                problems.append(_problem(number, field, error["type"], error["msg"]))
            continue
        if data.external_id is not None:
            if data.external_id in seen:
                problems.append(
                    _problem(
                        number,
                        "external_id",
                        "duplicate_external_id",
                        f"external_id {data.external_id!r} is also on row {seen[data.external_id]}",
                    )
                )
                continue
            seen[data.external_id] = number
        rows.append(_Row(number, data.model_dump()))
    return rows, problems


async def _check_kept_geofences(
    session: AsyncSession, organization_id: int, rows: list[_Row]
) -> list[dict[str, Any]]:
    """Rows that keep a stored geofence (CSV without radius) must have their new point
    inside it."""
    keeping = {
        r.fields["external_id"]: r
        for r in rows
        if r.fields["external_id"] is not None and r.fields["radius_m"] is None
    }
    if not keeping:
        return []
    stored = await session.execute(
        select(Location.external_id, Location.geofence).where(
            Location.organization_id == organization_id,
            Location.external_id.in_(list(keeping)),
            Location.geofence.is_not(None),
        )
    )
    problems = []
    for external_id, geofence in stored:
        row = keeping[external_id]
        if geofence is not None and not from_wkb_element(geofence).covers(
            shape_of_point(row.fields["point"])
        ):
            detail = "the point is outside the geofence stored for this location"
            problems.append(_problem(row.number, "lat", "geofence_excludes_point", detail))
    return problems


async def import_locations(
    session: AsyncSession,
    *,
    organization_id: int,
    content: bytes | str,
    fmt: ImportFormat,
    progress: Callable[[int, int], None] | None = None,
    encoding: str | None = None,
) -> ImportSummary:
    """Create or update (matched on ``external_id``) the locations of an import file.

    ``content`` as bytes is decoded from ``encoding`` (a charset name such as
    ``windows-1252``; default UTF-8): an unknown charset or bytes that are not text in it
    raise :class:`InvalidInput` ``invalid_encoding`` (row 0).

    ``content`` is a CSV (header ``name,external_id,lat,lon,radius_m,address,timezone``;
    empty cells are null) or a GeoJSON FeatureCollection (properties carry the same
    fields; see :func:`_feature_records` for geometries). The whole file is validated
    first: any bad row raises :class:`InvalidInput` ``validation_error`` whose ``errors``
    list every problem (``row``: 1 = first record, 0 = the file itself; ``field``,
    ``code``, ``detail``) and nothing is written. A CSV row without ``radius_m`` keeps the
    geofence the location may have; otherwise a row replaces the location's fields.
    Rows are written by ``INSERT ... ON CONFLICT (organization_id, external_id) DO
    UPDATE`` in chunks of :data:`IMPORT_CHUNK`; ``progress(done, total)`` is called after
    each chunk."""
    if isinstance(content, bytes):
        codec = encoding or "utf-8"
        try:
            text = content.decode(codec)
        except LookupError as exc:  # unknown, or not a text encoding (base64, rot13...)
            raise _file_problem("invalid_encoding", f"unknown charset {codec!r}") from exc
        except UnicodeDecodeError as exc:
            raise _file_problem("invalid_encoding", f"the file is not {codec} text") from exc
    else:
        text = content
    if fmt == "csv":
        records, problems = _csv_records(text)
    else:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: hostile nesting
            raise _file_problem("invalid_geojson", f"not JSON: {exc}") from exc
        records, problems = _feature_records(data)
    if len(records) + len(problems) > MAX_IMPORT_ROWS:
        raise _file_problem("too_many_rows", f"at most {MAX_IMPORT_ROWS} rows per import")
    if not records and not problems:
        raise _file_problem("empty_import", "the file has no rows")
    rows, row_problems = _validate(records)
    problems += row_problems
    keeps_geofence = fmt == "csv"  # a CSV carries no geofence: keep the stored one
    if not problems and keeps_geofence:
        problems = await _check_kept_geofences(session, organization_id, rows)
    if problems:
        problems.sort(key=lambda p: (p["row"], p["field"] or ""))
        raise InvalidInput(
            f"{len({p['row'] for p in problems})} row(s) are invalid; nothing was imported",
            errors=problems,
        )
    created = updated = 0
    for start in range(0, len(rows), IMPORT_CHUNK):
        chunk = rows[start : start + IMPORT_CHUNK]
        c, u = await _upsert(session, organization_id, chunk, keeps_geofence=keeps_geofence)
        created, updated = created + c, updated + u
        if progress is not None:
            progress(start + len(chunk), len(rows))
    return ImportSummary(created=created, updated=updated)


def _file_problem(code: str, detail: str) -> InvalidInput:
    return InvalidInput(detail, errors=[_problem(0, None, code, detail)])


#: One statement per chunk: rows travel as arrays (one parameter per column, not per
#: cell), so nothing is compiled per row. ``xmax = 0`` tells a fresh row from an update.
_UPSERT = """
INSERT INTO locations AS l
    (organization_id, name, external_id, address, timezone, point, geofence, radius_m)
SELECT :organization_id, r.name, r.external_id, r.address, r.timezone,
       ST_GeogFromWKB(r.point), ST_SetSRID(ST_GeomFromWKB(r.geofence), 4326), r.radius_m
FROM unnest(
    CAST(:name AS text[]), CAST(:external_id AS text[]), CAST(:address AS text[]),
    CAST(:timezone AS text[]), CAST(:point AS bytea[]), CAST(:geofence AS bytea[]),
    CAST(:radius_m AS float8[])
) AS r(name, external_id, address, timezone, point, geofence, radius_m)
ON CONFLICT (organization_id, external_id) DO UPDATE SET
    name = excluded.name, address = excluded.address, timezone = excluded.timezone,
    point = excluded.point, radius_m = excluded.radius_m, geofence = {geofence},
    updated_at = now()
RETURNING xmax = 0
"""
#: A CSV carries no geofence: a row with a radius replaces the stored geofence, a row
#: without one keeps it.
_KEPT_GEOFENCE = "CASE WHEN excluded.radius_m IS NULL THEN l.geofence END"


async def _upsert(
    session: AsyncSession, organization_id: int, rows: Sequence[_Row], *, keeps_geofence: bool
) -> tuple[int, int]:
    """Insert or update ``rows``; the numbers of rows created and updated."""
    geofence = _KEPT_GEOFENCE if keeps_geofence else "excluded.geofence"
    columns: dict[str, list[Any]] = {
        key: [r.fields[key] for r in rows]
        for key in ("name", "external_id", "address", "timezone", "radius_m")
    }
    columns["point"] = [shapely.to_wkb(shape_of_point(r.fields["point"])) for r in rows]
    columns["geofence"] = [
        shapely.to_wkb(shape_of_area(r.fields["geofence"])) if r.fields["geofence"] else None
        for r in rows
    ]
    result = await session.execute(
        text(_UPSERT.format(geofence=geofence)), {"organization_id": organization_id, **columns}
    )
    inserted = [bool(row[0]) for row in result]
    created = sum(inserted)
    note_written_rows(session, "locations", count=len(inserted))
    return created, len(inserted) - created
