"""Print-ready QR artwork of a tag: PNG, SVG or PDF, sized in millimetres, in colour,
with an optional organization logo and caption.

Geometry (ISO/IEC 18004:2015):

- the symbol is ``n = 17 + 4 * version`` modules a side (:mod:`campaigns.payloads.qr`
  encodes it), surrounded by a quiet zone of ``border`` >= 4 modules (§6.3.8); ``M = n +
  2 * border`` modules span the image width;
- ``size_mm`` is the printed width of the whole image, quiet zone included; a module is
  never narrower than :data:`MIN_MODULE_MM` (0.4 mm: below that, phone cameras at arm's
  length and ordinary print gain make codes unreliable), else 422 ``too_small_to_scan``
  with the smallest width that works (``min_size_mm``);
- dark modules are drawn as rectangles, horizontal runs merged and identical runs of
  consecutive rows merged into one rectangle (:func:`dark_rectangles`);
- colours must keep a WCAG 2.x contrast ratio of at least 4:1 (``low_contrast``) and be
  dark on light (``inverted_colours`` unless ``allow_inverted``: ISO/IEC 18004 §6.2
  allows reflectance reversal, but many scanner apps still miss it);
- a logo forces error correction H (about 30 % of codewords recoverable, §7.5.1) and
  covers at most :data:`LOGO_MAX_AREA` (20 %) of the symbol, centred on a module-aligned
  light area that stays clear of the finder patterns, their separators and the format
  information (the 9 modules along each corner);
- a caption is one line of text under the quiet zone, in Bitstream Vera Sans (the TTF
  that reportlab ships, so PNG and PDF need no system font; SVG names it first and falls
  back to the viewer's sans-serif).

PNG: pixel width ``round(size_mm / 25.4 * dpi)`` (or, without ``size_mm``, the legacy
``size`` rounded up to whole pixels per module), module edges at rounded pixel
positions, ``pHYs`` set to ``dpi``; capped at :data:`MAX_PNG_PIXELS` a side (memory and
time bound). SVG: ``width``/``height`` in mm, ``viewBox`` in modules. PDF: page of the
image's size, vector rectangles (reportlab), caption as embedded TTF text; an SVG logo
is rasterised at 600 dpi for PDF (cairosvg, already needed for PNG: one SVG parser on
untrusted input rather than two) and embedded as an image in SVG output.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version as _package_version
from typing import Final, Literal, get_args
from xml.sax.saxutils import escape, quoteattr

import PIL
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import reportlab
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from campaigns.errors import InvalidInput
from campaigns.payloads import qr
from campaigns.payloads.logo import Logo, logo_aspect, logo_image

Format = Literal["png", "svg", "pdf"]
FORMATS: Final[tuple[str, ...]] = get_args(Format)
MEDIA_TYPES: Final[dict[str, str]] = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
}

MIN_MODULE_MM: Final = 0.4
MAX_SIZE_MM: Final = 2000.0
MIN_DPI: Final = 72
MAX_DPI: Final = 2400
DEFAULT_DPI: Final = 300
#: Legacy PNG width in pixels (when ``size_mm`` is not given).
MIN_SIZE: Final = 64
MAX_SIZE: Final = 4096
DEFAULT_SIZE: Final = 512
#: Largest PNG side in pixels: 6000 x 6000 is 36 MB as a palette image (108 MB in RGB
#: with a logo), about 50 cm at 300 dpi; larger prints should use SVG or PDF.
MAX_PNG_PIXELS: Final = 6000
MAX_CAPTION: Final = 60
MIN_CONTRAST: Final = 4.0
LOGO_MAX_AREA: Final = 0.20
#: Logo padding inside its clear area, in modules (each side).
_LOGO_PADDING: Final = 0.5
#: Caption font size and band height, as fractions of the image width.
_CAPTION_FONT: Final = 0.07
_CAPTION_BAND: Final = 0.13
#: Rasterisation of SVG logos embedded in PDF, dots per inch.
_PDF_LOGO_DPI: Final = 600

FONT_PATH: Final = os.path.join(os.path.dirname(reportlab.__file__), "fonts", "Vera.ttf")
_FONT_NAME: Final = "Vera"
_SVG_FONT_FAMILY: Final = "'Bitstream Vera Sans', 'DejaVu Sans', Verdana, sans-serif"

#: Bumped when the output changes for the same parameters, so strong ETags (a
#: byte-identical promise, RFC 9110 §8.8.3) change with it; library versions too.
RENDERER_REVISION: Final = "2"
_LIBRARY_VERSIONS: Final = (
    f"qrcode={_package_version('qrcode')};pillow={PIL.__version__};reportlab={reportlab.Version}"
)


@dataclass(frozen=True, slots=True)
class Style:
    """How to draw a symbol. ``size`` is the legacy PNG width in pixels, ``size_mm`` the
    printed width in millimetres (quiet zone included; exclusive with ``size``), ``dpi``
    the PNG resolution for ``size_mm``; ``fg``/``bg`` upper-case ``RRGGBB``; ``caption``
    one line under the code; ``logo`` puts the organization's logo in the centre."""

    fmt: Format = "png"
    ecc: qr.EccLevel = qr.DEFAULT_ECC
    border: int = qr.DEFAULT_BORDER
    size: int | None = None
    size_mm: float | None = None
    dpi: int = DEFAULT_DPI
    fg: str = "000000"
    bg: str = "FFFFFF"
    allow_inverted: bool = False
    caption: str | None = None
    logo: bool = False


