"""``GET /v1/tags/{id}/qr``: the image decodes to the tag's ``qr_content``, which scans
through the app to the campaign's destination; validation, isolation, caching."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import PIL.Image
import pytest
import zxingcpp
from fastapi import FastAPI

from campaigns.payloads import artwork
from campaigns.payloads import qr as payload
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.artwork import decode_artwork, decode_svg, symbol_version
from tests.fixtures.artwork import decode_png as decode

DESTINATION = "https://shop.example.com/summer"


async def new_tag(client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    campaign = await make_campaign(client, org, destination_url=DESTINATION)
    return await make_tag(client, org, campaign["id"])


async def assert_scans_to_destination(client: httpx.AsyncClient, decoded: str) -> None:
    """Follow the decoded URL's path through the app, as a phone would."""
    parts = urlsplit(decoded)
    assert parts.scheme == "https"
    assert parts.netloc.lower() == "go.example.com"
    # The lower-case form works (tag known to the scan path); then the printed form.
    lower = await client.get(parts.path.lower())
    assert lower.status_code == 302, lower.text
    response = await client.get(parts.path)
    assert response.status_code == 302, f"GET {parts.path}: {response.status_code}"
    location = response.headers["location"]
    assert location.startswith(DESTINATION + "?")
    assert parse_qs(urlsplit(location).query)["pcid"][0]


