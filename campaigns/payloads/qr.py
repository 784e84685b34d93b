"""QR code encoding of a tag's ``qr_content``: segments, version, module matrix.

Drawing the matrix (PNG, SVG, PDF, colours, logo, caption) is
:mod:`campaigns.payloads.artwork`; running it off the event loop is
:mod:`campaigns.payloads.rendering`.

Symbols follow ISO/IEC 18004:2015 (QR Code bar code symbology specification):

- the data is split into mode segments by :func:`optimal_segments` so that a QR URL
  such as ``https://GO.EXAMPLE.COM/S/7K3QX9TB`` (see
  :func:`campaigns.scanning.links.qr_url`) is mostly alphanumeric (§7.4.4, 5.5 bits
  per character) instead of byte mode (§7.4.5, 8 bits per character): that URL fits
  version 2 (25 x 25 modules) at error correction M, its lower-case form needs
  version 3 (29 x 29);
- the error correction level is one of L, M, Q, H (§7.5.1, about 7, 15, 25 and 30 %
  of codewords recoverable);
- the quiet zone is at least 4 modules wide on every side (§6.3.8), so ``border``
  below :data:`MIN_BORDER` is refused.

``qrcode`` 8.2 is not thread-safe (python-qrcode issue #421: ``bisect`` on the shared
``BIT_LIMIT_TABLE``, and the module-level ``precomputed_qr_blanks`` cache is written
while encoding): every use of it here holds :data:`_QRCODE_LOCK`, and the API renders in
worker processes (one render at a time in each).
"""

from __future__ import annotations

import math
import threading
from typing import Final, Literal, get_args

import qrcode
import qrcode.constants
import qrcode.util

from campaigns.errors import InvalidInput

EccLevel = Literal["L", "M", "Q", "H"]

ECC_LEVELS: Final[tuple[str, ...]] = get_args(EccLevel)
DEFAULT_ECC: Final[EccLevel] = "M"

#: Quiet zone in modules: the minimum of ISO/IEC 18004 §6.3.8 and a generous cap.
MIN_BORDER: Final = 4
MAX_BORDER: Final = 20
DEFAULT_BORDER: Final = 4

_ECC_CONSTANTS: Final[dict[str, int]] = {
    "L": qrcode.constants.ERROR_CORRECT_L,
    "M": qrcode.constants.ERROR_CORRECT_M,
    "Q": qrcode.constants.ERROR_CORRECT_Q,
    "H": qrcode.constants.ERROR_CORRECT_H,
}

_QRCODE_LOCK: Final = threading.Lock()


# --- segmentation ------------------------------------------------------------------

_NUMERIC: Final = frozenset("0123456789")
_ALPHANUMERIC: Final = frozenset(qrcode.util.ALPHA_NUM.decode("ascii"))
_MODES: Final = (
    qrcode.util.MODE_8BIT_BYTE,
    qrcode.util.MODE_ALPHA_NUM,
    qrcode.util.MODE_NUMBER,
)
#: Data bits per character in sixths of a bit: byte 8, alphanumeric 11/2, numeric 10/3
#: (ISO/IEC 18004 §7.4.3-§7.4.5), so that partial groups are costed exactly by rounding
#: up at the end of a segment.
_SIXTHS_PER_CHAR: Final = {
    qrcode.util.MODE_ALPHA_NUM: 33,
    qrcode.util.MODE_NUMBER: 20,
}


def optimal_segments(data: str, version: int) -> list[qrcode.util.QRData]:
    """The shortest split of ``data`` into numeric, alphanumeric and byte segments for
    a symbol of ``version`` (1..40; only its character-count field widths matter:
    versions 1-9, 10-26 and 27-40, ISO/IEC 18004 Table 3).

    Dynamic programming over the characters (after Nayuki's QR segment optimiser):
    for each character and each mode, the cheapest encoding of the prefix that ends in
    that mode, switching costs a 4-bit mode indicator plus the count field. Byte
    segments carry UTF-8. Returns ``[]`` for empty ``data``.

    ``qrcode``'s own ``add_data`` only splits out alphanumeric runs of 20 characters
    or more, so a short origin (``https://X.CO/S/7K3QX9TB``) would be all byte mode.
    """
    if not data:
        return []
    head = {m: (4 + qrcode.util.length_in_bits(m, version)) * 6 for m in _MODES}
    # encoded_in[i][m]: the mode character i is encoded in, on the cheapest encoding of
    # data[: i + 1] that leaves the symbol in mode m (m differs when a new, still empty
    # segment of mode m was opened right after character i).
    encoded_in: list[dict[int, int]] = []
    costs = dict(head)
    for char in data:
        current: dict[int, int] = {}
        modes_of_char: dict[int, int] = {}
        byte_mode = qrcode.util.MODE_8BIT_BYTE
        current[byte_mode] = costs[byte_mode] + len(char.encode("utf-8")) * 8 * 6
        modes_of_char[byte_mode] = byte_mode
        for mode, charset in (
            (qrcode.util.MODE_ALPHA_NUM, _ALPHANUMERIC),
            (qrcode.util.MODE_NUMBER, _NUMERIC),
        ):
            if char in charset:
                current[mode] = costs[mode] + _SIXTHS_PER_CHAR[mode]
                modes_of_char[mode] = mode
        # Close the segment after this character (partial groups round up to whole
        # bits) and open one in another mode.
        closed = {m: math.ceil(c / 6) * 6 for m, c in current.items()}
        for to_mode in _MODES:
            for from_mode, cost in closed.items():
                switched = cost + head[to_mode]
                if to_mode not in current or switched < current[to_mode]:
                    current[to_mode] = switched
                    modes_of_char[to_mode] = from_mode
        encoded_in.append(modes_of_char)
        costs = current
    state = min(_MODES, key=lambda m: costs[m])
    modes: list[int] = [0] * len(data)
    for i in range(len(data) - 1, -1, -1):
        state = encoded_in[i][state]
        modes[i] = state
    return _group(data, modes)


