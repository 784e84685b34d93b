"""Settings read from the environment (prefix ``PASSERELLE_``) or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - refused outside development


class Settings(BaseSettings):
    """Every knob of Passerelle, one place.

    Raises ``ValueError`` (at construction) when ``environment`` is not ``development`` and
    ``secret_key`` is still the placeholder or shorter than 32 characters.
    """

    model_config = SettingsConfigDict(env_prefix="PASSERELLE_", env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/passerelle"
    #: Public origin of short links printed in QR codes, e.g. ``https://go.example.com``.
    base_url: str = "http://127.0.0.1:8000"
    #: Keys the daily visitor-id salt and other server-side MACs.
    secret_key: str = DEV_SECRET_KEY

    #: Directory for the scan spool and the tag snapshot (created on start).
    data_dir: Path = Path("var")

    # Scan writer (group commit): flush when this many scans wait or this many seconds passed.
    writer_batch_size: int = Field(default=500, ge=1, le=10_000)
    writer_max_delay_s: float = Field(default=0.002, ge=0.0, le=1.0)

    #: Full reconcile of the in-memory tag cache, in seconds (LISTEN/NOTIFY does the rest).
    cache_reconcile_interval_s: float = Field(default=30.0, gt=0)

    # Per-IP token bucket on public endpoints: sustained rate (requests/second) and burst.
    rate_limit_per_s: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=500, ge=1)
    rate_limit_enabled: bool = True

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
    def short_link_origin(self) -> str:
        """``base_url`` without a trailing slash."""
        return self.base_url.rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` to override."""
    return Settings()
