"""The value the scan steps fill in, and what a step is (see the package docstring)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from campaigns.scanning.installers import InstallerTokens
from campaigns.scanning.locations import LocationCache
from campaigns.scanning.organizations import CookieSettings
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.request import ScanRequest
from campaigns.scanning.resolution import Resolution
from campaigns.scanning.rules import RuleCache
from campaigns.scanning.visitors import VisitorIds
from geo.geoip import GeoIPReader


@dataclass(slots=True)
class ScanDraft:
    """A scan being built. ``request`` and ``resolution`` are given and read-only;
    ``channel`` is ``qr`` or ``nfc``; every other field starts empty and is set by the
    step that owns it (named in brackets):

    - ``device_type``, ``os``, ``browser`` [device and bot]: as :class:`Device`;
    - ``bot_reason`` [device and bot]: ``head``, ``prefetch``, ``previewer``, ``scanner``,
      ``crawler`` or ``no_user_agent``, the first that applies; None for a person;
    - ``visitor_id`` [visitor]: 16 bytes;
    - ``cookie_id``, ``cookie_action`` [visitor cookie]: the first-party visitor id
      (read from the request, or new), and ``set`` (answer with ``Set-Cookie``), ``ask``
      (the consent page asks first) or None (nothing to send);
    - ``burst`` [burst]: True past the per-client rate (still a person's scan);
    - ``country``, ``region``, ``city``, ``ip_lat``, ``ip_lon``, ``ip_accuracy_m``,
      ``position_lat``, ``position_lon``, ``geo_source``, ``accuracy_m``,
      ``location_id``, ``far_from_placement`` [geolocation]: as the ``Scan`` model;
    - ``destination``, ``rule_id``, ``variant`` [rules]: the destination a redirect rule
      chose (None: the resolution's), the rule and the split variant.
    - ``internal`` [internal]: True for a phone signed into the dashboard of the tag's
      organization (staff testing a poster): the scan counts in no figure.
    - ``nfc_counter``, ``nfc_verification`` [NFC verification]: for ``nfc_sun`` tags, the
      SUN message's read counter (0..16 777 215) when it is authentic, and the verdict:
      ``invalid``, or None with a counter (its replay verdict is decided at commit).
    """

    request: ScanRequest
    resolution: Resolution
    channel: str
    device_type: str | None = None
    os: str | None = None
    browser: str | None = None
    bot_reason: str | None = None
    visitor_id: bytes | None = None
    cookie_id: uuid.UUID | None = None
    cookie_action: str | None = None
    burst: bool = False
    country: str | None = None
    region: str | None = None
    city: str | None = None
    ip_lat: float | None = None
    ip_lon: float | None = None
    ip_accuracy_m: int | None = None
    position_lat: float | None = None
    position_lon: float | None = None
    geo_source: str | None = None
    accuracy_m: float | None = None
    location_id: int | None = None
    far_from_placement: bool | None = None
    destination: str | None = None
    rule_id: int | None = None
    variant: str | None = None
    nfc_counter: int | None = None
    nfc_verification: str | None = None
    internal: bool = False

    @property
    def is_bot(self) -> bool:
        """True when the scan is not a person's (``bot_reason`` is set)."""
        return self.bot_reason is not None


@dataclass(frozen=True, slots=True)
class StepContext:
    """The per-process, in-memory state steps may read: visitor salts, the per-client
    rate limiter (None: no burst flagging), the GeoIP database (None: no IP
    geolocation), the stores' geofences (None: scans keep their tag's location), the
    redirect rules (None: no rules), the organizations' visitor-cookie settings
    (None: no cookie) and the installer-cookie checker (None: no scan is internal)."""

    visitors: VisitorIds
    limiter: RateLimiter | None
    geoip: GeoIPReader | None = None
    locations: LocationCache | None = None
    rules: RuleCache | None = None
    cookies: CookieSettings | None = None
    installers: InstallerTokens | None = None


class ScanStep(Protocol):
    """One named step: ``name`` (for logs and docs) and a call that fills the draft."""

    name: str

    def __call__(self, draft: ScanDraft, /) -> None: ...
