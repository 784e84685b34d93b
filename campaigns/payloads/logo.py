"""Organization logos for QR artwork: validation of untrusted uploads, rasterisation.

A logo is a PNG or an SVG (``image/png``, ``image/svg+xml``). Uploads are hostile until
proven otherwise, so :func:`validate_logo` refuses (422 ``invalid_logo``):

- anything over :data:`MAX_LOGO_BYTES`;
- a PNG that Pillow cannot decode, or whose header declares more than
  :data:`MAX_LOGO_PIXELS` (a decompression bomb: a few kilobytes that inflate to
  gigabytes), checked from the header *before* decoding;
- an SVG that is not well-formed XML parsed by ``defusedxml`` (no entity expansion, no
  external entities), whose root is not ``<svg>``, with scripts, event handlers
  (``on*`` attributes), ``<foreignObject>``, animation elements (they can rewrite
  ``href``), references that leave the document (``href`` other than ``#fragment`` or a
  ``data:image/png|jpeg|gif|webp`` URI; ``url(...)`` other than ``#fragment``;
  ``@import``), more than :data:`MAX_SVG_ELEMENTS` elements, or a ``<use>`` whose target
  contains a ``<use>`` (nested references grow exponentially: the SVG "billion laughs");
  and finally one that cairosvg cannot rasterise.

Rasterisation (:func:`logo_image`) uses cairosvg for SVG (with ``unsafe=False`` it
fetches only ``data:`` URIs) and Pillow for PNG.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element, ParseError

import cairosvg
import defusedxml
import defusedxml.ElementTree
import PIL.Image

from campaigns.errors import InvalidInput

PNG: Final = "image/png"
SVG: Final = "image/svg+xml"
LOGO_MEDIA_TYPES: Final = (PNG, SVG)
MAX_LOGO_BYTES: Final = 512 * 1024
#: 2048 x 2048: plenty for a logo printed a few centimetres wide at 1200 dpi, and a
#: decode of at most 16 MB (RGBA).
MAX_LOGO_PIXELS: Final = 2048 * 2048
MAX_SVG_ELEMENTS: Final = 5000

_SVG_NS: Final = "{http://www.w3.org/2000/svg}"
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_FORBIDDEN_ELEMENTS: Final = frozenset(
    {
        "script",
        "foreignobject",
        "iframe",
        "embed",
        "object",
        "audio",
        "video",
        "handler",
        "listener",
        "animate",
        "animatemotion",
        "animatetransform",
        "set",
    }
)
_DATA_IMAGE: Final = re.compile(r"data:image/(png|jpeg|gif|webp)[;,]", re.IGNORECASE)
_URL_REFERENCE: Final = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]*)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Logo:
    """A stored logo: ``media_type`` (:data:`LOGO_MEDIA_TYPES`) and its bytes."""

    media_type: str
    content: bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of ``content`` (part of artwork ETags)."""
        return hashlib.sha256(self.content).hexdigest()


def _invalid(detail: str) -> InvalidInput:
    return InvalidInput(detail, code="invalid_logo")


def validate_logo(logo: Logo) -> float:
    """Check an uploaded logo (see the module docstring) and return its aspect ratio
    (width / height). Raises :class:`InvalidInput` (422 ``invalid_logo``)."""
    if logo.media_type not in LOGO_MEDIA_TYPES:
        raise _invalid(f"A logo is {' or '.join(LOGO_MEDIA_TYPES)}, not {logo.media_type}")
    if not logo.content:
        raise _invalid("The logo is empty")
    if len(logo.content) > MAX_LOGO_BYTES:
        raise _invalid(f"The logo is {len(logo.content)} bytes; at most {MAX_LOGO_BYTES}")
    if logo.media_type == PNG:
        image = _open_png(logo.content)
        return image.width / image.height
    aspect = _check_svg(logo.content)
    try:
        cairosvg.svg2png(bytestring=logo.content, output_width=64)
    except Exception as exc:  # cairosvg raises many types on bad input
        raise _invalid("The SVG logo cannot be rendered") from exc
    return aspect


