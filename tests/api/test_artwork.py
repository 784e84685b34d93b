"""Printing through the API: artwork parameters, the organization logo, ``print.zip``,
``sheets.pdf``, and bounded, fair rendering that holds no database transaction."""

from __future__ import annotations

import asyncio
import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ndef
import PIL.Image
import pypdfium2
import pytest
import zxingcpp
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.payloads.rendering import RenderPool
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.artwork import SVG_LOGO, decode_artwork, pdf_page_png, png_bomb, png_logo
from tests.fixtures.render_jobs import wait_for_file
from tests.fixtures.stores import make_stores

DESTINATION = "https://shop.example.com/summer"
PNG_LOGO = png_logo()


async def new_tag(client: httpx.AsyncClient, org: Org, **overrides: Any) -> dict[str, Any]:
    campaign = await make_campaign(client, org, destination_url=DESTINATION)
    return await make_tag(client, org, campaign["id"], **overrides)


async def put_logo(
    client: httpx.AsyncClient, org: Org, body: bytes, media_type: str
) -> httpx.Response:
    return await client.put(
        "/v1/organization/logo",
        content=body,
        headers={**org.headers, "Content-Type": media_type},
    )


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
@pytest.mark.parametrize(
    "params",
    [
        {"size_mm": 30, "dpi": 600},
        {"size_mm": 13.2},  # the smallest allowed: 33 modules of 0.4 mm
        {"fg": "#1A237E", "bg": "FFF8E1", "caption": "Boulangerie Dupont — Scan me"},
        {"fg": "FFFFFF", "bg": "000000", "allow_inverted": "true"},
    ],
)
async def test_artwork_decodes_to_the_tag(
    client: httpx.AsyncClient, org: Org, fmt: str, params: dict[str, Any]
) -> None:
    tag = await new_tag(client, org)
    response = await client.get(
        f"/v1/tags/{tag['id']}/qr", params={"format": fmt, **params}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'inline; filename="{tag["code"]}.{fmt}"'
    assert decode_artwork(fmt, response.content).text == tag["qr_content"]


async def test_png_pixel_size_from_millimetres(client: httpx.AsyncClient, org: Org) -> None:
    tag = await new_tag(client, org)
    response = await client.get(
        f"/v1/tags/{tag['id']}/qr", params={"size_mm": 25.4, "dpi": 300}, headers=org.headers
    )
    image = PIL.Image.open(io.BytesIO(response.content))
    assert image.size == (300, 300)
    pdf = await client.get(
        f"/v1/tags/{tag['id']}/qr", params={"format": "pdf", "size_mm": 50.8}, headers=org.headers
    )
    assert pdf.headers["content-type"] == "application/pdf"
    assert pypdfium2.PdfDocument(pdf.content)[0].get_size() == pytest.approx((144, 144), abs=0.01)


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"fg": "999999"}, "low_contrast"),
        ({"fg": "FFFFFF", "bg": "000000"}, "inverted_colours"),
        ({"size_mm": 10}, "too_small_to_scan"),
        ({"size_mm": 1000, "dpi": 2400}, "validation_error"),
        ({"size_mm": 30, "size": 300}, "validation_error"),
    ],
)
async def test_refused_styles(
    client: httpx.AsyncClient, org: Org, params: dict[str, Any], code: str
) -> None:
    tag = await new_tag(client, org)
    response = await client.get(f"/v1/tags/{tag['id']}/qr", params=params, headers=org.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    if code == "too_small_to_scan":
        assert body["min_size_mm"] == 13.2


async def test_logo_upload_and_render(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    tag = await new_tag(client, org)
    url = f"/v1/tags/{tag['id']}/qr"
    missing = await client.get(url, params={"logo": "true"}, headers=org.headers)
    assert missing.status_code == 404
    assert missing.json()["code"] == "logo_not_found"

    stored = await put_logo(client, org, PNG_LOGO.content, "image/png")
    assert stored.status_code == 200, stored.text
    assert stored.json() == {
        "media_type": "image/png",
        "size_bytes": len(PNG_LOGO.content),
        "sha256": PNG_LOGO.sha256,
    }
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT organization_id, media_type, content FROM organization_logos")
            )
        ).one()
    assert tuple(row) == (org.id, "image/png", PNG_LOGO.content)

    first = await client.get(url, params={"logo": "true", "size_mm": 40}, headers=org.headers)
    assert first.status_code == 200, first.text
    barcode = decode_artwork("png", first.content)
    assert barcode.text == tag["qr_content"] and barcode.ec_level == "H"

    # Replacing the logo changes the artwork and so its ETag.
    replaced = await put_logo(client, org, SVG_LOGO.content, "image/svg+xml; charset=utf-8")
    assert replaced.status_code == 200
    for fmt in ("png", "svg", "pdf"):
        again = await client.get(
            url, params={"logo": "true", "size_mm": 40, "format": fmt}, headers=org.headers
        )
        assert decode_artwork(fmt, again.content).text == tag["qr_content"]
        if fmt == "png":
            assert again.headers["etag"] != first.headers["etag"]
    # The other organization has no logo.
    other_tag = await new_tag(client, other_org)
    response = await client.get(
        f"/v1/tags/{other_tag['id']}/qr", params={"logo": "true"}, headers=other_org.headers
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        (b"this is not an image", "image/png"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png"),
        (png_bomb(50_000, 50_000), "image/png"),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "image/svg+xml",
        ),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"><image href="https://evil.example/x.png"/></svg>',
            "image/svg+xml",
        ),
        (b"<svg", "image/svg+xml"),
    ],
    ids=["not-an-image", "broken-png", "bomb", "svg-script", "svg-external-href", "svg-truncated"],
)
async def test_bad_logos_are_422_and_change_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: bytes, media_type: str
) -> None:
    assert (await put_logo(client, org, PNG_LOGO.content, "image/png")).status_code == 200
    before = await table_snapshot(engine, "organization_logos", "organizations")
    response = await put_logo(client, org, body, media_type)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "invalid_logo"
    assert await table_snapshot(engine, "organization_logos", "organizations") == before


