"""Label sheets: a campaign's QR codes laid out ``columns x rows`` per page (A4 or US
Letter), each label with its code, a caption and the short link in clear text (for
people whose camera fails), as vector PDF (reportlab).

Crop-safe: a :data:`PAGE_MARGIN_MM` page margin (most office printers cannot print the
outer 4-6 mm) and, inside every label, a :data:`SAFE_MARGIN_MM` margin that nothing
crosses, so a cut a few millimetres off still leaves the code and its quiet zone whole.
Hairline light-grey cell outlines guide the scissors. Each code keeps its quiet zone
(``border`` modules) and a module of at least 0.4 mm
(:data:`campaigns.payloads.artwork.MIN_MODULE_MM`).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from campaigns.errors import InvalidInput
from campaigns.payloads import artwork, qr

Paper = Literal["A4", "Letter"]
PAPERS: Final[tuple[str, ...]] = get_args(Paper)
#: Paper sizes in millimetres (ISO 216 A4; ANSI Letter, 8.5 x 11 in).
PAPER_MM: Final[dict[str, tuple[float, float]]] = {"A4": (210.0, 297.0), "Letter": (215.9, 279.4)}
PAGE_MARGIN_MM: Final = 10.0
SAFE_MARGIN_MM: Final = 3.0
MAX_COLUMNS: Final = 10
MAX_ROWS: Final = 20
#: Labels per request: one render job; more should be split or use print.zip.
MAX_LABELS: Final = 1000
_LAYOUT: Final = re.compile(r"^([1-9][0-9]?)x([1-9][0-9]?)$")
#: Text lines: caption and short link, as fractions of the text area.
_TEXT_SIZE_MM: Final = 3.2


@dataclass(frozen=True, slots=True)
class SheetLabel:
    """One label: QR ``content``, ``caption`` (may be empty) and ``short_text``, the
    short link printed in clear."""

    content: str
    caption: str
    short_text: str


@dataclass(frozen=True, slots=True)
class SheetLayout:
    """A validated layout: paper, ``columns`` x ``rows``, error correction, quiet zone."""

    paper: Paper
    columns: int
    rows: int
    ecc: qr.EccLevel
    border: int


def _cell_mm(paper: str, columns: int, rows: int) -> tuple[float, float]:
    width, height = PAPER_MM[paper]
    return (width - 2 * PAGE_MARGIN_MM) / columns, (height - 2 * PAGE_MARGIN_MM) / rows


def _code_mm(cell_w: float, cell_h: float) -> tuple[float, bool]:
    """Code width in mm and whether the text goes beside it (wide labels) or below."""
    inner_w, inner_h = cell_w - 2 * SAFE_MARGIN_MM, cell_h - 2 * SAFE_MARGIN_MM
    if inner_w >= 1.5 * inner_h:
        return min(inner_h, inner_w * 0.5), True
    return max(0.0, min(inner_w, inner_h - 2.6 * _TEXT_SIZE_MM)), False


def check_layout(
    sample_content: str,
    *,
    paper: str,
    layout: str,
    ecc: str,
    border: int,
    labels: int,
    caption: str | None = None,
) -> SheetLayout:
    """Validate sheet parameters for codes like ``sample_content``. Raises
    :class:`InvalidInput`: ``validation_error`` (paper, layout ``CxR`` with 1..10
    columns and 1..20 rows, ecc, border, caption), ``too_many_labels`` past
    :data:`MAX_LABELS`, ``too_small_to_scan`` (with ``min_size_mm``, the smallest code
    width) when a label leaves less than 0.4 mm per module."""
    problems: list[tuple[str, str]] = []
    if paper not in PAPERS:
        problems.append(("paper", f"must be one of {', '.join(PAPERS)}"))
    match = _LAYOUT.match(layout)
    if not match or int(match[1]) > MAX_COLUMNS or int(match[2]) > MAX_ROWS:
        problems.append(
            ("layout", f"must be COLUMNSxROWS, 1 to {MAX_COLUMNS} by 1 to {MAX_ROWS}, e.g. 3x8")
        )
    if ecc not in qr.ECC_LEVELS:
        problems.append(("ecc", f"must be one of {', '.join(qr.ECC_LEVELS)}"))
    if not qr.MIN_BORDER <= border <= qr.MAX_BORDER:
        problems.append(("border", f"must be {qr.MIN_BORDER} to {qr.MAX_BORDER} modules"))
    if caption is not None and (len(caption) > artwork.MAX_CAPTION or not caption.isprintable()):
        problems.append(("caption", f"must be at most {artwork.MAX_CAPTION} printable characters"))
    if problems or match is None:
        raise InvalidInput(
            "; ".join(f"{field}: {msg}" for field, msg in problems),
            errors=[{"loc": [field], "msg": msg, "type": "value_error"} for field, msg in problems],
        )
    if labels > MAX_LABELS:
        raise InvalidInput(
            f"{labels} labels; at most {MAX_LABELS} per sheet request (use print.zip)",
            code="too_many_labels",
        )
    columns, rows = int(match[1]), int(match[2])
    result = SheetLayout(paper=paper, columns=columns, rows=rows, ecc=ecc, border=border)  # type: ignore[arg-type]
    across = 17 + 4 * qr.qr_version(sample_content, ecc=result.ecc) + 2 * border
    code_mm, _ = _code_mm(*_cell_mm(paper, columns, rows))
    if code_mm < across * artwork.MIN_MODULE_MM - 1e-9:
        minimum = math.ceil(across * artwork.MIN_MODULE_MM * 10 - 1e-9) / 10
        raise InvalidInput(
            f"A {layout} layout on {paper} leaves {code_mm:.1f} mm per code; at least "
            f"{minimum:g} mm is needed (0.4 mm per module): use fewer labels per page",
            code="too_small_to_scan",
            members={"min_size_mm": minimum},
        )
    return result


def render_sheets(labels: list[SheetLabel], layout: SheetLayout) -> bytes:
    """The PDF (one page per ``columns x rows`` labels, at least one page). CPU-bound:
    the API runs it in the render pool."""
    page_w, page_h = (side * mm for side in PAPER_MM[layout.paper])
    cell_w_mm, cell_h_mm = _cell_mm(layout.paper, layout.columns, layout.rows)
    cell_w, cell_h = cell_w_mm * mm, cell_h_mm * mm
    code_mm, beside = _code_mm(cell_w_mm, cell_h_mm)
    code, safe, text = code_mm * mm, SAFE_MARGIN_MM * mm, _TEXT_SIZE_MM * mm
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=(page_w, page_h), invariant=True, pageCompression=1)
    per_page = layout.columns * layout.rows
    for page_start in range(0, max(1, len(labels)), per_page):
        canvas.setLineWidth(0.25)
        canvas.setStrokeGray(0.8)
        for row in range(layout.rows):
            for column in range(layout.columns):
                left = PAGE_MARGIN_MM * mm + column * cell_w
                top = page_h - PAGE_MARGIN_MM * mm - row * cell_h
                canvas.rect(left, top - cell_h, cell_w, cell_h, stroke=1, fill=0)
        for index, label in enumerate(labels[page_start : page_start + per_page]):
            row, column = divmod(index, layout.columns)
            left = PAGE_MARGIN_MM * mm + column * cell_w
            top = page_h - PAGE_MARGIN_MM * mm - row * cell_h
            matrix = qr.qr_matrix(label.content, ecc=layout.ecc)
            across = len(matrix) + 2 * layout.border
            if beside:
                code_left, code_top = left + safe, top - (cell_h - code) / 2
                text_x = (code_left + code + left + cell_w - safe) / 2
                text_w = left + cell_w - safe - (code_left + code)
                middle = top - cell_h / 2
                lines = (middle + 0.7 * text, middle - 0.7 * text)
            else:
                code_left, code_top = left + (cell_w - code) / 2, top - safe
                text_x, text_w = left + cell_w / 2, cell_w - 2 * safe
                below = code_top - code
                lines = (below - 0.7 * text, below - 1.9 * text)
            artwork.draw_symbol_pdf(
                canvas,
                artwork.dark_rectangles(matrix, layout.border),
                left=code_left,
                top=code_top,
                module=code / across,
                fg="000000",
            )
            for line, y, size in (
                (label.caption, lines[0], text),
                (label.short_text, lines[1], text * 0.8),
            ):
                if line:
                    artwork.draw_caption_pdf(
                        canvas,
                        line,
                        centre_x=text_x,
                        middle_y=y,
                        width=text_w,
                        size=size,
                        fg="000000",
                    )
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()
