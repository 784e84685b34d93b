"""``passerelle tags generate``: bulk tags from the command line, with their artwork and
manifest written to a directory (a real subprocess against the test database)."""

from __future__ import annotations

import csv
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.scanning.links import qr_url
from tests.conftest import Org, make_campaign, table_snapshot
from tests.fixtures.artwork import decode_artwork
from tests.fixtures.cli import passerelle
from tests.fixtures.stores import make_stores

ORIGIN = "https://go.example.com"


async def _stored(engine: AsyncEngine, campaign_id: int) -> list[tuple[str, str, str, str]]:
    """(code, store external id, label, kind) of the campaign's tags, sorted."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT t.code, l.external_id, t.label, t.kind FROM tags t "
                "JOIN locations l ON l.id = t.location_id WHERE t.campaign_id = :c ORDER BY t.id"
            ),
            {"c": campaign_id},
        )
        return sorted(tuple(row) for row in rows)  # type: ignore[misc]


def _manifest(directory: Path) -> list[dict[str, str]]:
    with (directory / "manifest.csv").open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


async def test_generate_writes_decodable_artwork_and_a_manifest_matching_the_database(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    campaign = await make_campaign(client, org)
    stores = await make_stores(client, org)
    args = [
        "tags",
        "generate",
        "--organization",
        str(org.id),
        "--campaign",
        str(campaign["id"]),
        "--per-location",
        "2",
        "--labels",
        "window,counter",
        "--locations",
        f"{stores[0]['id']},{stores[2]['id']}",
    ]
    out = tmp_path / "png"
    done = await passerelle(
        database_url, *args, "--out", str(out), PASSERELLE_BASE_URL=ORIGIN, PASSERELLE_ENV="test"
    )
    assert done.returncode == 0, done.stderr
    assert "4 tag(s) created, 0 already existed; 4 artwork file(s)" in done.stdout

    stored = await _stored(engine, campaign["id"])
    manifest = _manifest(out)
    # The manifest lists the tags as requested: by store, then label.
    assert [(r["store"], r["label"]) for r in manifest] == [
        ("S-001", "window"),
        ("S-001", "counter"),
        ("S-003", "window"),
        ("S-003", "counter"),
    ]
    assert sorted((r["code"], r["store"], r["label"], r["kind"]) for r in manifest) == stored
    assert all(r["short_url"] == f"{ORIGIN}/s/{r['code']}" for r in manifest)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.csv", *(f"{store}_{label}_{code}.png" for code, store, label, _ in stored)]
    )
    for row in manifest:
        assert row["file"] == f"{row['store']}_{row['label']}_{row['code']}.png"
        decoded = decode_artwork("png", (out / row["file"]).read_bytes())
        assert decoded.text == qr_url(ORIGIN, row["code"])

    # Again, as SVG: nothing new in the database, the same codes drawn again.
    before = await table_snapshot(engine, "tags")
    again = await passerelle(
        database_url,
        *args,
        "--out",
        str(tmp_path / "svg"),
        "--format",
        "svg",
        PASSERELLE_BASE_URL=ORIGIN,
        PASSERELLE_ENV="test",
    )
    assert again.returncode == 0, again.stderr
    assert "0 tag(s) created, 4 already existed" in again.stdout
    assert await table_snapshot(engine, "tags") == before
    svg_manifest = _manifest(tmp_path / "svg")
    assert [r["code"] for r in svg_manifest] == [r["code"] for r in manifest]
    first = svg_manifest[0]
    svg = (tmp_path / "svg" / first["file"]).read_bytes()
    assert decode_artwork("svg", svg).text == qr_url(ORIGIN, first["code"])


async def test_generate_nfc_writes_only_the_manifest(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    campaign = await make_campaign(client, org)
    await make_stores(client, org, 2)
    done = await passerelle(
        database_url,
        *("tags", "generate", "--organization", str(org.id), "--campaign", str(campaign["id"])),
        *("--per-location", "3", "--kind", "nfc", "--out", str(tmp_path)),
        PASSERELLE_BASE_URL=ORIGIN,
        PASSERELLE_ENV="test",
    )
    assert done.returncode == 0, done.stderr
    manifest = _manifest(tmp_path)
    assert sorted((r["code"], r["store"], r["label"], r["kind"]) for r in manifest) == (
        await _stored(engine, campaign["id"])
    )
    assert [r["label"] for r in manifest] == ["1", "2", "3"] * 2
    assert all(r["file"] == "" for r in manifest)
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


async def test_generate_refuses_bad_input_and_stores_nothing(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
) -> None:
    campaign = await make_campaign(client, org)
    stores = await make_stores(client, org)
    (foreign,) = await make_stores(client, other_org, 1)
    before = await table_snapshot(engine, "tags", "locations")
    base = ("tags", "generate", "--campaign", str(campaign["id"]), "--out", str(tmp_path))
    cases = [
        (("--organization", str(org.id), "--per-location", "2", "--labels", "a"), "per_location"),
        (
            (
                "--organization",
                str(org.id),
                "--per-location",
                "1",
                "--locations",
                f"{foreign['id']}",
            ),
            "location(s) not found",
        ),
        (("--organization", str(other_org.id), "--per-location", "1"), "not found"),
        (("--organization", str(org.id), "--per-location", "0"), "per_location"),
        (("--organization", str(org.id), "--per-location", "1", "--locations", "x"), "location"),
    ]
    for extra, message in cases:
        done = await passerelle(database_url, *base, *extra, PASSERELLE_BASE_URL=ORIGIN)
        assert done.returncode == 1, (extra, done.stdout, done.stderr)
        assert message in done.stderr, (extra, done.stderr)
    assert await table_snapshot(engine, "tags", "locations") == before
    assert not (tmp_path / "manifest.csv").exists()
    assert stores