async def test_logo_of_another_type_is_415(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    before = await table_snapshot(engine, "organization_logos")
    response = await put_logo(client, org, b"GIF89a", "image/gif")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert await table_snapshot(engine, "organization_logos") == before
    assert (await client.put("/v1/organization/logo", content=PNG_LOGO.content)).status_code == 401


# --- print.zip ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
async def test_print_zip_matches_the_database(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, fmt: str
) -> None:
    campaign = await make_campaign(client, org, destination_url=DESTINATION)
    labels = ["window 1", "../../etc/passwd", "Vitrine été", None, "=HYPERLINK()"]
    for label in labels:
        await make_tag(client, org, campaign["id"], label=label)
    await make_tag(client, org, campaign["id"], kind="nfc", label="sticker")
    await make_tag(
        client, org, campaign["id"], kind="nfc_sun", label="424", nfc={"uid": "04A1B2C3D4E5F6"}
    )
    other = await make_campaign(client, org, name="Other", destination_url=DESTINATION)
    await make_tag(client, org, other["id"], label="not in this export")

    response = await client.get(
        f"/v1/campaigns/{campaign['id']}/print.zip",
        params={"format": fmt, "size_mm": 30, "caption": "Scan me"},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT code, kind, label FROM tags WHERE campaign_id = :c ORDER BY id"),
                {"c": campaign["id"]},
            )
        ).all()
    assert len(rows) == 7
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [r["code"] for r in manifest] == [row.code for row in rows]
    expected_names = []
    for row, entry in zip(rows, manifest, strict=True):
        assert entry["short_url"] == f"https://go.example.com/s/{row.code}"
        assert entry["kind"] == row.kind
        assert entry["store"] == ""
        label = row.label or ""
        assert entry["label"] == ("'" + label if label.startswith("=") else label)
        if row.kind == "nfc":
            # The message to write: one URI record of the short URL (decoded by ndeflib).
            assert entry["file"] == ""
            records = list(ndef.message_decoder(bytes.fromhex(entry["ndef_hex"])))
            assert [(r.type, r.iri) for r in records] == [("urn:nfc:wkt:U", entry["short_url"])]
            assert entry["ndef_hex"] == entry["ndef_hex"].upper()
            continue
        # QR tags have no NDEF message; an NTAG 424 DNA is personalised from /sdm instead.
        assert entry["ndef_hex"] == ""
        if row.kind == "nfc_sun":
            assert entry["file"] == ""
            continue
        expected_names.append(entry["file"])
        assert entry["file"].endswith(f"_{row.code}.{fmt}")
        assert entry["file"].startswith("nostore_")
        barcode = decode_artwork(fmt, archive.read(entry["file"]))
        assert barcode.text == f"https://GO.EXAMPLE.COM/S/{row.code}"
    assert sorted(archive.namelist()) == sorted([*expected_names, "manifest.csv"])
    assert expected_names[0].startswith("nostore_window-1_")
    assert expected_names[1].startswith("nostore_etc-passwd_")
    assert expected_names[2].startswith("nostore_Vitrine-ete_")
    assert expected_names[3].startswith("nostore__")
    for name in archive.namelist():
        assert "/" not in name and "\\" not in name and not name.startswith(".")