def _open_png(content: bytes) -> PIL.Image.Image:
    if not content.startswith(_PNG_SIGNATURE):
        raise _invalid("The logo is not a PNG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(io.BytesIO(content), formats=["PNG"])
            # The header's size, before a single pixel is inflated.
            if image.width * image.height > MAX_LOGO_PIXELS:
                raise _invalid(
                    f"The logo is {image.width} x {image.height} pixels; at most "
                    f"{MAX_LOGO_PIXELS} pixels (decompression bomb guard)"
                )
            image.load()
    except InvalidInput:
        raise
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombWarning) as exc:
        raise _invalid("The logo is not a decodable PNG image") from exc
    except PIL.Image.DecompressionBombError as exc:
        raise _invalid("The logo is a decompression bomb") from exc
    if image.width < 1 or image.height < 1:
        raise _invalid("The logo has no pixels")
    return image


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1].lower()


def _check_svg(content: bytes) -> float:
    try:
        root = defusedxml.ElementTree.fromstring(content, forbid_dtd=False)
    except (ParseError, defusedxml.DefusedXmlException, ValueError) as exc:
        raise _invalid("The logo is not well-formed SVG (or declares entities)") from exc
    if root.tag not in (f"{_SVG_NS}svg", "svg"):
        raise _invalid("The logo's root element is not <svg>")
    elements: list[Element] = list(root.iter())
    if len(elements) > MAX_SVG_ELEMENTS:
        raise _invalid(f"The SVG logo has more than {MAX_SVG_ELEMENTS} elements")
    by_id = {e.get("id"): e for e in elements if e.get("id")}
    for element in elements:
        if not isinstance(element.tag, str):
            continue  # comments, processing instructions
        name = _local(element.tag)
        if name in _FORBIDDEN_ELEMENTS:
            raise _invalid(f"The SVG logo contains <{name}>")
        texts = [element.text or ""] if name == "style" else []
        for attribute, value in element.attrib.items():
            local = _local(attribute)
            if local.startswith("on"):
                raise _invalid(f"The SVG logo has an event handler ({local})")
            if local == "href":
                _check_href(value, name, by_id)
            texts.append(value)
        for text in texts:
            lowered = text.lower()
            if "@import" in lowered or "javascript:" in lowered:
                raise _invalid("The SVG logo references external content")
            for target in _URL_REFERENCE.findall(text):
                if not target.startswith("#"):
                    raise _invalid(f"The SVG logo references {target[:40]!r}")
    return _svg_aspect(root)


def _check_href(value: str, element: str, by_id: dict[str | None, Element]) -> None:
    value = value.strip()
    if value.startswith("#"):
        target = by_id.get(value[1:])
        if element == "use" and target is not None:
            if any(_local(str(e.tag)) == "use" for e in target.iter()):
                raise _invalid("The SVG logo nests <use> references")
        return
    if element == "image" and _DATA_IMAGE.match(value):
        return
    raise _invalid(f"The SVG logo references {value[:40]!r} (only data: images allowed)")


def _svg_aspect(root: Element) -> float:
    """width / height from ``viewBox``, else ``width``/``height``, else 1."""
    numbers: list[float] = []
    view_box = root.get("viewBox")
    if view_box:
        parts = re.split(r"[\s,]+", view_box.strip())
        if len(parts) == 4:
            numbers = [_number(parts[2]), _number(parts[3])]
    if not numbers:
        numbers = [_number(root.get("width", "")), _number(root.get("height", ""))]
    width, height = numbers
    if width > 0 and height > 0:
        return min(20.0, max(0.05, width / height))
    return 1.0


def _number(text: str) -> float:
    match = re.match(r"\s*([0-9]*\.?[0-9]+)", text)
    return float(match.group(1)) if match else 0.0


def logo_aspect(logo: Logo) -> float:
    """width / height of a logo that passed :func:`validate_logo` (from the PNG header
    or the SVG ``viewBox``/size), without decoding pixels."""
    if logo.media_type == PNG:
        with PIL.Image.open(io.BytesIO(logo.content), formats=["PNG"]) as image:
            return image.width / image.height
    return _check_svg(logo.content)


def logo_image(logo: Logo, width: int, height: int) -> PIL.Image.Image:
    """The logo as an RGBA image fitted inside ``width`` x ``height`` pixels (aspect
    kept, so one side may be shorter). For logos that passed :func:`validate_logo`."""
    if logo.media_type == PNG:
        source = _open_png(logo.content).convert("RGBA")
    else:
        aspect = _check_svg(logo.content)
        fit_width = max(1, min(width, round(height * aspect)))
        png = cairosvg.svg2png(bytestring=logo.content, output_width=fit_width)
        source = PIL.Image.open(io.BytesIO(png)).convert("RGBA")
    scale = min(width / source.width, height / source.height)
    size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
    if size != source.size:
        source = source.resize(size, PIL.Image.Resampling.LANCZOS)
    return source
