"""The scan path: resolve a code from memory, build the scan in named steps, record it.

One :class:`ScanService` per server process ties together the parts, each in its own
module: upkeep of the in-memory state (:mod:`~campaigns.scanning.runtime`: tag cache,
listener, reconcile, snapshot and journal), visitor ids and salts
(:mod:`~campaigns.scanning.visitors`), resolution
(:mod:`~campaigns.scanning.resolution`), the scan steps
(:mod:`~campaigns.scanning.steps`) and the writer. Nothing here waits on the database
except :meth:`ScanService.record`, which waits for the group commit (or the spool).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from campaigns.crypto import SecretKeys, keyring
from campaigns.scanning.cache import TagCache
from campaigns.scanning.click_tokens import ClickTokens
from campaigns.scanning.cookies import CookieHeaders
from campaigns.scanning.device import parse_device
from campaigns.scanning.hooked import HookedOrganizations
from campaigns.scanning.installers import InstallerTokens
from campaigns.scanning.links import build_destination, new_click_id, scan_utm
from campaigns.scanning.locations import LocationCache
from campaigns.scanning.organizations import CookieSettings
from campaigns.scanning.ratelimit import RateLimiter
from campaigns.scanning.recent import RecentClick, RecentClicks
from campaigns.scanning.record import ScanRecord
from campaigns.scanning.request import ScanRequest
from campaigns.scanning.resolution import Resolution, resolve
from campaigns.scanning.rules import RuleCache
from campaigns.scanning.runtime import CacheRuntime
from campaigns.scanning.steps import ScanDraft, StepContext, build_steps, run_steps
from campaigns.scanning.visitors import SALT_FILE, VisitorIds
from campaigns.scanning.writer import ScanWriter, WriterOptions
from geo.geoip import GeoIPReader

__all__ = ["Resolution", "ScanService"]

_WARM_UP_AGENT = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/131.0 Mobile"


class ScanService:
    """Per-process scan runtime. ``conninfo`` is a libpq URL; ``data_dir`` holds the spool
    (``spool/``), the tag snapshot and journal, and the cached visitor salts;
    ``limiter`` flags scans past the per-client rate as ``burst`` (None: never);
    ``geoip`` geolocates client addresses (None: no IP geolocation); ``secure_cookies``
    marks the visitor cookie ``Secure`` (the base URL is https)."""

    def __init__(
        self,
        *,
        conninfo: str,
        data_dir: Path,
        secret_key: SecretKeys,
        limiter: RateLimiter | None = None,
        geoip: GeoIPReader | None = None,
        batch_size: int = 500,
        max_delay_s: float = 0.001,
        reconcile_interval_s: float = 30.0,
        writer_options: WriterOptions | None = None,
        secure_cookies: bool = False,
    ) -> None:
        self.cache = TagCache(secret_key=secret_key)
        self.locations = LocationCache()
        self.rules = RuleCache()
        #: Organizations with webhooks: the writer skips the outbox for the others.
        self.hooked = HookedOrganizations()
        #: The organizations' visitor-cookie settings (those with the cookie on).
        self.cookies = CookieSettings()
        #: ``Set-Cookie`` values of the visitor cookie and of a refusal.
        self.cookie_headers = CookieHeaders(secure=secure_cookies)
        #: Tokens the consent page's requests carry (beacon, cookie answer).
        self.click_tokens = ClickTokens(secret_key)
        #: Checks the installer cookie of phones signed into the dashboard (every key).
        self.installers = InstallerTokens(secret_key)
        self.visitors = VisitorIds(data_dir / SALT_FILE, secret_key=keyring(secret_key).current)
        self.runtime = CacheRuntime(
            conninfo=conninfo,
            data_dir=data_dir,
            cache=self.cache,
            visitors=self.visitors,
            locations=self.locations,
            rules=self.rules,
            hooked=self.hooked,
            cookies=self.cookies,
            reconcile_interval_s=reconcile_interval_s,
        )
        self.writer = ScanWriter(
            conninfo,
            data_dir / "spool",
            batch_size=batch_size,
            max_delay_s=max_delay_s,
            hooked=self.hooked,
            **(writer_options or {}),
        )
        self.limiter = limiter
        self.geoip = geoip
        #: Click ids shown the consent page, for the location beacon.
        self.recent_clicks = RecentClicks()
        self.steps = build_steps(
            StepContext(
                visitors=self.visitors,
                limiter=limiter,
                geoip=geoip,
                locations=self.locations,
                rules=self.rules,
                cookies=self.cookies,
                installers=self.installers,
            )
        )

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """True when scans can be answered: tags are in memory (from the database or a
        snapshot) and the writer accepts scans (it spools while the database is away)."""
        loaded = self.cache.loaded_from_db or self.cache.loaded_from_snapshot
        return loaded and self.writer.running

    @property
    def ready(self) -> bool:
        """True when the tag cache came from the database and the database answers."""
        return self.cache.loaded_from_db and self.runtime.listening and self.writer.database_ok

    async def start(self) -> None:
        """Load salts and tags (from the database, else from the local copies), start the
        writer and the upkeep tasks. Never raises for a database outage."""
        # ua-parser and crawlerdetect compile their patterns on first use (about a
        # second): pay it now rather than in the first phone's redirect.
        parse_device(_WARM_UP_AGENT)
        await self.runtime.start()
        await self.writer.start()

    async def stop(self) -> None:
        """Stop background tasks and drain the writer."""
        await self.runtime.stop()
        await self.writer.stop()

    async def reload(
        self,
        *,
        tag_ids: Iterable[int] = (),
        campaign_ids: Iterable[int] = (),
        rule_ids: Iterable[int] = (),
        webhook_ids: Iterable[int] = (),
        organization_ids: Iterable[int] = (),
    ) -> None:
        """Re-read rows this process just changed (read-your-writes before the NOTIFY)."""
        await self.runtime.reload(
            tag_ids=tag_ids,
            campaign_ids=campaign_ids,
            rule_ids=rule_ids,
            webhook_ids=webhook_ids,
            organization_ids=organization_ids,
        )

    # -- the hot path -------------------------------------------------------------------

    def resolve(self, request: ScanRequest) -> Resolution | None:
        """The resolution of the request's code at its time (see
        :func:`~campaigns.scanning.resolution.resolve`). Pure memory; never raises."""
        return resolve(self.cache, request.code, now=request.received_at)

    def build(self, request: ScanRequest, resolution: Resolution) -> ScanDraft:
        """Run the scan steps for a request that gets a redirect. Pure memory."""
        tag = resolution.tag
        channel = request.channel or ("qr" if tag.kind == "qr" else "nfc")
        return run_steps(self.steps, ScanDraft(request, resolution, channel))

    async def record(
        self, request: ScanRequest, resolution: Resolution
    ) -> tuple[str, ScanRecord, str | None]:
        """Build the scan, record it durably; return the URL to redirect to (with UTM
        parameters and the click id), the visitor cookie's action (``set``: answer with
        :meth:`CookieHeaders.visitor` of the record's ``cookie_id``; ``ask``: the consent
        page asks first; None: nothing) and the record as stored (an NFC tap's
        ``nfc_verification`` decided by the writer's commit, or None when it was
        spooled: see :func:`~campaigns.scanning.nfc.is_blocked`). Raises what
        :meth:`ScanWriter.submit` raises when neither the database nor the spool took
        it (:class:`~campaigns.scanning.writer.WriterOverloaded` past the writer's
        bounds)."""
        assert resolution.destination is not None
        draft = self.build(request, resolution)
        tag, campaign = resolution.tag, resolution.campaign
        click_id = new_click_id()
        utm = scan_utm(
            campaign.utm,
            channel=draft.channel,
            campaign_slug=campaign.slug,
            tag_code=tag.code,
            tag_label=tag.label,
        )
        destination = draft.destination or resolution.destination
        url = build_destination(destination, utm=utm, click_id=click_id)
        # A tap refused under nfc_invalid_tap = block gets the 403 page, not the redirect:
        # "blocked" now for an invalid one (the steps decide no other verdict), at the
        # commit for a replayed one (block_if_replayed).
        blocking = campaign.nfc_invalid_tap == "block"
        outcome = (
            "blocked" if blocking and draft.nfc_verification == "invalid" else resolution.outcome
        )
        record = ScanRecord(
            click_id=click_id,
            organization_id=campaign.organization_id,
            campaign_id=campaign.id,
            tag_id=tag.id,
            scanned_at=request.received_at,
            channel=draft.channel,
            method=request.method,
            outcome=outcome,
            destination=url,
            user_agent=request.user_agent,
            device_type=draft.device_type,
            os=draft.os,
            browser=draft.browser,
            is_bot=draft.is_bot,
            ip_truncated=request.client.truncated,
            visitor_id=draft.visitor_id,
            cookie_id=draft.cookie_id,
            bot_reason=draft.bot_reason,
            burst=draft.burst,
            nfc_counter=draft.nfc_counter,
            nfc_verification=draft.nfc_verification,
            country=draft.country,
            region=draft.region,
            city=draft.city,
            ip_lat=draft.ip_lat,
            ip_lon=draft.ip_lon,
            ip_accuracy_m=draft.ip_accuracy_m,
            position_lat=draft.position_lat,
            position_lon=draft.position_lon,
            geo_source=draft.geo_source,
            accuracy_m=draft.accuracy_m,
            location_id=draft.location_id,
            far_from_placement=draft.far_from_placement,
            rule_id=draft.rule_id,
            variant=draft.variant,
            internal=draft.internal,
            block_if_replayed=blocking
            and draft.nfc_counter is not None
            and draft.nfc_verification is None,
        )
        stored = await self.writer.submit(record)
        if self.asks_location(stored, resolution):
            self.recent_clicks.add(
                click_id, RecentClick(campaign.organization_id, request.received_at)
            )
        return url, stored, draft.cookie_action

    @staticmethod
    def asks_location(record: ScanRecord, resolution: Resolution) -> bool:
        """True when the scan gets the consent page asking the browser's position instead
        of a redirect: its campaign says ``precise_location = ask`` and it is a person's
        ``GET`` (bots, previewers and ``HEAD`` go straight to the destination)."""
        return (
            resolution.campaign.precise_location == "ask"
            and resolution.outcome == "redirect"
            and record.method == "GET"
            and not record.is_bot
        )