def _group(data: str, modes: list[int]) -> list[qrcode.util.QRData]:
    segments: list[qrcode.util.QRData] = []
    start = 0
    for i in range(1, len(data) + 1):
        if i == len(data) or modes[i] != modes[start]:
            chunk = data[start:i].encode("utf-8")
            segments.append(qrcode.util.QRData(chunk, mode=modes[start], check_data=False))
            start = i
    return segments


# --- encoding and rendering --------------------------------------------------------

#: Character-count field widths change at versions 10 and 27 (ISO/IEC 18004 Table 3).
_VERSION_RANGES: Final = ((1, 9), (10, 26), (27, 40))


def _data_bits(segments: list[qrcode.util.QRData], version: int) -> int:
    """Bits of the segments (mode indicator, count field, data; ISO/IEC 18004 §7.4)."""
    total = 0
    for segment in segments:
        total += 4 + qrcode.util.length_in_bits(segment.mode, version)
        count = len(segment)
        if segment.mode == qrcode.util.MODE_NUMBER:
            total += 10 * (count // 3) + (0, 4, 7)[count % 3]
        elif segment.mode == qrcode.util.MODE_ALPHA_NUM:
            total += 11 * (count // 2) + 6 * (count % 2)
        else:
            total += 8 * count
    return total


def _version_and_segments(content: str, ecc: str) -> tuple[int, list[qrcode.util.QRData]]:
    """The smallest version (1..40) holding the optimal segments of ``content`` at ``ecc``.

    Chosen here rather than by ``QRCode.best_fit``, which in 8.2 raises a bare
    ``ValueError`` ("Invalid version (was 41 ...)") instead of ``DataOverflowError`` when
    nothing fits. Pure arithmetic (no ``qrcode`` state is written), so no lock."""
    level = _ECC_CONSTANTS[ecc]
    for low, high in _VERSION_RANGES:
        segments = optimal_segments(content, low)
        bits = _data_bits(segments, low)
        for version in range(low, high + 1):
            if bits <= qrcode.util.BIT_LIMIT_TABLE[level][version]:
                return version, segments
    raise InvalidInput(
        f"{len(content.encode('utf-8'))} bytes of QR content do not fit a version 40 "
        f"symbol at error correction {ecc}",
        code="qr_content_too_long",
    )


def qr_version(content: str, *, ecc: EccLevel = DEFAULT_ECC) -> int:
    """The QR version (1..40) ``content`` is encoded at with error correction ``ecc``
    (``17 + 4 * version`` modules a side). Raises :class:`InvalidInput`
    (``qr_content_too_long``) past version 40. Cheap: no masking."""
    return _version_and_segments(content, ecc)[0]


def qr_matrix(content: str, *, ecc: EccLevel = DEFAULT_ECC) -> list[list[bool]]:
    """The symbol's modules without quiet zone: ``n`` rows of ``n`` booleans (True is
    dark), ``n = 17 + 4 * version``, row 0 at the top. Data mask chosen by ``qrcode``'s
    penalty rules (ISO/IEC 18004 §7.8.3). Raises :class:`InvalidInput`
    (``qr_content_too_long``). Serialised by :data:`_QRCODE_LOCK` (python-qrcode #421)."""
    version, segments = _version_and_segments(content, ecc)
    with _QRCODE_LOCK:
        qr: qrcode.QRCode[qrcode.image.base.BaseImage] = qrcode.QRCode(
            version=version, error_correction=_ECC_CONSTANTS[ecc], border=0
        )
        for segment in segments:
            qr.add_data(segment)
        qr.make(fit=False)
        return [[bool(cell) for cell in row] for row in qr.modules]