async def test_print_zip_names_the_store_by_number_else_by_name(
    client: httpx.AsyncClient, org: Org
) -> None:
    """A tag at a store is filed under the store's external id, or its name when the
    store has none (``external_id`` is optional); only a tag with no store is ``nostore``."""
    campaign = await make_campaign(client, org, destination_url=DESTINATION)
    numbered = (await make_stores(client, org, 1))[0]
    unnumbered = await client.post(
        "/v1/locations",
        json={"name": "Gare de Lyon", "point": {"type": "Point", "coordinates": [2.37, 48.84]}},
        headers=org.headers,
    )
    assert unnumbered.status_code == 201, unnumbered.text
    at_numbered = await make_tag(client, org, campaign["id"], label="door")
    at_unnumbered = await make_tag(client, org, campaign["id"], label="hall")
    nowhere = await make_tag(client, org, campaign["id"], label="flyer")
    for tag, location in ((at_numbered, numbered), (at_unnumbered, unnumbered.json())):
        patched = await client.patch(
            f"/v1/tags/{tag['id']}", json={"location_id": location["id"]}, headers=org.headers
        )
        assert patched.status_code == 200, patched.text
    response = await client.get(f"/v1/campaigns/{campaign['id']}/print.zip", headers=org.headers)
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    manifest = {
        r["code"]: r for r in csv.DictReader(io.StringIO(archive.read("manifest.csv").decode()))
    }
    assert manifest[at_numbered["code"]]["store"] == "S-001"
    assert manifest[at_numbered["code"]]["file"] == f"S-001_door_{at_numbered['code']}.png"
    assert manifest[at_unnumbered["code"]]["store"] == "Gare de Lyon"
    assert manifest[at_unnumbered["code"]]["file"] == (
        f"Gare-de-Lyon_hall_{at_unnumbered['code']}.png"
    )
    assert manifest[nowhere["code"]]["store"] == ""
    assert manifest[nowhere["code"]]["file"] == f"nostore_flyer_{nowhere['code']}.png"


async def test_print_zip_errors(client: httpx.AsyncClient, org: Org, other_org: Org) -> None:
    campaign = await make_campaign(client, org, destination_url=DESTINATION)
    url = f"/v1/campaigns/{campaign['id']}/print.zip"
    assert (await client.get(url, headers=other_org.headers)).json()["code"] == (
        "campaign_not_found"
    )
    bad = await client.get(url, params={"format": "gif"}, headers=org.headers)
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    small = await client.get(url, params={"size_mm": 5}, headers=org.headers)
    assert small.status_code == 422 and small.json()["code"] == "too_small_to_scan"
    empty = await client.get(url, headers=org.headers)
    assert empty.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(empty.content)).namelist() == ["manifest.csv"]


