"""Print artwork: every format and variant decodes back to the content (zxing-cpp after
rasterising SVG with cairosvg and PDF with pypdfium2); sizes, colours, logo geometry,
captions, validation; logo upload validation."""

from __future__ import annotations

import io
import re
from typing import Any

import PIL.Image
import PIL.ImageDraw
import pypdfium2
import pytest

from campaigns.errors import InvalidInput
from campaigns.payloads import artwork, qr
from campaigns.payloads.logo import MAX_LOGO_BYTES, Logo, validate_logo
from tests.fixtures.artwork import (
    SVG_LOGO,
    UPPER,
    decode_artwork,
    decode_png,
    pdf_page_png,
    png_bomb,
    png_logo,
    render,
)

FORMATS = ("png", "svg", "pdf")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "style",
    [
        {},
        {"size_mm": 30},
        {"fg": "#1A237E", "bg": "FFF8E1"},
        {"caption": "Boulangerie Dupont — Scan me <&>"},
        {"size_mm": 13.2},  # the smallest allowed for 33 modules (0.4 mm each)
        {"fg": "FFFFFF", "bg": "000000", "allow_inverted": True},
    ],
)
def test_variants_decode(fmt: str, style: dict[str, Any]) -> None:
    data = render(UPPER, fmt=fmt, **style)
    assert decode_artwork(fmt, data).text == UPPER


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "logo", [png_logo(), png_logo(600, 200), SVG_LOGO], ids=["png", "wide", "svg"]
)
def test_logo_at_maximum_size_decodes(fmt: str, logo: Logo) -> None:
    data = render(UPPER, logo, fmt=fmt, logo=True, size_mm=40, caption="Scan me")
    barcode = decode_artwork(fmt, data)
    assert barcode.text == UPPER
    assert barcode.ec_level == "H"


def test_logo_area_geometry() -> None:
    for version in (4, 10, 25, 40):
        n = 17 + 4 * version
        for aspect in (1.0, 3.0, 0.25):
            x, y, w, h = artwork.logo_area(n, aspect)
            assert w % 2 == 1 and h % 2 == 1
            assert w * h <= 0.20 * n * n
            # Centred, and clear of the finder patterns, separators and format
            # information (the 9 modules along every corner).
            assert x + w // 2 == n // 2 and y + h // 2 == n // 2
            assert x >= 9 and y >= 9 and x + w <= n - 9 and y + h <= n - 9
    # The square area of a version 4 symbol (33 modules) is 13 x 13 (15.5 % of 1089).
    assert artwork.logo_area(33, 1.0) == (10, 10, 13, 13)


def test_logo_clear_area_and_quiet_zone_in_png() -> None:
    # Version 4 at H: 33 modules + 2 x 4 of quiet zone = 41, 10 px each at size 410.
    border = 4
    data = render(UPPER, png_logo(), size=410, logo=True, border=border)
    image = PIL.Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (410, 410)
    box = 10
    quiet = border * box
    # Quiet zone untouched.
    for region in ((0, 0, 410, quiet), (0, 410 - quiet, 410, 410), (0, 0, quiet, 410)):
        assert image.crop(region).getextrema() == ((255, 255), (255, 255), (255, 255))
    # Finder patterns intact: the 7x7 dark ring's corner modules.
    for mx, my in ((0, 0), (6, 0), (0, 6), (26, 0), (0, 26)):
        assert image.getpixel((quiet + mx * box + 5, quiet + my * box + 5)) == (0, 0, 0)
    # The logo's clear area (13 x 13 modules from module 10) has no black module.
    x0 = quiet + 10 * box
    clear = image.crop((x0, x0, x0 + 13 * box, x0 + 13 * box))
    assert (0, 0, 0) not in {colour for _, colour in clear.getcolors(100_000) or []}
    assert (200, 20, 20) in {colour for _, colour in clear.getcolors(100_000) or []}
    assert decode_png(data).text == UPPER


def test_png_size_from_millimetres() -> None:
    data = render(UPPER, size_mm=50.8, dpi=600)
    image = PIL.Image.open(io.BytesIO(data))
    assert image.size == (1200, 1200)  # 2 inches at 600 dpi
    assert image.info["dpi"] == pytest.approx((600, 600), abs=0.01)
    with_caption = PIL.Image.open(io.BytesIO(render(UPPER, size_mm=50.8, dpi=600, caption="Hi")))
    assert with_caption.width == 1200 and with_caption.height > 1200


def test_legacy_png_size_is_whole_pixels_per_module() -> None:
    image = PIL.Image.open(io.BytesIO(render(UPPER, size=1000, border=10)))
    modules = 25 + 20
    assert image.width == image.height and image.width % modules == 0
    assert 1000 <= image.width < 1000 + modules


