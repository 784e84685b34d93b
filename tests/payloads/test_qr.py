"""QR encoding: segmentation, versions, decodability (zxing-cpp); the decoding helpers
the other artwork tests share."""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

import cairosvg
import PIL.Image
import pypdfium2
import pytest
import qrcode.constants
import qrcode.util
import zxingcpp

from campaigns.errors import InvalidInput
from campaigns.payloads import artwork, qr
from campaigns.scanning.links import qr_url

UPPER = "https://GO.EXAMPLE.COM/S/7K3QX9TB"
LOWER = "https://go.example.com/s/7k3qx9tb"


def decode_png(data: bytes) -> zxingcpp.Barcode:
    image = PIL.Image.open(io.BytesIO(data))
    barcodes = zxingcpp.read_barcodes(image)
    assert len(barcodes) == 1, barcodes
    assert barcodes[0].format == zxingcpp.BarcodeFormat.QRCode
    return barcodes[0]


def decode_svg(data: bytes) -> zxingcpp.Barcode:
    return decode_png(cairosvg.svg2png(bytestring=data, output_width=600))


def pdf_page_png(data: bytes, *, scale: float = 4.0, page: int = 0) -> bytes:
    """A page of a PDF rasterised (pypdfium2, no system package), as PNG bytes."""
    document = pypdfium2.PdfDocument(data)
    image = document[page].render(scale=scale).to_pil()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_pdf(data: bytes) -> zxingcpp.Barcode:
    return decode_png(pdf_page_png(data))


def decode_artwork(fmt: str, data: bytes) -> zxingcpp.Barcode:
    """Decode PNG, SVG (cairosvg) or PDF (pypdfium2) artwork with zxing-cpp."""
    return {"png": decode_png, "svg": decode_svg, "pdf": decode_pdf}[fmt](data)


def render(content: str, image: Any = None, **style: Any) -> bytes:
    """Check and render ``content`` in the given style (keyword arguments of Style),
    with ``image`` as the logo."""
    checked = artwork.check_style(content, artwork.Style(**style))
    return artwork.render_artwork(content, checked, image)


def symbol_version(barcode: zxingcpp.Barcode) -> str:
    """The QR version the decoder read from the symbol (zxing-cpp ``extra``)."""
    extra = barcode.extra
    assert isinstance(extra, dict)
    return str(extra["Version"])


def test_qr_url_is_the_tested_content() -> None:
    assert qr_url("https://go.example.com", "7K3QX9TB") == UPPER


def test_upper_case_url_is_mostly_alphanumeric() -> None:
    segments = [(s.mode, s.data) for s in qr.optimal_segments(UPPER, 1)]
    # "https" in byte mode (lower-case letters), everything from "://" alphanumeric:
    # 52 + 167 = 219 bits, which fits version 2-M (224 data bits), whereas byte mode
    # for the whole "https://" would need 76 + 151 = 227.
    assert segments == [
        (qrcode.util.MODE_8BIT_BYTE, b"https"),
        (qrcode.util.MODE_ALPHA_NUM, b"://GO.EXAMPLE.COM/S/7K3QX9TB"),
    ]


@pytest.mark.parametrize(("content", "version"), [(UPPER, 2), (LOWER, 3)])
def test_versions_at_ecc_m(content: str, version: int) -> None:
    assert qr.qr_version(content, ecc="M") == version
    matrix = qr.qr_matrix(content, ecc="M")
    assert len(matrix) == 17 + 4 * version
    assert all(len(row) == len(matrix) for row in matrix)
    # Independent check: the decoder's view of the rendered symbol.
    barcode = decode_png(render(content, size=64))
    assert barcode.text == content
    assert symbol_version(barcode) == str(version)
    assert barcode.ec_level == "M"