@pytest.fixture
def digits_origin_app(app: FastAPI) -> Iterator[FastAPI]:
    """The app with a short-link origin under which a code of digits gets a smaller QR
    symbol than a code of letters at ECC H (version 3, 37 modules with the quiet zone,
    against version 4, 41 modules): the digits go in numeric mode."""
    before = app.state.settings
    app.state.settings = before.model_copy(update={"base_url": "http://127.0.0.1:8794"})
    yield app
    app.state.settings = before


async def test_exports_check_the_size_against_the_largest_code(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, digits_origin_app: FastAPI
) -> None:
    # The size checks of print.zip and sheets.pdf used to take a code of digits as the
    # sample, whose symbol is the smallest: at ecc=H, 14.8 mm passed (37 modules of
    # 0.4 mm) and every code of letters (41 modules) came out with 0.36 mm modules,
    # which GET /v1/tags/{id}/qr refuses for the same tag.
    campaign = await make_campaign(client, org, destination_url=DESTINATION)
    tag = await make_tag(client, org, campaign["id"])
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE tags SET code = 'ZZZZZZZZ' WHERE id = :id"), {"id": tag["id"]}
        )
    one = await client.get(
        f"/v1/tags/{tag['id']}/qr",
        params={"ecc": "H", "size_mm": 14.8, "format": "svg"},
        headers=org.headers,
    )
    assert one.status_code == 422 and one.json()["min_size_mm"] == 16.4
    export = await client.get(
        f"/v1/campaigns/{campaign['id']}/print.zip",
        params={"ecc": "H", "size_mm": 14.8, "format": "svg"},
        headers=org.headers,
    )
    assert export.status_code == 422, export.headers
    assert export.json()["code"] == "too_small_to_scan"
    assert export.json()["min_size_mm"] == 16.4
    fits = await client.get(
        f"/v1/campaigns/{campaign['id']}/print.zip",
        params={"ecc": "H", "size_mm": 16.4, "format": "svg"},
        headers=org.headers,
    )
    assert fits.status_code == 200
    sheet = await client.get(
        f"/v1/campaigns/{campaign['id']}/sheets.pdf",
        params={"ecc": "H", "layout": "9x4"},  # about 15.7 mm per code on A4
        headers=org.headers,
    )
    assert sheet.status_code == 422, sheet.headers
    assert sheet.json()["code"] == "too_small_to_scan"
    assert sheet.json()["min_size_mm"] == 16.4


# --- sheets.pdf -----------------------------------------------------------------------