# --- validation ---------------------------------------------------------------------


def parse_colour(text: str) -> str:
    """``#RRGGBB`` or ``RRGGBB`` -> ``RRGGBB`` upper case. Raises ``ValueError``."""
    value = text.removeprefix("#")
    if len(value) != 6 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"{text!r} is not a #RRGGBB colour")
    return value.upper()


def relative_luminance(colour: str) -> float:
    """WCAG 2.x relative luminance (0 black .. 1 white) of an ``RRGGBB`` sRGB colour."""
    channels = []
    for i in (0, 2, 4):
        c = int(colour[i : i + 2], 16) / 255
        channels.append(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
    red, green, blue = channels
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast_ratio(a: str, b: str) -> float:
    """WCAG 2.x contrast ratio (1 .. 21) of two ``RRGGBB`` colours."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def modules_across(content: str, style: Style) -> int:
    """Modules across the image: symbol plus quiet zone on both sides."""
    return 17 + 4 * qr.qr_version(content, ecc=style.ecc) + 2 * style.border


def check_style(content: str, style: Style) -> Style:
    """Validate ``style`` for ``content`` and return it normalised (ECC H with a logo,
    colours upper case, parameters a format ignores dropped), so equal outputs have
    equal styles. Raises :class:`InvalidInput`: ``validation_error`` (with ``errors``)
    for a parameter out of range, ``too_small_to_scan`` (with ``min_size_mm``),
    ``low_contrast``, ``inverted_colours``, ``qr_content_too_long``."""
    problems: list[tuple[str, str]] = []
    if style.fmt not in FORMATS:
        problems.append(("format", f"must be one of {', '.join(FORMATS)}"))
    if style.ecc not in qr.ECC_LEVELS:
        problems.append(("ecc", f"must be one of {', '.join(qr.ECC_LEVELS)}"))
    if not qr.MIN_BORDER <= style.border <= qr.MAX_BORDER:
        problems.append(("border", f"must be {qr.MIN_BORDER} to {qr.MAX_BORDER} modules"))
    if style.size is not None and style.size_mm is not None:
        problems.append(("size", "give size (pixels) or size_mm, not both"))
    if style.size is not None and not MIN_SIZE <= style.size <= MAX_SIZE:
        problems.append(("size", f"must be {MIN_SIZE} to {MAX_SIZE} pixels"))
    if style.size_mm is not None and not 0 < style.size_mm <= MAX_SIZE_MM:
        problems.append(("size_mm", f"must be more than 0 and at most {MAX_SIZE_MM:g} mm"))
    if not MIN_DPI <= style.dpi <= MAX_DPI:
        problems.append(("dpi", f"must be {MIN_DPI} to {MAX_DPI}"))
    colours = {}
    for name in ("fg", "bg"):
        try:
            colours[name] = parse_colour(getattr(style, name))
        except ValueError as exc:
            problems.append((name, str(exc)))
    if style.caption is not None and (
        len(style.caption) > MAX_CAPTION or not style.caption.isprintable()
    ):
        problems.append(("caption", f"must be at most {MAX_CAPTION} printable characters"))
    if (
        not problems
        and style.fmt == "png"
        and style.size_mm is not None
        and _png_width(style, 1) > MAX_PNG_PIXELS
    ):
        problems.append(
            ("dpi", f"size_mm x dpi gives more than {MAX_PNG_PIXELS} pixels; lower either")
        )
    if problems:
        raise InvalidInput(
            "; ".join(f"{field}: {msg}" for field, msg in problems),
            errors=[{"loc": [field], "msg": msg, "type": "value_error"} for field, msg in problems],
        )
    fg, bg = colours["fg"], colours["bg"]
    ratio = contrast_ratio(fg, bg)
    if ratio < MIN_CONTRAST:
        raise InvalidInput(
            f"Contrast ratio {ratio:.2f}:1 between fg #{fg} and bg #{bg} is below "
            f"{MIN_CONTRAST:g}:1 (WCAG 2.x); scanners need a clear difference",
            code="low_contrast",
        )
    if relative_luminance(fg) > relative_luminance(bg) and not style.allow_inverted:
        raise InvalidInput(
            "Light modules on a dark background (fg lighter than bg) are missed by many "
            "scanners; pass allow_inverted=true to insist",
            code="inverted_colours",
        )
    normal = replace(
        style,
        fg=fg,
        bg=bg,
        ecc="H" if style.logo else style.ecc,
        caption=style.caption or None,
        allow_inverted=False,  # decided above; not part of the output
        size=(style.size or DEFAULT_SIZE) if style.fmt == "png" and style.size_mm is None else None,
        dpi=style.dpi if style.fmt == "png" and style.size_mm is not None else 0,
    )
    if normal.size_mm is not None:
        across = modules_across(content, normal)
        if normal.size_mm < across * MIN_MODULE_MM - 1e-9:
            minimum = math.ceil(across * MIN_MODULE_MM * 10 - 1e-9) / 10
            raise InvalidInput(
                f"At {normal.size_mm:g} mm a module would be "
                f"{normal.size_mm / across:.2f} mm wide; at least {MIN_MODULE_MM} mm is "
                f"needed, so at least {minimum:g} mm for these {across} modules",
                code="too_small_to_scan",
                members={"min_size_mm": minimum},
            )
    return normal


def artwork_etag(content: str, style: Style, logo_sha256: str | None) -> str:
    """A strong entity tag (RFC 9110 §8.8.3, quoted, 32 hex digits) for the bytes
    :func:`render_artwork` returns for a normalised ``style`` (see :func:`check_style`)
    and the logo of that SHA-256; computed without rendering."""
    key = "\x1f".join(
        (
            RENDERER_REVISION,
            _LIBRARY_VERSIONS,
            content,
            repr(sorted(asdict(style).items())),
            logo_sha256 or "",
        )
    )
    return '"' + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + '"'


# --- geometry -------------------------------------------------------------------------


Rect = tuple[int, int, int, int]


def dark_rectangles(matrix: list[list[bool]], offset: int = 0) -> list[Rect]:
    """The dark modules of ``matrix`` as ``(x, y, width, height)`` rectangles in modules,
    shifted by ``offset`` (the quiet zone): each row's runs of dark modules, a run
    extended downwards while the next rows have the same run. Covers exactly the dark
    modules, without overlap."""
    rects: list[Rect] = []
    open_runs: dict[tuple[int, int], int] = {}  # (x, width) -> first row
    for y, row in enumerate([*matrix, []]):
        runs: set[tuple[int, int]] = set()
        x = 0
        while x < len(row):
            if row[x]:
                start = x
                while x < len(row) and row[x]:
                    x += 1
                runs.add((start, x - start))
            x += 1
        for run in list(open_runs):
            if run not in runs:
                first = open_runs.pop(run)
                rects.append((run[0] + offset, first + offset, run[1], y - first))
        for run in runs:
            open_runs.setdefault(run, y)
    rects.sort(key=lambda r: (r[1], r[0]))
    return rects


def logo_area(n: int, aspect: float) -> Rect:
    """The light area ``(x, y, width, height)`` in symbol modules (no quiet zone) that
    holds a logo of ``aspect`` (width / height) in an ``n``-module symbol: both sides
    odd (so it is centred on the centre module), at most :data:`LOGO_MAX_AREA` of the
    symbol's area, within the modules left free by the finder patterns, separators and
    format information (``n - 18`` a side), and the one in which the fitted logo is
    largest."""
    limit = n - 18
    best: tuple[float, int, int] = (0.0, 1, 1)
    for width in range(1, limit + 1, 2):
        for height in range(1, limit + 1, 2):
            if width * height > LOGO_MAX_AREA * n * n:
                break
            inner_w, inner_h = width - 2 * _LOGO_PADDING, height - 2 * _LOGO_PADDING
            drawn = min(inner_w, inner_h * aspect) * min(inner_h, inner_w / aspect)
            if drawn > best[0]:
                best = (drawn, width, height)
    _, width, height = best
    return ((n - width) // 2, (n - height) // 2, width, height)


@dataclass(frozen=True, slots=True)
class _Layout:
    """A symbol laid out on the image: modules across, dark rectangles, logo area (all
    in modules of the image, quiet zone included) and the caption band height as a
    fraction of the width."""

    across: int
    rects: list[Rect]
    logo: Rect | None
    band: float


def _layout(content: str, style: Style, logo: Logo | None) -> _Layout:
    matrix = qr.qr_matrix(content, ecc=style.ecc)
    n = len(matrix)
    area: Rect | None = None
    if style.logo and logo is not None:
        x, y, w, h = logo_area(n, logo_aspect(logo))
        for row in matrix[y : y + h]:
            row[x : x + w] = [False] * w
        area = (x + style.border, y + style.border, w, h)
    return _Layout(
        across=n + 2 * style.border,
        rects=dark_rectangles(matrix, style.border),
        logo=area,
        band=_CAPTION_BAND if style.caption else 0.0,
    )


def _png_width(style: Style, across: int) -> int:
    if style.size_mm is not None:
        return round(style.size_mm / 25.4 * style.dpi)
    size = style.size or DEFAULT_SIZE
    return across * -(-size // across)


def _physical_mm(style: Style, across: int) -> float:
    """Printed width in mm of SVG/PDF output: ``size_mm``, else 1 mm per module."""
    return style.size_mm if style.size_mm is not None else float(across)


# --- rendering ------------------------------------------------------------------------


def render_artwork(content: str, style: Style, logo: Logo | None = None) -> bytes:
    """Draw ``content`` as a QR symbol in ``style`` (already normalised by
    :func:`check_style`); ``logo`` is required when ``style.logo``. Returns the PNG,
    SVG or PDF bytes (:data:`MEDIA_TYPES`). CPU-bound (milliseconds; up to a second or
    two for a 6000-pixel PNG): the API runs it in the render pool. Raises
    :class:`InvalidInput` (``qr_content_too_long``, ``invalid_logo``)."""
    layout = _layout(content, style, logo)
    if style.fmt == "png":
        return _render_png(layout, style, logo)
    if style.fmt == "svg":
        return _render_svg(layout, style, logo)
    return _render_pdf(layout, style, logo)


def _rgb(colour: str) -> tuple[int, int, int]:
    return (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))


def _fit_font_size(text: str, width: float, size: float) -> float:
    """``size`` shrunk so that ``text`` in Vera is at most ``width`` wide (same units)."""
    _register_font()
    measured = pdfmetrics.stringWidth(text, _FONT_NAME, size)
    return size if measured <= width else size * width / measured


def _render_png(layout: _Layout, style: Style, logo: Logo | None) -> bytes:
    width = _png_width(style, layout.across)
    height = width + round(layout.band * width)
    edges = [round(i * width / layout.across) for i in range(layout.across + 1)]
    image = PIL.Image.new("P", (width, height), 0)
    image.putpalette([*_rgb(style.bg), *_rgb(style.fg)])
    draw = PIL.ImageDraw.Draw(image)
    for x, y, w, h in layout.rects:
        draw.rectangle((edges[x], edges[y], edges[x + w] - 1, edges[y + h] - 1), fill=1)
    if style.caption:
        usable = width * (1 - 2 * style.border / layout.across)
        size = _fit_font_size(style.caption, usable, width * _CAPTION_FONT)
        font = PIL.ImageFont.truetype(FONT_PATH, max(1, round(size)))
        draw.text(
            (width / 2, width + (height - width) * 0.45),
            style.caption,
            fill=1,
            font=font,
            anchor="mm",
        )
    bits = 1
    if layout.logo is not None and logo is not None:
        x, y, w, h = layout.logo
        pad = _LOGO_PADDING * width / layout.across
        box = (edges[x] + pad, edges[y] + pad, edges[x + w] - pad, edges[y + h] - pad)
        picture = logo_image(logo, max(1, int(box[2] - box[0])), max(1, int(box[3] - box[1])))
        image = image.convert("RGB")
        left = round((box[0] + box[2] - picture.width) / 2)
        top = round((box[1] + box[3] - picture.height) / 2)
        image.paste(picture, (left, top), picture)
        bits = 8
    buffer = io.BytesIO()
    options: dict[str, object] = {"bits": bits} if image.mode == "P" else {}
    if style.size_mm is not None:
        options["dpi"] = (style.dpi, style.dpi)
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _number(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _render_svg(layout: _Layout, style: Style, logo: Logo | None) -> bytes:
    across = layout.across
    height = across * (1 + layout.band)
    physical = _physical_mm(style, across)
    path = "".join(f"M{x} {y}h{w}v{h}h-{w}z" for x, y, w, h in layout.rects)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_number(physical)}mm" '
        f'height="{_number(physical * (1 + layout.band))}mm" '
        f'viewBox="0 0 {across} {_number(height)}" shape-rendering="crispEdges">',
        f'<rect width="{across}" height="{_number(height)}" fill="#{style.bg}"/>',
        f'<path fill="#{style.fg}" d="{path}"/>',
    ]
    if layout.logo is not None and logo is not None:
        x, y, w, h = layout.logo
        data = base64.b64encode(logo.content).decode("ascii")
        parts.append(
            f'<image x="{x + _LOGO_PADDING}" y="{y + _LOGO_PADDING}" '
            f'width="{w - 2 * _LOGO_PADDING}" height="{h - 2 * _LOGO_PADDING}" '
            f'preserveAspectRatio="xMidYMid meet" href="data:{logo.media_type};base64,{data}"/>'
        )
    if style.caption:
        usable = across - 2 * style.border
        size = _fit_font_size(style.caption, usable, across * _CAPTION_FONT)
        parts.append(
            f'<text x="{_number(across / 2)}" y="{_number(across + across * layout.band * 0.45)}" '
            f'font-family={quoteattr(_SVG_FONT_FAMILY)} font-size="{_number(size)}" '
            f'text-anchor="middle" dominant-baseline="central" fill="#{style.fg}">'
            f"{escape(style.caption)}</text>"
        )
    parts.append("</svg>\n")
    return "".join(parts).encode("utf-8")


_FONT_REGISTERED = False


def _register_font() -> None:
    global _FONT_REGISTERED
    if not _FONT_REGISTERED:
        pdfmetrics.registerFont(TTFont(_FONT_NAME, FONT_PATH))
        _FONT_REGISTERED = True


def draw_symbol_pdf(
    canvas: Canvas,
    rects: list[Rect],
    *,
    left: float,
    top: float,
    module: float,
    fg: str,
) -> None:
    """Fill ``rects`` (modules, y down) on ``canvas`` (points, y up) as one vector path,
    the image's top-left corner at (``left``, ``top``), ``module`` points per module."""
    canvas.setFillColorRGB(*(c / 255 for c in _rgb(fg)))
    path = canvas.beginPath()
    for x, y, w, h in rects:
        path.rect(left + x * module, top - (y + h) * module, w * module, h * module)
    canvas.drawPath(path, stroke=0, fill=1)


def draw_caption_pdf(
    canvas: Canvas,
    text: str,
    *,
    centre_x: float,
    middle_y: float,
    width: float,
    size: float,
    fg: str,
) -> None:
    """``text`` centred at (``centre_x``, ``middle_y``) in Vera (embedded), ``size``
    points shrunk to fit ``width`` points."""
    size = _fit_font_size(text, width, size)
    canvas.setFillColorRGB(*(c / 255 for c in _rgb(fg)))
    canvas.setFont(_FONT_NAME, size)
    # Vera's cap height is about 0.73 em: centre capitals on middle_y.
    canvas.drawCentredString(centre_x, middle_y - 0.36 * size, text)


def _render_pdf(layout: _Layout, style: Style, logo: Logo | None) -> bytes:
    _register_font()
    across = layout.across
    width = _physical_mm(style, across) * mm
    height = width * (1 + layout.band)
    module = width / across
    buffer = io.BytesIO()
    # invariant: no creation date or random document id, so equal input gives equal
    # bytes (the strong ETag promises it).
    canvas = Canvas(buffer, pagesize=(width, height), invariant=True, pageCompression=1)
    canvas.setFillColorRGB(*(c / 255 for c in _rgb(style.bg)))
    canvas.rect(0, 0, width, height, stroke=0, fill=1)
    draw_symbol_pdf(canvas, layout.rects, left=0, top=height, module=module, fg=style.fg)
    if layout.logo is not None and logo is not None:
        x, y, w, h = layout.logo
        box_w, box_h = (w - 2 * _LOGO_PADDING) * module, (h - 2 * _LOGO_PADDING) * module
        dots = _PDF_LOGO_DPI / 72
        picture = logo_image(logo, min(2048, round(box_w * dots)), min(2048, round(box_h * dots)))
        drawn_w = (
            box_w
            if picture.width / picture.height >= box_w / box_h
            else box_h * picture.width / picture.height
        )
        drawn_h = drawn_w * picture.height / picture.width
        cx, cy = (x + w / 2) * module, height - (y + h / 2) * module
        canvas.drawImage(
            ImageReader(picture), cx - drawn_w / 2, cy - drawn_h / 2, drawn_w, drawn_h, mask="auto"
        )
    if style.caption:
        draw_caption_pdf(
            canvas,
            style.caption,
            centre_x=width / 2,
            middle_y=(height - width) * 0.55,
            width=width - 2 * style.border * module,
            size=width * _CAPTION_FONT,
            fg=style.fg,
        )
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
