"""``print.zip``: one artwork file per QR tag of a campaign plus ``manifest.csv``,
streamed (never the whole archive in memory); the same files written to a directory by
``passerelle tags generate`` (:func:`write_print_files`).

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
from collections.abc import AsyncIterator, Callable, Hashable
from pathlib import Path
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


def csv_cell(value: str) -> str:
    """``value`` as a CSV text cell safe to open in a spreadsheet: prefixed with an
    apostrophe when it starts with ``= + - @``, a tab or a carriage return (OWASP "CSV
    Injection"). Numbers we format ourselves are written as they are."""
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


async def render_print_files(
    pool: RenderPool,
    *,
    owner: Hashable,
    items: list[PrintItem],
    origin: str,
    style: artwork.Style,
    logo: Logo | None,
    window: int = WINDOW,
) -> AsyncIterator[tuple[PrintItem, str, bytes | None]]:
    """Each item in order with its artwork file name ``{store}_{label}_{code}.{ext}``
    (:func:`print_file_stem`) and bytes, rendered through ``pool`` in ``style``
    (normalised by :func:`artwork.check_style`) with at most ``window`` renders in
    flight; NFC tags come with ``("", None)`` (no artwork)."""
    pending: deque[tuple[PrintItem, str, asyncio.Task[bytes] | None]] = deque()
    try:
        for item in items:
            if item.kind == "qr":
                content = qr_url(origin, item.code)
                render = asyncio.create_task(_render_when_free(pool, owner, content, style, logo))
                pending.append((item, f"{print_file_stem(item)}.{style.fmt}", render))
            else:
                pending.append((item, "", None))
            while pending and (
                sum(1 for *_, t in pending if t is not None) >= window
                or pending[0][2] is None
                or pending[0][2].done()
            ):
                done_item, name, done_task = pending.popleft()
                yield done_item, name, (await done_task if done_task is not None else None)
        while pending:
            done_item, name, done_task = pending.popleft()
            yield done_item, name, (await done_task if done_task is not None else None)
    finally:
        for *_, task in pending:
            if task is not None:
                task.cancel()


def manifest_row(item: PrintItem, *, origin: str, file: str) -> list[str]:
    """The ``manifest.csv`` row of ``item`` (:data:`MANIFEST_COLUMNS`); ``file`` is its
    artwork file name, empty for NFC tags. ``ndef_hex`` is, for plain ``nfc`` tags, the
    NDEF message to write (one URI record of the tag's ``short_url``, upper-case hex, as
    ``GET /v1/tags/{id}/ndef?format=hex`` gives: :func:`campaigns.payloads.ndef.uri_message`),
    and empty for QR tags and for ``nfc_sun`` tags: an NTAG 424 DNA is not written with a
    plain message but personalised with its SDM layout and keys (``GET
    /v1/tags/{id}/sdm``). Text cells that a spreadsheet would read as a formula are
    prefixed with an apostrophe."""
    return [
        item.code,
        short_url(origin, item.code),
        csv_cell(item.store or ""),
        csv_cell(item.label or ""),
        item.kind,
        file,
        _ndef_hex(origin, item),
    ]


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
    (:func:`render_print_files`), then ``manifest.csv`` with one row per tag
    (:func:`manifest_row`). PNG and PDF entries are stored (already compressed), SVG and
    the manifest deflated."""
    sink = _Chunks()
    archive = zipfile.ZipFile(sink, "w", allowZip64=True)
    compress = zipfile.ZIP_DEFLATED if style.fmt == "svg" else zipfile.ZIP_STORED
    stamp = dt.datetime.now(dt.UTC).timetuple()[:6]
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\r\n")
    writer.writerow(MANIFEST_COLUMNS)

    def write(name: str, data: bytes, method: int) -> None:
        entry = zipfile.ZipInfo(name, date_time=stamp)
        entry.compress_type = method
        archive.writestr(entry, data)

    files = render_print_files(
        pool, owner=owner, items=items, origin=origin, style=style, logo=logo
    )
    async for item, name, data in files:
        writer.writerow(manifest_row(item, origin=origin, file=name))
        if data is not None:
            write(name, data, compress)
            yield sink.take()
    write(MANIFEST_NAME, manifest.getvalue().encode("utf-8"), zipfile.ZIP_DEFLATED)
    archive.close()
    yield sink.take()


async def write_print_files(
    pool: RenderPool,
    *,
    owner: Hashable,
    items: list[PrintItem],
    origin: str,
    style: artwork.Style,
    logo: Logo | None,
    directory: Path,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """What ``print.zip`` holds, as files in ``directory`` (created if missing): the
    artwork of each QR tag and ``manifest.csv``. Existing files of the same names are
    replaced. ``progress(done, total)`` after each tag; returns the artwork files
    written. Raises ``OSError`` when the directory cannot be written."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    manifest = io.StringIO()
    writer = csv.writer(manifest, lineterminator="\r\n")
    writer.writerow(MANIFEST_COLUMNS)
    window = max(WINDOW, 2 * pool.workers)
    written = 0
    files = render_print_files(
        pool, owner=owner, items=items, origin=origin, style=style, logo=logo, window=window
    )
    done = 0
    async for item, name, data in files:
        done += 1
        writer.writerow(manifest_row(item, origin=origin, file=name))
        if data is not None:
            await asyncio.to_thread((directory / name).write_bytes, data)
            written += 1
        if progress is not None:
            progress(done, len(items))
    await asyncio.to_thread(
        (directory / MANIFEST_NAME).write_bytes, manifest.getvalue().encode("utf-8")
    )
    return written
