"""Small HTML pages shown to people whose scan cannot be redirected."""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:15vh auto;padding:0 1.5rem;
color:#222;text-align:center}}h1{{font-size:1.5rem}}p{{color:#555;line-height:1.5}}</style>
</head><body><h1>{title}</h1><p>{message}</p></body></html>
"""

_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def page(status: int, title: str, message: str) -> HTMLResponse:
    """An HTML page with ``status``; never cached (the code may be re-pointed later)."""
    body = _TEMPLATE.format(title=escape(title), message=escape(message))
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def not_found_page() -> HTMLResponse:
    """404 for an unknown, malformed or disabled code."""
    return page(404, "Code not found", "This code is not (or no longer) in use.")


def gone_page() -> HTMLResponse:
    """410 for a code whose campaign has not started, has ended or is archived."""
    return page(410, "This offer is not available", "The campaign behind this code is not running.")


def tap_again_page() -> HTMLResponse:
    """403 for an NFC tap whose SUN message failed or was already used, under the
    campaign's ``nfc_invalid_tap: block`` (reloading the page replays the message)."""
    return page(
        403,
        "Please tap the tag again",
        "This link has already been used or could not be verified. Hold your phone to the "
        "tag again to open it.",
    )