def test_svg_physical_size_and_escaped_caption() -> None:
    text = render(UPPER, fmt="svg", size_mm=40, caption='Café <b>"&"</b>').decode()
    assert 'width="40mm"' in text
    assert re.search(r'height="4\d\.\d+mm"', text)  # the caption band adds height
    assert 'viewBox="0 0 33 ' in text
    assert 'Café &lt;b&gt;"&amp;"&lt;/b&gt;' in text
    assert "<b>" not in text and "<script" not in text
    # Without size_mm: one module per millimetre, as before.
    assert 'width="33mm" height="33mm"' in render(UPPER, fmt="svg").decode()


def test_pdf_page_is_the_printed_size() -> None:
    document = pypdfium2.PdfDocument(render(UPPER, fmt="pdf", size_mm=25.4))
    width, height = document[0].get_size()
    assert width == pytest.approx(72, abs=0.01) and height == pytest.approx(72, abs=0.01)
    assert len(document) == 1


def test_outputs_are_deterministic() -> None:
    for fmt in FORMATS:
        assert render(UPPER, fmt=fmt, caption="x") == render(UPPER, fmt=fmt, caption="x")


def test_dark_rectangles_cover_exactly_the_dark_modules() -> None:
    matrix = qr.qr_matrix(UPPER, ecc="M")
    covered = [[0] * len(matrix) for _ in matrix]
    rects = artwork.dark_rectangles(matrix)
    for x, y, w, h in rects:
        for row in range(y, y + h):
            for column in range(x, x + w):
                covered[row][column] += 1
    assert covered == [[int(cell) for cell in row] for row in matrix]
    dark = sum(map(sum, covered))
    assert len(rects) < dark / 2  # runs are merged


def test_too_small_to_scan_names_the_minimum() -> None:
    with pytest.raises(InvalidInput) as info:
        artwork.check_style(UPPER, artwork.Style(size_mm=13.1))
    assert info.value.code == "too_small_to_scan"
    assert info.value.members == {"min_size_mm": 13.2}  # 33 modules x 0.4 mm
    # With a logo the symbol is version 4 at H: 41 modules, 16.4 mm.
    with pytest.raises(InvalidInput) as info:
        artwork.check_style(UPPER, artwork.Style(size_mm=16, logo=True))
    assert info.value.members == {"min_size_mm": 16.4}
    assert decode_png(render(UPPER, png_logo(), size_mm=16.4, logo=True, dpi=600)).text == UPPER


@pytest.mark.parametrize(
    ("fg", "bg", "code"),
    [
        ("777777", "FFFFFF", "low_contrast"),  # 4.48:1 passes; 888888 on white is 3.54:1
        ("888888", "FFFFFF", "low_contrast"),
        ("FFFF00", "FFFFFF", "low_contrast"),
        ("FFFFFF", "000000", "inverted_colours"),
        ("EEEEEE", "202020", "inverted_colours"),
    ],
)
def test_colour_rules(fg: str, bg: str, code: str) -> None:
    style = artwork.Style(fg=fg, bg=bg)
    if fg == "777777":
        assert artwork.contrast_ratio(fg, bg) == pytest.approx(4.48, abs=0.01)
        artwork.check_style(UPPER, style)
        return
    with pytest.raises(InvalidInput) as info:
        artwork.check_style(UPPER, style)
    assert info.value.code == code


