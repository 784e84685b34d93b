"""QR encoding: segmentation, versions, decodability (zxing-cpp); the decoding helpers
the other artwork tests share."""

from __future__ import annotations

import itertools
import math

import pytest
import qrcode.constants
import qrcode.util

from campaigns.errors import InvalidInput
from campaigns.payloads import artwork, qr
from campaigns.scanning.links import qr_url
from tests.fixtures.artwork import (
    LOWER,
    UPPER,
    decode_artwork,
    decode_png,
    render,
    symbol_version,
)


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
