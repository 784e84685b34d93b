"""``print.zip``: one artwork file per QR tag of a campaign plus ``manifest.csv``,
streamed (never the whole archive in memory).

The archive is written by :mod:`zipfile` into a sink that is emptied after every entry
(entries carry data descriptors, as on any non-seekable stream; every unzip tool reads
them). Renders go through the app's :class:`~campaigns.payloads.rendering.RenderPool`
like single images, at most :data:`WINDOW` in flight per export, so an export holds
one file or two in memory and shares the workers fairly with everybody else's renders.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import zipfile
from collections import deque
from collections.abc import AsyncIterator, Hashable
from typing import Final

from campaigns.payloads import artwork
from campaigns.payloads.logo import Logo
from campaigns.payloads.ndef import uri_message
from campaigns.payloads.rendering import RenderBusy, RenderPool
from campaigns.scanning.links import qr_url, short_url
from campaigns.services.printing import MANIFEST_COLUMNS, PrintItem, print_file_stem

#: Renders of one export queued or running at once.
WINDOW: Final = 2
MANIFEST_NAME: Final = "manifest.csv"
#: Cells starting with these are formulas to spreadsheet software (CSV injection):
#: prefixed with an apostrophe.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


class _Chunks:
    """A write-only, non-seekable file collecting what :class:`zipfile.ZipFile` writes."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _ndef_hex(origin: str, item: PrintItem) -> str:
    """The manifest's ``ndef_hex`` of ``item`` (see :func:`stream_print_zip`)."""
    if item.kind != "nfc":
        return ""
    return uri_message(short_url(origin, item.code)).hex().upper()


async def _render_when_free(
    pool: RenderPool, owner: Hashable, content: str, style: artwork.Style, logo: Logo | None
) -> bytes:
    """Render through the pool; when the organization's queue is full (its other
    requests), wait the advertised ``Retry-After`` instead of failing a stream that
    has already started."""
    etag = artwork.artwork_etag(content, style, logo.sha256 if logo else None)
    while True:
        try:
            return await pool.run_cached(etag, owner, artwork.render_artwork, content, style, logo)
        except RenderBusy as busy:
            await asyncio.sleep(float(busy.headers.get("Retry-After", "1")))


async def stream_print_zip(
    pool: RenderPool,
    *,
    owner: Hashable,
    items: list[PrintItem],
    origin: str,
    style: artwork.Style,
    logo: Logo | None,
) -> AsyncIterator[bytes]:
    """The zip archive, in chunks: ``{store}_{label}_{code}.{ext}`` for each QR tag
    (:func:`print_file_stem`), in ``style`` (normalised by
    :func:`artwork.check_style`), then ``manifest.csv`` with one row per tag
    (:data:`MANIFEST_COLUMNS`). NFC tags get no artwork; ``ndef_hex`` is, for plain
    ``nfc`` tags, the NDEF message to write (one URI record of the tag's ``short_url``,
    upper-case hex, as ``GET /v1/tags/{id}/ndef?format=hex`` gives:
    :func:`campaigns.payloads.ndef.uri_message`), and empty for QR tags and for
    ``nfc_sun`` tags: an NTAG 424 DNA is not written with a plain message but
    personalised with its SDM layout (file settings, mirror offsets) and keys, which
    ``GET /v1/tags/{id}/sdm`` gives per tag. PNG and PDF entries are stored (already
    compressed), SVG and the manifest deflated."""
    sink = _Chunks()
    archive = zipfile.ZipFile(sink, "w", allowZip64=True)
    compress = zipfile.ZIP_DEFLATED if style.fmt == "svg" else zipfile.ZIP_STORED
    stamp = dt.datetime.now(dt.UTC).timetuple()[:6]
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\r\n")
    writer.writerow(MANIFEST_COLUMNS)
    pending: deque[tuple[str, asyncio.Task[bytes]]] = deque()

    def write(name: str, data: bytes, method: int) -> None:
        entry = zipfile.ZipInfo(name, date_time=stamp)
        entry.compress_type = method
        archive.writestr(entry, data)

    try:
        for item in items:
            name = ""
            if item.kind == "qr":
                name = f"{print_file_stem(item)}.{style.fmt}"
                content = qr_url(origin, item.code)
                task = asyncio.create_task(_render_when_free(pool, owner, content, style, logo))
                pending.append((name, task))
            writer.writerow(
                [
                    item.code,
                    short_url(origin, item.code),
                    _cell(item.store or ""),
                    _cell(item.label or ""),
                    item.kind,
                    name,
                    _ndef_hex(origin, item),
                ]
            )
            while len(pending) >= WINDOW or (pending and pending[0][1].done()):
                done_name, done_task = pending.popleft()
                write(done_name, await done_task, compress)
                yield sink.take()
        while pending:
            done_name, done_task = pending.popleft()
            write(done_name, await done_task, compress)
            yield sink.take()
        write(MANIFEST_NAME, manifest.getvalue().encode("utf-8"), zipfile.ZIP_DEFLATED)
        archive.close()
        yield sink.take()
    finally:
        for _, task in pending:
            task.cancel()
