"""The first-party visitor cookie of the short-link origin (issue 9, "Visitor journeys").

When an organization sets ``visitor_cookie``, a person's scan of its tags carries or gets
a random visitor id (a version 4 UUID, RFC 9562 §5.4) in the cookie
:data:`VISITOR_COOKIE`; the id is stored on the scan (``scans.cookie_id``) and links the
person's scans across days in attribution journeys.

- Attributes (RFC 6265 §4.1): ``Max-Age`` :data:`VISITOR_MAX_AGE_S` (393 days: at most the 13
  months the CNIL allows a consent-based cookie), ``Path=/``, ``HttpOnly`` (no script
  reads it), ``SameSite=Lax`` (sent on the top-level navigation a scan is), ``Secure``
  when the base URL is https.
- Never extended: a scan carrying a valid id gets no ``Set-Cookie``; the cookie expires
  13 months after it was first set, whatever happens since.
- A value that is not a canonical lower-case version 4 UUID (garbage, a forged or cut
  value) is ignored and replaced, never an error.
- Bots (``bot_reason`` set: ``HEAD``, prefetches, previewers, crawlers) never get a
  cookie: a link previewer is not the person's browser and a prefetched response must
  not store state. A valid cookie they carry (a browser's own prefetch) is still read.
- ``visitor_cookie_consent = ask``: a person's ``GET`` without the cookie is shown the
  consent page (:func:`api.pages.consent_page`); the cookie is set only on "yes"
  (``POST /s/{click_id}/consent``). A "no" sets :data:`REFUSAL_COOKIE` (``no``, for
  :data:`REFUSAL_MAX_AGE_S`, 6 months, the CNIL's recommendation before asking again)
  so the person is not asked at every scan; while it is present no visitor cookie is
  ever set, whatever the organization's setting.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

#: Name of the visitor cookie (its value: the UUID in canonical lower-case form).
VISITOR_COOKIE = "passerelle_vid"
#: Name of the cookie remembering a "no" on the consent page (its value: ``no``).
REFUSAL_COOKIE = "passerelle_consent"
_CANONICAL_V4 = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.ASCII
)
#: Lifetime of the visitor cookie (seconds): 393 days, the shortest 13 calendar months
#: (1 February to 1 March of the year after next, no 29 February between): "at most 13
#: months" whatever the day it is set.
VISITOR_MAX_AGE_S = 393 * 86_400
#: Lifetime of the refusal (seconds): 182 days, about 6 months.
REFUSAL_MAX_AGE_S = 182 * 86_400


def parse_cookie_id(value: str) -> uuid.UUID | None:
    """The visitor id in a cookie value, or None unless it is a canonical (36 characters,
    lower case, hyphenated) version 4 UUID (RFC 9562 §4, §5.4: version nibble 4, variant
    bits 10)."""
    if _CANONICAL_V4.fullmatch(value) is None:
        return None
    return uuid.UUID(value)


def cookie_pairs(header: str) -> Iterator[tuple[str, str]]:
    """The ``(name, value)`` pairs of a ``Cookie`` request header (RFC 6265 §5.4:
    ``name=value`` pairs separated by ``;``), in order, each stripped of surrounding
    spaces (quotes are the caller's to remove)."""
    for part in header.split(";"):
        name, _, value = part.partition("=")
        yield name.strip(), value.strip()


def read_cookies(header: str | None) -> tuple[uuid.UUID | None, bool]:
    """From a ``Cookie`` request header (RFC 6265 §5.4: ``name=value`` pairs separated by
    ``;``): the valid visitor id (the first :data:`VISITOR_COOKIE`; None when absent or
    invalid) and whether :data:`REFUSAL_COOKIE` says ``no``."""
    if not header:
        return None, False
    cookie_id: uuid.UUID | None = None
    seen = refused = False
    for name, value in cookie_pairs(header):
        if name == VISITOR_COOKIE and not seen:
            seen = True
            cookie_id = parse_cookie_id(value.strip('"'))
        elif name == REFUSAL_COOKIE and value == "no":
            refused = True
    return cookie_id, refused


def _attributes(max_age_s: int, secure: bool) -> str:
    return f"; Max-Age={max_age_s}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


class CookieHeaders:
    """``Set-Cookie`` values for one process (``secure``: the base URL is https), the
    attributes built once."""

    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        self._visitor = _attributes(VISITOR_MAX_AGE_S, secure)
        self.refusal = f"{REFUSAL_COOKIE}=no{_attributes(REFUSAL_MAX_AGE_S, secure)}"

    def visitor(self, cookie_id: uuid.UUID) -> str:
        """The ``Set-Cookie`` value setting the visitor id ``cookie_id``."""
        return f"{VISITOR_COOKIE}={cookie_id}{self._visitor}"