async def test_png_decodes_to_qr_content_and_scans(client: httpx.AsyncClient, org: Org) -> None:
    tag = await new_tag(client, org)
    response = await client.get(f"/v1/tags/{tag['id']}/qr", headers=org.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == f'inline; filename="{tag["code"]}.png"'
    assert response.headers["cache-control"].startswith("private, max-age=")
    etag = response.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    image = PIL.Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    assert image.size[0] >= artwork.DEFAULT_SIZE
    barcode = decode(response.content)
    assert barcode.text == tag["qr_content"]
    assert barcode.text == f"https://GO.EXAMPLE.COM/S/{tag['code']}"
    # Version 2 at the default level M: the upper-case URL is mostly alphanumeric.
    assert symbol_version(barcode) == "2"
    assert barcode.ec_level == "M"


async def test_svg_decodes_to_qr_content_and_scans(client: httpx.AsyncClient, org: Org) -> None:
    tag = await new_tag(client, org)
    response = await client.get(
        f"/v1/tags/{tag['id']}/qr", params={"format": "svg"}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["content-disposition"] == f'inline; filename="{tag["code"]}.svg"'
    assert response.content.startswith(b"<?xml")
    barcode = decode_svg(response.content)
    assert barcode.text == tag["qr_content"]


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
async def test_decoded_url_scans_to_the_campaign(
    client: httpx.AsyncClient, org: Org, fmt: str
) -> None:
    """What a phone does: decode the printed symbol, open the URL, land on the campaign's
    destination with a click id. The printed path is upper case (``/S/CODE``, so that the
    symbol is alphanumeric mode), and the app must answer it like ``/s/code``."""
    tag = await new_tag(client, org)
    response = await client.get(
        f"/v1/tags/{tag['id']}/qr", params={"format": fmt}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    decoded = decode_any(response).text
    assert decoded == tag["qr_content"]
    await assert_scans_to_destination(client, decoded)


async def test_upper_case_content_is_denser_than_lower_case(
    client: httpx.AsyncClient, org: Org
) -> None:
    tag = await new_tag(client, org)
    content = tag["qr_content"]
    assert payload.qr_version(content, ecc="M") == 2
    assert payload.qr_version(content.lower(), ecc="M") == 3


@pytest.mark.parametrize("ecc", ["L", "M", "Q", "H"])
async def test_each_ecc_level_decodes(client: httpx.AsyncClient, org: Org, ecc: str) -> None:
    tag = await new_tag(client, org)
    response = await client.get(
        f"/v1/tags/{tag['id']}/qr", params={"ecc": ecc, "size": 256}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    barcode = decode(response.content)
    assert barcode.text == tag["qr_content"]
    assert barcode.ec_level == ecc


async def test_size_and_border(client: httpx.AsyncClient, org: Org) -> None:
    tag = await new_tag(client, org)
    response = await client.get(
        f"/v1/tags/{tag['id']}/qr", params={"size": 1000, "border": 10}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    width, height = PIL.Image.open(io.BytesIO(response.content)).size
    modules = 25 + 2 * 10  # version 2 plus the quiet zone
    assert width == height
    assert width % modules == 0
    assert 1000 <= width < 1000 + modules
    assert decode(response.content).text == tag["qr_content"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"border": 3}, "border"),
        ({"border": 0}, "border"),
        ({"border": 21}, "border"),
        ({"ecc": "X"}, "ecc"),
        ({"ecc": ""}, "ecc"),
        ({"format": "gif"}, "format"),
        ({"size_mm": 0}, "size_mm"),
        ({"size_mm": 2001}, "size_mm"),
        ({"dpi": 71}, "dpi"),
        ({"dpi": 2401}, "dpi"),
        ({"fg": "12345"}, "fg"),
        ({"bg": "#12345G"}, "bg"),
        ({"caption": "x" * 61}, "caption"),
        ({"size": 63}, "size"),
        ({"size": 4097}, "size"),
        ({"size": "big"}, "size"),
    ],
)
async def test_bad_parameters_are_422(
    client: httpx.AsyncClient, org: Org, params: dict[str, Any], field: str
) -> None:
    tag = await new_tag(client, org)
    response = await client.get(f"/v1/tags/{tag['id']}/qr", params=params, headers=org.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["status"] == 422
    assert ["query", field] in [error["loc"] for error in body["errors"]]


async def test_other_organizations_tag_is_404(
    client: httpx.AsyncClient, org: Org, other_org: Org
) -> None:
    tag = await new_tag(client, org)
    response = await client.get(f"/v1/tags/{tag['id']}/qr", headers=other_org.headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "tag_not_found"
    # Even with the right ETag: a 304 would confirm the tag exists.
    own = await client.get(f"/v1/tags/{tag['id']}/qr", headers=org.headers)
    response = await client.get(
        f"/v1/tags/{tag['id']}/qr",
        headers={**other_org.headers, "If-None-Match": own.headers["etag"]},
    )
    assert response.status_code == 404


async def test_unknown_tag_is_404(client: httpx.AsyncClient, org: Org) -> None:
    response = await client.get("/v1/tags/987654/qr", headers=org.headers)
    assert response.status_code == 404
    assert response.json()["code"] == "tag_not_found"


async def test_no_auth_is_401(client: httpx.AsyncClient, org: Org) -> None:
    tag = await new_tag(client, org)
    response = await client.get(f"/v1/tags/{tag['id']}/qr")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    bad = await client.get(
        f"/v1/tags/{tag['id']}/qr", headers={"Authorization": "Bearer psk_not_a_key"}
    )
    assert bad.status_code == 401


async def test_etag_and_304(
    client: httpx.AsyncClient, org: Org, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = await new_tag(client, org)
    url = f"/v1/tags/{tag['id']}/qr"
    first = await client.get(url, headers=org.headers)
    etag = first.headers["etag"]
    again = await client.get(url, headers=org.headers)
    assert again.headers["etag"] == etag
    assert again.content == first.content  # strong: byte-identical

    async def no_render(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("rendered despite a matching If-None-Match")

    monkeypatch.setattr(app.state.render_pool, "run_cached", no_render)
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = await client.get(url, headers={**org.headers, "If-None-Match": if_none_match})
        assert response.status_code == 304, if_none_match
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"].startswith("private, max-age=")
    monkeypatch.undo()

    # Other parameters are another representation: another ETag, full answer.
    for params in (
        {"format": "svg"},
        {"format": "pdf"},
        {"size": 600},
        {"ecc": "H"},
        {"border": 6},
        {"size_mm": 40},
        {"fg": "1A237E"},
        {"caption": "Scan me"},
    ):
        response = await client.get(
            url, params=params, headers={**org.headers, "If-None-Match": etag}
        )
        assert response.status_code == 200, params
        assert response.headers["etag"] != etag
        assert decode_any(response).text == tag["qr_content"]

    stale = await client.get(url, headers={**org.headers, "If-None-Match": '"stale"'})
    assert stale.status_code == 200
    assert stale.content == first.content


def decode_any(response: httpx.Response) -> zxingcpp.Barcode:
    fmt = {"image/svg+xml": "svg", "application/pdf": "pdf"}.get(
        response.headers["content-type"], "png"
    )
    return decode_artwork(fmt, response.content)