def test_short_origin_still_uses_alphanumeric_mode() -> None:
    # qrcode's add_data only splits out alphanumeric runs of 20+ characters.
    content = "https://X.CO/S/7K3QX9TB"
    modes = [s.mode for s in qr.optimal_segments(content, 1)]
    assert modes == [qrcode.util.MODE_8BIT_BYTE, qrcode.util.MODE_ALPHA_NUM]


def _bits(segments: list[tuple[int, bytes]], version: int) -> int:
    total = 0
    for mode, data in segments:
        total += 4 + qrcode.util.length_in_bits(mode, version)
        n = len(data)
        if mode == qrcode.util.MODE_NUMBER:
            total += 10 * (n // 3) + {0: 0, 1: 4, 2: 7}[n % 3]
        elif mode == qrcode.util.MODE_ALPHA_NUM:
            total += 11 * (n // 2) + 6 * (n % 2)
        else:
            total += 8 * n
    return total


def _brute_force_bits(data: str, version: int) -> int:
    """The fewest bits over every assignment of a legal mode to each character."""
    allowed = []
    for char in data:
        modes = [qrcode.util.MODE_8BIT_BYTE]
        if char in qrcode.util.ALPHA_NUM.decode():
            modes.append(qrcode.util.MODE_ALPHA_NUM)
        if char.isdigit():
            modes.append(qrcode.util.MODE_NUMBER)
        allowed.append(modes)
    best = math.inf
    for assignment in itertools.product(*allowed):
        segments: list[tuple[int, bytes]] = []
        for char, mode in zip(data, assignment, strict=True):
            if segments and segments[-1][0] == mode:
                segments[-1] = (mode, segments[-1][1] + char.encode())
            else:
                segments.append((mode, char.encode()))
        best = min(best, _bits(segments, version))
    return int(best)


@pytest.mark.parametrize("version", [1, 10, 27])
@pytest.mark.parametrize(
    "data",
    ["a1B2:3", "12a3456", "AB1234C", "x:/AB9", "1234567", "ABCDEFG", "https:/", "é12345"],
)
def test_segmentation_is_optimal(data: str, version: int) -> None:
    segments = [(s.mode, bytes(s.data)) for s in qr.optimal_segments(data, version)]
    assert b"".join(d for _, d in segments) == data.encode()
    assert _bits(segments, version) == _brute_force_bits(data, version)


@pytest.mark.parametrize("ecc", ["L", "M", "Q", "H"])
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_every_ecc_level_decodes(ecc: qr.EccLevel, fmt: artwork.Format) -> None:
    barcode = decode_artwork(fmt, render(UPPER, fmt=fmt, ecc=ecc))
    assert barcode.text == UPPER
    assert barcode.ec_level == ecc


def test_versions_grow_with_ecc() -> None:
    versions = [qr.qr_version(UPPER, ecc=level) for level in ("L", "M", "Q", "H")]
    assert versions == sorted(versions)
    assert versions[1] == 2


def test_content_too_long() -> None:
    with pytest.raises(InvalidInput) as info:
        qr.qr_matrix("é" * 3000, ecc="H")
    assert info.value.code == "qr_content_too_long"
    with pytest.raises(InvalidInput) as info:
        artwork.check_style("é" * 3000, artwork.Style(fmt="svg", size_mm=100, ecc="H"))
    assert info.value.code == "qr_content_too_long"


@pytest.mark.parametrize(
    "content",
    [
        UPPER,
        LOWER,
        "https://X.CO/S/7K3QX9TB",
        "https://GO.EXAMPLE.COM/S/" + "7K3QX9TB" * 30 + "?q=abc",
        "0123456789" * 40 + "https://example.com/" + "ABCDEFGH" * 60,
    ],
)
def test_never_larger_than_qrcode_default_and_decodes(content: str) -> None:
    reference = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
    reference.add_data(content)
    reference.make()
    version = qr.qr_version(content, ecc="M")
    assert version <= reference.version
    barcode = decode_png(render(content, size=1200, ecc="M"))
    assert barcode.text == content
    assert symbol_version(barcode) == str(version)
