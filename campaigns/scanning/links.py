"""Tag codes and destination URLs: the pure functions of the scan path."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from functools import lru_cache
from urllib.parse import quote, unquote_plus, urlencode, urlsplit, urlunsplit

#: Crockford's base32 alphabet (https://www.crockford.com/base32.html): no I, L, O, U.
CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
_CODE_CHARS = frozenset(CROCKFORD_ALPHABET)
#: Crockford decoding: read I and L as 1, O as 0 (people retype printed codes).
_DECODE = str.maketrans({"I": "1", "L": "1", "O": "0"})

#: Query parameter carrying the click id to the destination.
CLICK_ID_PARAM = "pcid"
UTM_KEYS = ("source", "medium", "campaign", "term", "content")
#: Characters left alone when a destination is made ASCII (besides ``A-Za-z0-9_.-~``):
#: RFC 3986 reserved characters and ``%`` (already percent-encoded octets).
_URI_SAFE = ":/?#[]@!$&'()*+,;=%"


def new_code() -> str:
    """A random 8-character Crockford base32 code (40 bits), upper case."""
    return "".join(secrets.choice(CROCKFORD_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str | None:
    """The canonical (upper-case) code for ``raw``, or None when it cannot be a code.

    Length and alphabet are checked before any lookup; case is ignored and Crockford's
    look-alikes (I, L -> 1; O -> 0) are accepted.
    """
    if len(raw) != CODE_LENGTH or not raw.isascii():
        return None
    code = raw.upper().translate(_DECODE)
    # issuperset walks the string in C: 0.4 µs per scan less than all(... for c in code).
    return code if _CODE_CHARS.issuperset(code) else None


def new_click_id() -> str:
    """A click id: 96 random bits, 16 URL-safe base64 characters."""
    return secrets.token_urlsafe(12)


_CLICK_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def click_ids_literal(click_ids: Sequence[str]) -> str | None:
    """The PostgreSQL array literal of ``click_ids`` (``{a,b}``, to be cast to
    ``text[]``) for a statement written out in full (a simple query holding several
    statements, one round trip); None when ``click_ids`` is empty or one of them is not
    5 or more URL-safe base64 characters (then bind them as a parameter): such a click
    id is never the literal NULL, nor holds a quote, brace, comma, backslash or space."""
    if not click_ids or min(map(len, click_ids)) < 5:
        return None
    joined = ",".join(click_ids)
    if joined.count(",") != len(click_ids) - 1 or not _CLICK_ID_CHARS.issuperset(
        joined.replace(",", "")
    ):
        return None
    return f"{{{joined}}}"


def short_url(origin: str, code: str) -> str:
    """``{origin}/s/{code}`` — the link shown to people and APIs."""
    return f"{origin.rstrip('/')}/s/{code}"


def qr_url(origin: str, code: str) -> str:
    """The short URL as encoded in QR codes: scheme lower case, host and path upper case,
    so that everything after ``https://`` fits the QR alphanumeric mode (ISO/IEC 18004
    §7.4.4: 0-9, A-Z, space, $ % * + - . / :). Hosts are case-insensitive (RFC 3986
    §3.2.2) and codes are too, so the upper-case URL resolves the same."""
    scheme, _, rest = short_url(origin, code).partition("://")
    return f"{scheme.lower()}://{rest.upper()}"


def largest_qr_url(origin: str) -> str:
    """The :func:`qr_url` of ``origin`` that needs the most data bits, so the highest QR
    version (largest symbol) any tag of that origin can get: a code of letters only.
    Digits may go in numeric mode (ISO/IEC 18004 §7.4.3, 10 bits per 3 digits against
    11 per 2 characters in alphanumeric mode), so a code with digits can only encode in
    as many bits or fewer; a size checked on this URL (``too_small_to_scan``) holds for
    every tag of the origin, whereas a code of digits gives the smallest symbol."""
    return qr_url(origin, "Z" * CODE_LENGTH)


def scan_utm(
    campaign_utm: Mapping[str, str],
    *,
    channel: str,
    campaign_slug: str,
    tag_code: str,
    tag_label: str | None,
) -> dict[str, str]:
    """The UTM parameters of a scan: a value the campaign sets wins over the computed
    default (``source`` passerelle, ``medium`` the channel, ``campaign`` its slug); the
    tag's label is more specific than a campaign-wide ``content`` default, and the tag's
    code stands in for both. ``term`` only when the campaign sets one."""
    return {
        "source": campaign_utm.get("source") or "passerelle",
        "medium": campaign_utm.get("medium") or channel,
        "campaign": campaign_utm.get("campaign") or campaign_slug,
        "content": tag_label or campaign_utm.get("content") or tag_code,
        "term": campaign_utm.get("term", ""),
    }


def build_destination(
    destination: str,
    *,
    utm: dict[str, str],
    click_id: str | None,
) -> str:
    """See :func:`_build_destination`. With a click id, the URL around it is computed once
    per (destination, UTM) and cached: a scan then costs two string concatenations.
    ``click_id`` must be URL-safe (as :func:`new_click_id` makes them)."""
    if click_id is None:
        return _build_destination(destination, utm=utm, click_id=None)
    head, tail = _template(destination, tuple(sorted(utm.items())))
    return head + click_id + tail


#: Stands for the click id while a template is built; random, so no URL contains it.
_SENTINEL = "pcidsentinel" + secrets.token_hex(16)


@lru_cache(maxsize=65_536)
def _template(destination: str, utm: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    url = _build_destination(destination, utm=dict(utm), click_id=_SENTINEL)
    head, _, tail = url.rpartition(_SENTINEL)
    return head, tail


def _build_destination(
    destination: str,
    *,
    utm: dict[str, str],
    click_id: str | None,
) -> str:
    """``destination`` with UTM parameters and the click id added.

    ``utm`` maps ``source|medium|campaign|term|content`` to values; a ``utm_*`` parameter
    the destination already sets wins (the marketer chose it). The destination's own query
    is kept byte for byte (valueless flags, its percent-encoding, order: some sites sign
    their query string) and the fragment is kept; new parameters are appended. ``pcid``
    is always set to ``click_id`` when given (a ``pcid`` in the destination is dropped).
    """
    parts = urlsplit(destination)
    query = parts.query
    present = {unquote_plus(pair.partition("=")[0]) for pair in query.split("&")}
    added = [
        (f"utm_{key}", value)
        for key in UTM_KEYS
        if (value := utm.get(key)) and f"utm_{key}" not in present
    ]
    if click_id is not None:
        if CLICK_ID_PARAM in present:
            query = "&".join(
                pair
                for pair in query.split("&")
                if unquote_plus(pair.partition("=")[0]) != CLICK_ID_PARAM
            )
        added.append((CLICK_ID_PARAM, click_id))
    if added:
        query = f"{query}&{urlencode(added)}" if query else urlencode(added)
    # The result goes into a Location header, which must be ASCII: characters outside
    # RFC 3986 (non-ASCII, quotes, angle brackets, braces, pipes...) are percent-encoded
    # as UTF-8 (RFC 3987 §3.1); existing percent-encodings and delimiters are kept.
    return quote(urlunsplit(parts._replace(query=query)), safe=_URI_SAFE)