def test_contrast_ratio_reference_values() -> None:
    assert artwork.contrast_ratio("000000", "FFFFFF") == pytest.approx(21.0)
    assert artwork.contrast_ratio("FFFFFF", "FFFFFF") == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("style", "field"),
    [
        ({"size_mm": 0}, "size_mm"),
        ({"size_mm": -5}, "size_mm"),
        ({"size_mm": 2001}, "size_mm"),
        ({"dpi": 71}, "dpi"),
        ({"dpi": 2401}, "dpi"),
        ({"size_mm": 1000, "dpi": 300}, "dpi"),  # 11811 px: over the PNG pixel cap
        ({"fg": "12345"}, "fg"),
        ({"bg": "#GGGGGG"}, "bg"),
        ({"fmt": "gif"}, "format"),
        ({"size": 100, "size_mm": 30}, "size"),
        ({"caption": "x" * 61}, "caption"),
        ({"caption": "bell\x07"}, "caption"),
        ({"border": 3}, "border"),
    ],
)
def test_bad_parameters(style: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        artwork.check_style(UPPER, artwork.Style(**style))
    assert info.value.code == "validation_error"
    assert [e["loc"] for e in info.value.errors or []] == [[field]]


def test_etag_follows_the_output() -> None:
    base = artwork.check_style(UPPER, artwork.Style())
    etag = artwork.artwork_etag(UPPER, base, None)
    assert etag.startswith('"') and etag.endswith('"') and len(etag) == 34
    others = [
        artwork.artwork_etag(UPPER.replace("7K3", "7K4"), base, None),
        artwork.artwork_etag(UPPER, base, "ab" * 32),
        *(
            artwork.artwork_etag(UPPER, artwork.check_style(UPPER, artwork.Style(**kw)), None)
            for kw in (
                {"fmt": "svg"},
                {"fmt": "pdf"},
                {"size": 600},
                {"fg": "111111"},
                {"caption": "x"},
                {"ecc": "H"},
                {"size_mm": 40},
            )
        ),
    ]
    assert len({etag, *others}) == 1 + len(others)
    # Parameters a format ignores do not change its tag: dpi for SVG, colour spelling.
    svg = artwork.check_style(UPPER, artwork.Style(fmt="svg", size_mm=40, dpi=600))
    same = artwork.check_style(UPPER, artwork.Style(fmt="svg", size_mm=40, dpi=300))
    assert artwork.artwork_etag(UPPER, svg, None) == artwork.artwork_etag(UPPER, same, None)
    lower = artwork.check_style(UPPER, artwork.Style(fg="#1a237e"))
    upper = artwork.check_style(UPPER, artwork.Style(fg="1A237E"))
    assert lower == upper

    # --- logo validation ------------------------------------------------------------------


def test_valid_logos_give_their_aspect() -> None:
    assert validate_logo(png_logo(600, 200)) == pytest.approx(3.0)
    assert validate_logo(SVG_LOGO) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "logo",
    [
        Logo("image/png", b"GIF89a not a png"),
        Logo("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50),
        Logo("image/png", png_bomb(60_000, 60_000)),
        Logo("image/png", png_bomb(2049, 2049)),
        Logo("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (MAX_LOGO_BYTES + 1)),
        Logo("image/png", b""),
        Logo("image/svg+xml", b"not xml at all"),
        Logo("image/svg+xml", b"<html><body>hi</body></html>"),
        Logo(
            "image/svg+xml",
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        ),
        Logo("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
        Logo(
            "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><rect onclick="x()"/></svg>'
        ),
        Logo(
            "image/svg+xml",
            b'<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><p>x</p></foreignObject></svg>',
        ),
        Logo(
            "image/svg+xml",
            b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
            b'<image xlink:href="http://evil.example/x.png" width="9" height="9"/></svg>',
        ),
        Logo(
            "image/svg+xml",
            b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>',
        ),
        Logo(
            "image/svg+xml",
            b'<svg xmlns="http://www.w3.org/2000/svg"><rect fill="url(https://e.x/p#g)"/></svg>',
        ),
        Logo(
            "image/svg+xml",
            b'<svg xmlns="http://www.w3.org/2000/svg"><style>@import url(https://e.x/s.css);</style></svg>',
        ),
        Logo(
            "image/svg+xml",
            b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">]>'
            b'<svg xmlns="http://www.w3.org/2000/svg"><text>&a;</text></svg>',
        ),
        Logo(
            "image/svg+xml",
            b'<svg xmlns="http://www.w3.org/2000/svg"><g id="a"><rect width="1" height="1"/></g>'
            b'<g id="b"><use href="#a"/><use href="#a"/></g><use href="#b"/></svg>',
        ),
        Logo("image/gif", b"GIF89a"),
    ],
    ids=[
        "png-not-an-image",
        "png-garbage",
        "png-bomb",
        "png-just-over-pixel-cap",
        "png-over-byte-cap",
        "png-empty",
        "svg-not-xml",
        "svg-not-svg",
        "svg-script",
        "svg-onload",
        "svg-onclick",
        "svg-foreign-object",
        "svg-http-href",
        "svg-file-href",
        "svg-css-url",
        "svg-import",
        "svg-entity",
        "svg-nested-use",
        "gif",
    ],
)
def test_bad_logos_are_invalid_logo(logo: Logo) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_logo(logo)
    assert info.value.code == "invalid_logo"
    assert info.value.status == 422


def test_svg_logo_with_data_image_and_internal_use_is_accepted() -> None:
    inner = png_logo(20, 20).content
    import base64

    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        b'viewBox="0 0 40 20"><defs><rect id="r" width="10" height="10" fill="url(#g)"/>'
        b'<linearGradient id="g"><stop offset="0" stop-color="#000"/></linearGradient></defs>'
        b'<use xlink:href="#r"/><use href="#r" x="10"/>'
        b'<image x="20" width="20" height="20" href="data:image/png;base64,'
        + base64.b64encode(inner)
        + b'"/></svg>'
    )
    assert validate_logo(Logo("image/svg+xml", svg)) == pytest.approx(2.0)


def test_pdf_render_of_a_logo_code_is_visible() -> None:
    """The PDF's logo is really drawn (red pixels in the centre of the page)."""
    data = render(UPPER, png_logo(), fmt="pdf", logo=True, size_mm=40)
    page = PIL.Image.open(io.BytesIO(pdf_page_png(data, scale=2))).convert("RGB")
    centre = page.getpixel((page.width // 2, page.width // 2))
    assert centre[0] > 150 and centre[1] < 80 and centre[2] < 80
