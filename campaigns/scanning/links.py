"""Tag codes and destination URLs: the pure functions of the scan path."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: Crockford's base32 alphabet (https://www.crockford.com/base32.html): no I, L, O, U.
CROCKFORD_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 8
_CODE_CHARS = frozenset(CROCKFORD_ALPHABET)
#: Crockford decoding: read I and L as 1, O as 0 (people retype printed codes).
_DECODE = str.maketrans({"I": "1", "L": "1", "O": "0"})

#: Query parameter carrying the click id to the destination.
CLICK_ID_PARAM = "pcid"
UTM_KEYS = ("source", "medium", "campaign", "term", "content")


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
    return code if all(c in _CODE_CHARS for c in code) else None


def new_click_id() -> str:
    """A click id: 96 random bits, 16 URL-safe base64 characters."""
    return secrets.token_urlsafe(12)


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


def build_destination(
    destination: str,
    *,
    utm: dict[str, str],
    click_id: str | None,
) -> str:
    """``destination`` with UTM parameters and the click id added.

    ``utm`` maps ``source|medium|campaign|term|content`` to values; a ``utm_*`` parameter
    the destination already sets wins (the marketer chose it). Existing parameters, their
    order and the fragment are kept. ``pcid`` is always set to ``click_id`` when given.
    """
    parts = urlsplit(destination)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in query}
    for key in UTM_KEYS:
        value = utm.get(key)
        if value and f"utm_{key}" not in present:
            query.append((f"utm_{key}", value))
    if click_id is not None:
        query = [(k, v) for k, v in query if k != CLICK_ID_PARAM]
        query.append((CLICK_ID_PARAM, click_id))
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
