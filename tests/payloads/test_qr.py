"""QR rendering: segmentation, versions, decodability (zxing-cpp), parameters, ETags."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import threading
import time
from typing import Any

import cairosvg
import PIL.Image
import pytest
import qrcode.constants
import qrcode.util
import zxingcpp

from campaigns.errors import InvalidInput
from campaigns.payloads import qr
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
    rendered = qr.render_qr_sync(content, fmt="png", size=64, ecc="M", border=4)
    assert rendered.version == version
    # Independent check on the symbol itself: modules a side, and the decoder's view.
    modules = 17 + 4 * version + 2 * 4
    assert rendered.width % modules == 0
    barcode = decode_png(rendered.content)
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
@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_every_ecc_level_decodes(ecc: qr.EccLevel, fmt: qr.QrFormat) -> None:
    rendered = qr.render_qr_sync(UPPER, fmt=fmt, ecc=ecc)
    barcode = decode_png(rendered.content) if fmt == "png" else decode_svg(rendered.content)
    assert barcode.text == UPPER
    assert barcode.ec_level == ecc


def test_versions_grow_with_ecc() -> None:
    versions = [qr.qr_version(UPPER, ecc=level) for level in ("L", "M", "Q", "H")]
    assert versions == sorted(versions)
    assert versions[1] == 2


@pytest.mark.parametrize(("size", "border"), [(64, 4), (512, 4), (1000, 20), (4096, 7)])
def test_png_size_and_quiet_zone(size: int, border: int) -> None:
    rendered = qr.render_qr_sync(UPPER, fmt="png", size=size, border=border)
    assert rendered.media_type == "image/png"
    assert rendered.content.startswith(b"\x89PNG\r\n\x1a\n")
    image = PIL.Image.open(io.BytesIO(rendered.content))
    modules = 17 + 4 * rendered.version + 2 * border
    assert image.size == (rendered.width, rendered.width)
    assert size <= rendered.width < size + modules
    assert rendered.width % modules == 0
    box = rendered.width // modules
    grey = image.convert("L")
    quiet = border * box
    # The quiet zone is all light on every side (ISO/IEC 18004 §6.3.8) ...
    for x0, y0, x1, y1 in (
        (0, 0, rendered.width, quiet),
        (0, rendered.width - quiet, rendered.width, rendered.width),
        (0, 0, quiet, rendered.width),
        (rendered.width - quiet, 0, rendered.width, rendered.width),
    ):
        assert grey.crop((x0, y0, x1, y1)).getextrema() == (255, 255)
    # ... and the finder pattern starts right after it.
    assert grey.getpixel((quiet, quiet)) == 0
    assert decode_png(rendered.content).text == UPPER


def test_svg_shape() -> None:
    rendered = qr.render_qr_sync(UPPER, fmt="svg", border=4)
    assert rendered.media_type == "image/svg+xml"
    text = rendered.content.decode()
    modules = 17 + 4 * rendered.version + 2 * 4
    assert rendered.width == modules
    assert f'width="{modules}mm"' in text
    assert f'viewBox="0 0 {modules} {modules}"' in text
    assert '<rect fill="white"' in text
    assert "<script" not in text
    assert decode_svg(rendered.content).text == UPPER
    # size does not change a vector image
    assert qr.render_qr_sync(UPPER, fmt="svg", size=4000).content == rendered.content


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"border": 3}, "border"),
        ({"border": 21}, "border"),
        ({"size": 63}, "size"),
        ({"size": 4097}, "size"),
        ({"ecc": "X"}, "ecc"),
        ({"fmt": "gif"}, "format"),
    ],
)
def test_bad_parameters(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        qr.render_qr_sync(UPPER, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == 422
    assert info.value.code == "validation_error"
    assert info.value.errors is not None
    assert [e["loc"] for e in info.value.errors] == [[field]]


def test_content_too_long() -> None:
    with pytest.raises(InvalidInput) as info:
        qr.render_qr_sync("é" * 3000, fmt="svg", ecc="H")
    assert info.value.code == "qr_content_too_long"


async def test_concurrent_renders_are_correct() -> None:
    """Renders run off the loop and one at a time: concurrent requests of different
    contents and levels all give the bytes a lone render gives."""
    jobs = [
        (content, ecc)
        for content in (UPPER, LOWER, "https://X.CO/S/0123ABCD")
        for ecc in ("L", "M", "Q", "H")
    ]
    results = await asyncio.gather(
        *(qr.render_qr(content, fmt="png", size=300, ecc=ecc) for content, ecc in jobs)  # type: ignore[arg-type]
    )
    for (content, ecc), rendered in zip(jobs, results, strict=True):
        expected = qr.render_qr_sync(content, fmt="png", size=300, ecc=ecc)  # type: ignore[arg-type]
        assert rendered == expected
        assert decode_png(rendered.content).text == content


async def test_renders_run_off_the_loop_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    original = qr.render_qr_sync
    threads: set[str] = set()
    active = 0
    most_active = 0
    guard = threading.Lock()

    def recording(*args: Any, **kwargs: Any) -> qr.RenderedQr:
        nonlocal active, most_active
        with guard:
            active += 1
            most_active = max(most_active, active)
        threads.add(threading.current_thread().name)
        try:
            time.sleep(0.01)  # widen the window an overlap would need
            return original(*args, **kwargs)
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(qr, "render_qr_sync", recording)
    await asyncio.gather(*(qr.render_qr(UPPER, size=64 + i) for i in range(8)))
    assert most_active == 1
    assert threading.current_thread().name not in threads
    assert all(name.startswith("qr-render") for name in threads)


def test_etag() -> None:
    base = {"fmt": "png", "size": 512, "ecc": "M", "border": 4}
    etag = qr.qr_etag(UPPER, **base)  # type: ignore[arg-type]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert qr.qr_etag(UPPER, **base) == etag  # type: ignore[arg-type]
    variants = [
        qr.qr_etag(LOWER, **base),  # type: ignore[arg-type]
        qr.qr_etag(UPPER, **{**base, "fmt": "svg"}),  # type: ignore[arg-type]
        qr.qr_etag(UPPER, **{**base, "size": 513}),  # type: ignore[arg-type]
        qr.qr_etag(UPPER, **{**base, "ecc": "Q"}),  # type: ignore[arg-type]
        qr.qr_etag(UPPER, **{**base, "border": 5}),  # type: ignore[arg-type]
    ]
    assert len({etag, *variants}) == 6
    # A vector image does not depend on size, and neither does its tag.
    svg = {**base, "fmt": "svg"}
    assert qr.qr_etag(UPPER, **svg) == qr.qr_etag(UPPER, **{**svg, "size": 64})  # type: ignore[arg-type]


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
    rendered = qr.render_qr_sync(content, fmt="png", size=1200, ecc="M")
    assert rendered.version <= reference.version
    barcode = decode_png(rendered.content)
    assert barcode.text == content
    assert symbol_version(barcode) == str(rendered.version)
