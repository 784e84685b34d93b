"""QR code rendering of a tag's ``qr_content`` (PNG or SVG).

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
while encoding): every use of it here is serialised, see :func:`render_qr`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version as _package_version
from typing import Final, Literal, get_args

import PIL
import qrcode
import qrcode.constants
import qrcode.util
from qrcode.image.pil import PilImage
from qrcode.image.svg import SvgPathFillImage

from campaigns.errors import InvalidInput

QrFormat = Literal["png", "svg"]
EccLevel = Literal["L", "M", "Q", "H"]

FORMATS: Final[tuple[str, ...]] = get_args(QrFormat)
ECC_LEVELS: Final[tuple[str, ...]] = get_args(EccLevel)
MEDIA_TYPES: Final[dict[str, str]] = {"png": "image/png", "svg": "image/svg+xml"}

#: Quiet zone in modules: the minimum of ISO/IEC 18004 §6.3.8 and a generous cap.
MIN_BORDER: Final = 4
MAX_BORDER: Final = 20
DEFAULT_BORDER: Final = 4
#: Target PNG width in pixels.
MIN_SIZE: Final = 64
MAX_SIZE: Final = 4096
DEFAULT_SIZE: Final = 512
DEFAULT_ECC: Final[EccLevel] = "M"
#: SVG scale: ``qrcode`` writes box_size 10 as 1 mm, so one module is 1 mm wide.
_SVG_BOX_SIZE: Final = 10

_ECC_CONSTANTS: Final[dict[str, int]] = {
    "L": qrcode.constants.ERROR_CORRECT_L,
    "M": qrcode.constants.ERROR_CORRECT_M,
    "Q": qrcode.constants.ERROR_CORRECT_Q,
    "H": qrcode.constants.ERROR_CORRECT_H,
}

#: Bumped when the output of this module changes for the same parameters, so that
#: strong ETags (byte-identical promise, RFC 9110 §8.8.3) change with it; the
#: ``qrcode`` and Pillow versions are part of the key for the same reason.
RENDERER_REVISION: Final = "1"
_LIBRARY_VERSIONS: Final = f"qrcode={_package_version('qrcode')};pillow={PIL.__version__}"


@dataclass(frozen=True, slots=True)
class RenderedQr:
    """A rendered symbol: ``content`` bytes of ``media_type``; ``version`` is the QR
    version (1..40, ``17 + 4 * version`` modules a side) and ``width`` the image width
    in pixels (PNG) or millimetres (SVG, one module per millimetre)."""

    content: bytes
    media_type: str
    version: int
    width: int


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


def _encode(content: str, ecc: str, border: int) -> qrcode.QRCode[PilImage]:
    """A ``QRCode`` holding the optimal segments of ``content`` at the smallest version
    that fits. Caller holds :data:`_QRCODE_LOCK`.

    The version is chosen here rather than by ``QRCode.best_fit``, which in 8.2 raises
    a bare ``ValueError`` ("Invalid version (was 41 ...)") instead of
    ``DataOverflowError`` when nothing fits."""
    level = _ECC_CONSTANTS[ecc]
    for low, high in _VERSION_RANGES:
        segments = optimal_segments(content, low)
        bits = _data_bits(segments, low)
        for version in range(low, high + 1):
            if bits <= qrcode.util.BIT_LIMIT_TABLE[level][version]:
                qr: qrcode.QRCode[PilImage] = qrcode.QRCode(
                    version=version, error_correction=level, border=border
                )
                for segment in segments:
                    qr.add_data(segment)
                qr.make(fit=False)
                return qr
    raise InvalidInput(
        f"{len(content.encode('utf-8'))} bytes of QR content do not fit a version 40 "
        f"symbol at error correction {ecc}",
        code="qr_content_too_long",
    )


def qr_version(content: str, *, ecc: EccLevel = DEFAULT_ECC) -> int:
    """The QR version (1..40) ``content`` is encoded at with error correction ``ecc``.
    Raises :class:`InvalidInput` (``qr_content_too_long``) past version 40."""
    with _QRCODE_LOCK:
        return int(_encode(content, ecc, MIN_BORDER).version)


def validate_parameters(*, fmt: str, size: int, ecc: str, border: int) -> None:
    """Check rendering parameters. Raises :class:`InvalidInput` (422
    ``validation_error``) with one ``errors`` entry per bad parameter."""
    problems: list[tuple[str, str]] = []
    if fmt not in FORMATS:
        problems.append(("format", f"must be one of {', '.join(FORMATS)}"))
    if not MIN_SIZE <= size <= MAX_SIZE:
        problems.append(("size", f"must be {MIN_SIZE} to {MAX_SIZE} pixels"))
    if ecc not in ECC_LEVELS:
        problems.append(("ecc", f"must be one of {', '.join(ECC_LEVELS)}"))
    if not MIN_BORDER <= border <= MAX_BORDER:
        problems.append(
            ("border", f"must be {MIN_BORDER} to {MAX_BORDER} modules (quiet zone, §6.3.8)")
        )
    if problems:
        raise InvalidInput(
            "; ".join(f"{field}: {msg}" for field, msg in problems),
            errors=[{"loc": [field], "msg": msg, "type": "value_error"} for field, msg in problems],
        )


def render_qr_sync(
    content: str,
    *,
    fmt: QrFormat = "png",
    size: int = DEFAULT_SIZE,
    ecc: EccLevel = DEFAULT_ECC,
    border: int = DEFAULT_BORDER,
) -> RenderedQr:
    """Render ``content`` as a QR symbol, blocking (CPU-bound, milliseconds to tens of
    milliseconds at 4096 px). Prefer :func:`render_qr` in async code.

    - ``fmt="png"``: a 1-bit greyscale PNG, black modules on white, square. Each module
      is a whole number of pixels (crisp edges for print), so the width is the
      smallest multiple of the module count (``17 + 4 * version + 2 * border``) that
      is at least ``size`` pixels: between ``size`` and ``size + modules - 1``.
    - ``fmt="svg"``: a standalone SVG with a white background and one ``<path>``;
      ``width``/``height`` in millimetres, one module per millimetre; ``size`` is
      ignored (vector output).

    ``ecc`` is the error correction level (ISO/IEC 18004 §7.5.1), ``border`` the
    quiet zone in modules (>= 4, §6.3.8). Raises :class:`InvalidInput` for parameters
    out of range (``validation_error``) or content too long for version 40
    (``qr_content_too_long``). Thread-safe (serialised by a lock).
    """
    validate_parameters(fmt=fmt, size=size, ecc=ecc, border=border)
    with _QRCODE_LOCK:
        qr = _encode(content, ecc, border)
        version = int(qr.version)
        modules = qr.modules_count + 2 * border
        buffer = io.BytesIO()
        if fmt == "png":
            box_size = -(-size // modules)  # ceil
            qr.box_size = box_size
            image = qr.make_image(image_factory=PilImage)
            image.save(buffer, format="PNG", optimize=True)
            width = modules * box_size
        else:
            qr.box_size = _SVG_BOX_SIZE
            image = qr.make_image(image_factory=SvgPathFillImage)
            image.save(buffer)
            width = modules
    return RenderedQr(
        content=buffer.getvalue(), media_type=MEDIA_TYPES[fmt], version=version, width=width
    )


# Why a dedicated single-thread executor rather than asyncio.Lock + to_thread: renders
# queue in this executor's in-memory work queue instead of each parking a worker of the
# loop's shared default pool on a lock while it waits its turn; and nothing is bound to
# one event loop (an asyncio.Lock created at import is tied to the first loop that
# contends for it, which breaks apps or tests that run several loops). The lock inside
# render_qr_sync is uncontended on this path; it protects direct synchronous callers
# (CLI, other threads) from racing this thread inside qrcode.
_QRCODE_LOCK: Final = threading.Lock()
_EXECUTOR: Final = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qr-render")


async def render_qr(
    content: str,
    *,
    fmt: QrFormat = "png",
    size: int = DEFAULT_SIZE,
    ecc: EccLevel = DEFAULT_ECC,
    border: int = DEFAULT_BORDER,
) -> RenderedQr:
    """:func:`render_qr_sync` off the event loop, one render at a time (``qrcode`` 8.2
    is not thread-safe, python-qrcode issue #421). Same shapes and errors."""
    loop = asyncio.get_running_loop()
    job = partial(render_qr_sync, content, fmt=fmt, size=size, ecc=ecc, border=border)
    return await loop.run_in_executor(_EXECUTOR, job)


def qr_etag(
    content: str,
    *,
    fmt: QrFormat,
    size: int,
    ecc: EccLevel,
    border: int,
) -> str:
    """A strong entity tag (RFC 9110 §8.8.3, quoted) for the bytes :func:`render_qr`
    returns for these arguments, computed without rendering: a SHA-256 of the
    content, the parameters that shape the output (``size`` only for PNG), the
    renderer revision and the ``qrcode``/Pillow versions; 32 hex digits."""
    shaped_size = size if fmt == "png" else 0
    key = "\x1f".join(
        (RENDERER_REVISION, _LIBRARY_VERSIONS, fmt, str(shaped_size), ecc, str(border), content)
    )
    return '"' + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + '"'