async def test_label_sheets(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org, destination_url=DESTINATION)
    tags = [await make_tag(client, org, campaign["id"], label=f"Store {i}") for i in range(7)]
    await make_tag(client, org, campaign["id"], kind="nfc")
    response = await client.get(
        f"/v1/campaigns/{campaign['id']}/sheets.pdf",
        params={"paper": "A4", "layout": "2x3"},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    document = pypdfium2.PdfDocument(response.content)
    assert len(document) == 2  # 7 QR labels, 6 per page
    assert document[0].get_size() == pytest.approx((595.28, 841.89), abs=0.01)
    decoded: set[str] = set()
    texts = ""
    for page in range(2):
        image = PIL.Image.open(io.BytesIO(pdf_page_png(response.content, scale=3, page=page)))
        decoded |= {b.text for b in zxingcpp.read_barcodes(image)}
        texts += document[page].get_textpage().get_text_range()
    assert decoded == {tag["qr_content"] for tag in tags}
    for tag in tags:
        assert f"go.example.com/s/{tag['code']}" in texts
        assert tag["label"] in texts

    letter = await client.get(
        f"/v1/campaigns/{campaign['id']}/sheets.pdf",
        params={"paper": "Letter", "caption": "Scan me!"},
        headers=org.headers,
    )
    document = pypdfium2.PdfDocument(letter.content)
    assert len(document) == 1  # 3x8 = 24 a page
    assert document[0].get_size() == pytest.approx((612, 792), abs=0.01)
    assert document[0].get_textpage().get_text_range().count("Scan me!") == 7


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"layout": "10x20"}, "too_small_to_scan"),
        ({"layout": "3by8"}, "validation_error"),
        ({"layout": "11x2"}, "validation_error"),
        ({"paper": "A3"}, "validation_error"),
        ({"caption": "tab\there"}, "validation_error"),
    ],
)
async def test_bad_sheet_parameters(
    client: httpx.AsyncClient, org: Org, params: dict[str, str], code: str
) -> None:
    campaign = await make_campaign(client, org, destination_url=DESTINATION)
    await make_tag(client, org, campaign["id"])
    response = await client.get(
        f"/v1/campaigns/{campaign['id']}/sheets.pdf", params=params, headers=org.headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    if code == "too_small_to_scan":
        assert response.json()["min_size_mm"] == 13.2


# --- bounded, fair rendering without open transactions ----------------------------


async def _until(condition: Any) -> None:
    for _ in range(6000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


async def _idle_in_transaction(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND state = 'idle in transaction'"
            )
        )
    return int(count or 0)


async def test_renders_are_bounded_fair_and_hold_no_transaction(
    client: httpx.AsyncClient,
    org: Org,
    other_org: Org,
    app: FastAPI,
    engine: AsyncEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Organization A floods the renderer with large renders; B's render and B's plain
    API call still complete, B's render before A's backlog, no connection sits idle in
    a transaction meanwhile, and A's renders past its queue bound get 503 with
    Retry-After. One worker, held by a gate job until everything is queued: the order
    is decided by the scheduler, not by timings."""
    pool = RenderPool(workers=1, queue_per_owner=4, queue_total=16)
    # State keeps attributes in its _state dict; setitem restores it exactly (setattr on
    # State is undone by a delete with pytest >= 9.2).
    monkeypatch.setitem(app.state._state, "render_pool", pool)
    tag_a = await new_tag(client, org)
    tag_b = await new_tag(client, other_org)
    gate = str(tmp_path / "open")
    finished: list[str] = []

    async def render(who: Org, tag: dict[str, Any], name: str) -> httpx.Response:
        response = await client.get(
            f"/v1/tags/{tag['id']}/qr",
            # 400 mm at 300 dpi: 4724 x 4724 pixels, the large end of PNG renders.
            params={"size_mm": 400, "dpi": 300, "caption": name},
            headers=who.headers,
        )
        finished.append(name)
        return response

    try:
        blocker = asyncio.create_task(pool.run("gate", wait_for_file, gate))
        await _until(lambda: pool.running == 1)
        flood = [asyncio.create_task(render(org, tag_a, f"A{i}")) for i in range(12)]
        # Four wait in A's queue; the eight others are refused at once.
        await _until(lambda: pool.waiting(org.id) == 4 and len(finished) == 8)
        refused = [task.result() for task in flood if task.done()]
        assert len(refused) == 8
        for response in refused:
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "render_busy"
            assert int(response.headers["retry-after"]) >= 1
        # No request holds a transaction while its render waits.
        assert await _idle_in_transaction(engine) == 0
        # B's plain API call is answered while A's renders wait.
        listing = await client.get("/v1/campaigns", headers=other_org.headers)
        assert listing.status_code == 200
        b_render = asyncio.create_task(render(other_org, tag_b, "B"))
        await _until(lambda: pool.waiting(other_org.id) == 1)
        assert await _idle_in_transaction(engine) == 0
        Path(gate).touch()
        await blocker
        responses = await asyncio.gather(*flood, b_render)
    finally:
        Path(gate).touch()
        await asyncio.to_thread(pool.shutdown)
    accepted = [r for r in responses if r.status_code == 200]
    assert len(accepted) == 5  # A's four queued renders and B's
    # Eight refusals first; then round-robin: one of A's renders, then B's, then the
    # rest of A's backlog (B did not wait behind it).
    assert finished.index("B") == 9, finished
    assert decode_artwork("png", responses[-1].content).text == tag_b["qr_content"]
