"""Settings read from the environment (prefix ``PASSERELLE_``) or a ``.env`` file."""

from __future__ import annotations

import email.policy
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from campaigns.crypto import Keyring
from campaigns.mail import SmtpServer, parse_smtp_url
from geo.forwarded import TrustedProxies

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - refused outside development


class Settings(BaseSettings):
    """Every knob of Passerelle, one place.

    Raises ``ValueError`` (at construction) when ``environment`` is not ``development`` and
    ``secret_key`` is still the placeholder or shorter than 32 characters.
    """

    model_config = SettingsConfigDict(env_prefix="PASSERELLE_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/passerelle"
    #: Public origin of short links printed in QR codes, e.g. ``https://go.example.com``:
    #: scheme http or https, host, optional port; nothing else (see :meth:`_origin_only`).
    base_url: str = "http://127.0.0.1:8000"
    #: Seals secrets at rest (NFC keys, :mod:`campaigns.crypto`) and derives the
    #: visitor-id salt of a day for which the database gave none (normally the salt is
    #: random, shared through the ``visitor_salts`` table). Rotation: :attr:`keyring`.
    secret_key: str = Field(default=DEV_SECRET_KEY, repr=False)
    #: Previous secret keys, comma-separated, newest first: values sealed or signed under
    #: them still open and verify; new ones use ``secret_key``. Empty once
    #: ``passerelle secrets reencrypt`` moved everything to the current key.
    secret_key_previous: str = Field(default="", repr=False)

    #: Run the retention purge inside the service (at most once a day across every
    #: process, :mod:`campaigns.services.retention`); off: run ``passerelle purge``.
    purge_enabled: bool = True
    #: How often each process checks whether the daily purge is due, seconds.
    purge_check_interval_s: float = Field(default=3600.0, gt=0)

    #: Directory for the scan spool and the tag snapshot (created on start).
    data_dir: Path = Path("var")

    # Scan writer (group commit): flush when this many scans wait or this many seconds passed.
    writer_batch_size: int = Field(default=500, ge=1, le=10_000)
    writer_max_delay_s: float = Field(default=0.001, ge=0.0, le=1.0)
    #: Group commits in flight at once per process, each on its own connection: while one
    #: batch waits for PostgreSQL the next is sent (docs/SCALING.md, "Connections").
    writer_connections: int = Field(default=2, ge=1, le=16)
    #: Scans waiting for a batch past which new scans are refused (503, ``Retry-After``).
    writer_queue_max: int = Field(default=10_000, ge=1)
    #: Bytes of spool files on disk past which, with the database away, scans are refused
    #: (503): about 500 bytes a scan, so 1 GiB holds some two million scans.
    spool_max_bytes: int = Field(default=1 << 30, ge=1)
    #: ``statement_timeout`` and ``lock_timeout`` of each spool replay statement, seconds:
    #: a locked or slow ``scans`` table makes replay give up and retry, never stall.
    replay_statement_timeout_s: float = Field(default=5.0, gt=0, le=300)
    #: Seconds shutdown waits for queued scans to commit before spooling the rest; keep it
    #: below the server's graceful shutdown timeout (10 s).
    writer_stop_timeout_s: float = Field(default=5.0, gt=0, le=60)

    #: Full reconcile of the in-memory tag cache, in seconds (LISTEN/NOTIFY does the rest).
    cache_reconcile_interval_s: float = Field(default=30.0, gt=0)

    # Live feed (GET /v1/campaigns/{id}/events): heartbeat comment of an idle stream and
    # safety-net poll (NOTIFY does the rest), seconds; how long committed batches are kept
    # for Last-Event-ID resumes, seconds; events queued per stream before a slow client
    # is dropped (it resumes with Last-Event-ID).
    feed_heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    feed_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    feed_retention_s: float = Field(default=86_400.0, ge=60)
    feed_queue_max: int = Field(default=10_000, ge=1)
    #: Report rollups (campaigns/services/rollups.py): seconds between two passes of the
    #: rollup workers of the deployment (at least nine times the last pass's duration;
    #: 0: no worker in this process), and how long after ``scanned_at`` a
    #: scan may still be committed by the normal path (the worker looks back that far).
    rollup_interval_s: float = Field(default=10.0, ge=0)
    rollup_margin_s: float = Field(default=300.0, ge=1)
    #: Stored attribution credits (campaigns/services/credits.py): seconds between two
    #: refreshes storing the credits of stale and newly settled conversions (0: none in
    #: this process; reports credit those conversions live meanwhile).
    credits_refresh_interval_s: float = Field(default=60.0, ge=0)

    # Per-client token bucket (IPv4, IPv6 /64): sustained rate (requests/second) and burst.
    # On /s/ a scan past it is still redirected, stored with burst = true (never a 429).
    rate_limit_per_s: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=500, ge=1)
    rate_limit_enabled: bool = True

    #: Reverse proxies whose ``X-Forwarded-For`` is believed: CIDR ranges (or bare
    #: addresses), comma-separated. The client address is the socket peer, or, when the
    #: peer is one of these, the right-most address of ``X-Forwarded-For`` that is not
    #: (geo/forwarded.py). ``passerelle serve --forwarded-allow-ips`` sets it too.
    forwarded_allow_ips: str = "127.0.0.1/32,::1/128"

    #: MaxMind DB file (GeoIP2/GeoLite2 City or Country) geolocating scan addresses; None:
    #: scans carry no country, region, city nor IP position. Re-read when replaced.
    geoip_db: Path | None = None
    #: How often the GeoIP file is checked for replacement (seconds).
    geoip_check_interval_s: float = Field(default=60.0, gt=0)

    #: Seconds a client has to send a whole request once it started (slow-client guard).
    request_read_timeout_s: float = Field(default=10.0, gt=0, le=300)

    # QR artwork render pool (campaigns/payloads/rendering.py): worker processes (0: one
    # per CPU), renders waiting per organization and in all, result cache in bytes.
    render_workers: int = Field(default=0, ge=0, le=64)
    render_queue_per_organization: int = Field(default=16, ge=1)
    render_queue_total: int = Field(default=128, ge=1)
    render_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)

    #: Largest request body accepted anywhere, in bytes.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    #: Largest bulk import body (``POST /v1/locations/import``), in bytes.
    max_import_bytes: int = Field(default=33_554_432, ge=1024)
    #: Largest total size of the request headers (names, values, 4 bytes each for ``: ``
    #: and CRLF), in bytes; 431 above.
    max_header_bytes: int = Field(default=16_384, ge=1024)

    # Per-API-key token bucket on the management API (``/v1``): sustained requests per
    # second and burst. Off with ``rate_limit_enabled`` like the public one.
    api_rate_limit_per_s: float = Field(default=20.0, gt=0)
    api_rate_limit_burst: int = Field(default=200, ge=1)
    # Per-address token bucket on the precise-location beacon (``POST
    # /s/{click_id}/location``, one post per scan): requests per second and burst; 429
    # past it. Off with ``rate_limit_enabled``.
    location_rate_limit_per_s: float = Field(default=1.0, gt=0)
    location_rate_limit_burst: int = Field(default=20, ge=1)

    # Webhook deliveries (campaigns/webhooks/delivery.py): the background dispatcher of
    # each server process sends due outbox rows. Attempts before a delivery is ``failed``;
    # the wait before attempt n+1 is min(cap, base * 2^(n-1)) seconds times a random
    # factor in [0.5, 1] (jitter); each POST's timeout; how long a claimed row is kept
    # from other processes (above the timeout); how often the outbox is polled; POSTs in
    # flight per process. ``webhook_delivery_enabled`` false: this process sends nothing
    # (another process, or a later start, will).
    webhook_max_attempts: int = Field(default=12, ge=1, le=100)
    webhook_backoff_base_s: float = Field(default=30.0, gt=0)
    webhook_backoff_cap_s: float = Field(default=21_600.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60)
    webhook_lease_s: float = Field(default=60.0, gt=0)
    webhook_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    webhook_concurrency: int = Field(default=8, ge=1, le=256)
    webhook_delivery_enabled: bool = True
    # Web dashboard (``/app``).
    #: Origin of the dashboard in sign-in links (``{app_url}/app/sign-in/{token}``);
    #: None: ``base_url``.
    app_url: str | None = None
    #: Seconds without a request after which a dashboard session ends (sign in again).
    dashboard_session_idle_s: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    #: Hours a sign-in link (``passerelle users create`` / ``reset``) stays valid.
    dashboard_link_valid_h: int = Field(default=24, ge=1, le=24 * 7)
    #: Failed sign-ins allowed in a row per account and per client address before the
    #: dashboard refuses more for a while; one more attempt is allowed every
    #: ``dashboard_sign_in_refill_s`` seconds.
    dashboard_sign_in_per_account: int = Field(default=5, ge=1)
    dashboard_sign_in_per_address: int = Field(default=20, ge=1)
    dashboard_sign_in_refill_s: float = Field(default=60.0, gt=0)
    #: XYZ tile URL template of the dashboard's maps (``https://tile.example/{z}/{x}/{y}.png``);
    #: None: stores, geofences and heat cells over a plain background.
    map_tiles_url: str | None = None
    #: SMTP server that e-mails sign-in links (``smtps://user:pass@host:465``,
    #: ``smtp://user:pass@host:587`` with STARTTLS, ``smtp://host:25`` for a local relay;
    #: :mod:`campaigns.mail`); None: links are printed or shown instead.
    smtp_url: str | None = Field(default=None, repr=False)
    #: Sender of those e-mails (``Passerelle <noreply@example.com>``); None:
    #: ``Passerelle <noreply@{dashboard host}>``.
    smtp_from: str | None = None
    #: Seconds to wait for the SMTP server (connect and each reply).
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("base_url")
    @classmethod
    def _origin_only(cls, value: str) -> str:
        """Short links are ``{base_url}/s/{code}`` and QR codes upper-case everything after
        the host, so only an origin makes sense: ``http`` or ``https``, a host, an optional
        port, and no path, query, fragment or credentials (a trailing ``/`` is dropped)."""
        parts = urlsplit(value.strip())
        problems = []
        if parts.scheme.lower() not in ("http", "https"):
            problems.append("the scheme must be http or https")
        if not parts.hostname:
            problems.append("it must name a host")
        if parts.username is not None or parts.password is not None:
            problems.append("it must not carry credentials")
        if parts.path not in ("", "/"):
            problems.append(f"it must not have a path (got {parts.path!r})")
        if parts.query or "?" in value:
            problems.append("it must not have a query")
        if parts.fragment or "#" in value:
            problems.append("it must not have a fragment")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            problems.append("its port is invalid")
        if problems:
            raise ValueError(
                "PASSERELLE_BASE_URL must be an origin such as https://go.example.com: "
                + "; ".join(problems)
            )
        # Scheme and host are case-insensitive (RFC 3986 §3.1, §3.2.2): store them lower
        # case, so short links, NDEF records and redirect-loop checks agree.
        origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        return origin

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        """Parsed once at start so a typo is refused then (the message never repeats the
        password); empty means unset."""
        if value is None or not value.strip():
            return None
        parse_smtp_url(value)
        return value.strip()

    @field_validator("smtp_from")
    @classmethod
    def _smtp_from(cls, value: str | None) -> str | None:
        """One address, optionally with a display name (``Passerelle <noreply@x.example>``,
        RFC 5322 §3.4 ``mailbox``), parsed by the stdlib :mod:`email` package with no
        defect; no CR, LF or other control character (it becomes a ``From`` header).
        Empty means unset."""
        if value is None or not value.strip():
            return None
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError(
                "PASSERELLE_SMTP_FROM must be an e-mail address on one line "
                "(no CR, LF or control characters)"
            )
        value = value.strip()
        try:
            header = email.policy.default.header_factory("From", value)
            addresses = header.addresses
            defects = header.defects
        except Exception:  # the parser raises IndexError and others on junk
            addresses, defects = (), (None,)
        if defects or len(addresses) != 1 or not (addresses[0].username and addresses[0].domain):
            raise ValueError(
                "PASSERELLE_SMTP_FROM must be an e-mail address such as noreply@example.com "
                "or Passerelle <noreply@example.com> (a single address)"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _postgresql_only(cls, value: str) -> str:
        """PostgreSQL through psycopg 3 only: ``postgresql+psycopg://...``; a plain
        ``postgresql://`` or ``postgres://`` URL gets the driver added."""
        scheme, sep, rest = value.strip().partition("://")
        if not sep:
            raise ValueError("PASSERELLE_DATABASE_URL must be a URL such as postgresql://HOST/DB")
        if scheme.lower() in ("postgresql", "postgres", "postgresql+psycopg"):
            return f"postgresql+psycopg://{rest}"
        raise ValueError(
            "PASSERELLE_DATABASE_URL must be a PostgreSQL URL (postgresql://... or "
            f"postgresql+psycopg://...), not {scheme!r}"
        )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _cidr_ranges(cls, value: str) -> str:
        """Comma-separated CIDR ranges; raises ``ValueError`` naming the bad one."""
        ranges = [part.strip() for part in value.split(",") if part.strip()]
        try:
            TrustedProxies(ranges)
        except ValueError as exc:
            raise ValueError(
                f"PASSERELLE_FORWARDED_ALLOW_IPS must be comma-separated CIDR ranges: {exc}"
            ) from None
        return ",".join(ranges)

    @property
    def trusted_proxies(self) -> TrustedProxies:
        """:attr:`forwarded_allow_ips` parsed."""
        ranges = self.forwarded_allow_ips
        return TrustedProxies(ranges.split(",") if ranges else [])

    @model_validator(mode="after")
    def _lease_outlasts_timeout(self) -> Settings:
        """A claimed webhook delivery must stay claimed for its whole attempt, else a
        second process would send it at the same time."""
        if self.webhook_lease_s <= self.webhook_timeout_s * 2:
            raise ValueError(
                "PASSERELLE_WEBHOOK_LEASE_S must be more than twice PASSERELLE_WEBHOOK_TIMEOUT_S"
            )
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if self.environment != "development" and (
            self.secret_key == DEV_SECRET_KEY or len(self.secret_key) < 32
        ):
            raise ValueError(
                "PASSERELLE_SECRET_KEY must be set to a random string of 32+ characters "
                "outside development"
            )
        return self

    @property
    def allows_private_webhooks(self) -> bool:
        """Webhook URLs may be plain http and reach private, loopback and link-local
        addresses only in ``development`` and ``test`` (SSRF guard otherwise)."""
        return self.environment in ("development", "test")

    @property
    def dashboard_origin(self) -> str:
        """Origin of the dashboard's sign-in links: ``app_url``, else ``base_url``."""
        return (self.app_url or self.base_url).rstrip("/")

    @property
    def smtp_server(self) -> SmtpServer | None:
        """:attr:`smtp_url` parsed, or None when sign-in links are not e-mailed."""
        if self.smtp_url is None:
            return None
        return parse_smtp_url(self.smtp_url, timeout_s=self.smtp_timeout_s)

    @property
    def mail_sender(self) -> str:
        """``From`` of the e-mails: :attr:`smtp_from`, else ``Passerelle
        <noreply@{host of dashboard_origin}>``."""
        if self.smtp_from:
            return self.smtp_from
        host = urlsplit(self.dashboard_origin).hostname or "localhost"
        return f"Passerelle <noreply@{host}>"

    @property
    def keyring(self) -> Keyring:
        """:attr:`secret_key` and :attr:`secret_key_previous` as a keyring."""
        previous = tuple(k.strip() for k in self.secret_key_previous.split(",") if k.strip())
        return Keyring(self.secret_key, previous)

    @property
    def short_link_origin(self) -> str:
        """``base_url`` without a trailing slash."""
        return self.base_url.rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` to override."""
    return Settings()
