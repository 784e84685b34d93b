"""Step "geolocation": where the scan happened, from the honest sources held in memory.

- **IP**: the full client address (in memory only; the stored form stays truncated) is
  looked up in the GeoIP database: ``country`` (ISO 3166-1 alpha-2), ``region`` (ISO
  3166-2 subdivision without the country prefix), ``city`` and the IP position
  ``ip_lat``/``ip_lon`` with its accuracy radius ``ip_accuracy_m`` (metres). Private,
  reserved or unknown addresses, or no database: nothing, and no error.
- **Position of record**: the tag's placement (``geo_source = "placement"``, accuracy
  null: where the marketer put it) over the IP position (``"ip"``, accuracy the IP's).
  A consented browser fix (``"gps"``) comes later, in its own table, and is read in
  place of this through the ``scan_positions`` view.
- **Matched store** ``location_id``: the organization's location whose area covers the
  position of record (boundary inside; overlaps: the smallest area, then the nearest
  point; :class:`geo.geofence.Geofences`), else the tag's location.
- ``far_from_placement``: True when the IP position is farther from the tag's placement
  than the IP accuracy plus :data:`FAR_MARGIN_M`; None when either is unknown. A hint of
  a code copied off its poster (a photo shared online), or of a carrier's far exit.
"""

from __future__ import annotations

from campaigns.scanning.locations import LocationCache
from campaigns.scanning.steps.base import ScanDraft
from geo.distance import farther_than
from geo.geoip import GeoIPReader

#: Slack added to the IP accuracy before a scan counts as far from its placement (metres):
#: mobile carriers route through regional gateways tens of kilometres away.
FAR_MARGIN_M = 50_000.0


class Geolocation:
    """Sets the geolocation fields of :class:`ScanDraft` (see the module docstring) from
    ``geoip`` (None: no IP geolocation) and ``locations`` (None: no store matching by
    area). Pure memory: an MMDB lookup and a geofence index query."""

    name = "geolocation"

    def __init__(self, geoip: GeoIPReader | None, locations: LocationCache | None) -> None:
        self.geoip = geoip
        self.locations = locations

    def __call__(self, draft: ScanDraft, /) -> None:
        ip = draft.request.client.ip
        found = self.geoip.lookup_address(ip) if self.geoip is not None and ip is not None else None
        if found is not None:
            draft.country, draft.region, draft.city = found.country, found.region, found.city
            if found.lat is not None and found.lon is not None:
                draft.ip_lat, draft.ip_lon = found.lat, found.lon
                draft.ip_accuracy_m = found.accuracy_m
        tag = draft.resolution.tag
        placed = tag.placement_lon is not None and tag.placement_lat is not None
        if placed:
            draft.position_lon, draft.position_lat = tag.placement_lon, tag.placement_lat
            draft.geo_source = "placement"
        elif draft.ip_lat is not None:
            draft.position_lon, draft.position_lat = draft.ip_lon, draft.ip_lat
            draft.geo_source = "ip"
            draft.accuracy_m = draft.ip_accuracy_m
        draft.location_id = tag.location_id
        if (
            self.locations is not None
            and draft.position_lon is not None
            and draft.position_lat is not None
        ):
            matched = self.locations.match(
                draft.resolution.campaign.organization_id, draft.position_lon, draft.position_lat
            )
            if matched is not None:
                draft.location_id = matched
        if placed and draft.ip_lat is not None and draft.ip_lon is not None:
            assert tag.placement_lon is not None and tag.placement_lat is not None
            draft.far_from_placement = farther_than(
                (draft.ip_lon, draft.ip_lat),
                (tag.placement_lon, tag.placement_lat),
                (draft.ip_accuracy_m or 0) + FAR_MARGIN_M,
            )
