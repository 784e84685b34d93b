"""API key scopes: what a management API key may do (issue 12).

- ``campaigns:read``: campaigns, tags, redirect rules, locations, QR, NDEF and SDM reads,
  print sheets;
- ``campaigns:write``: their writes, bulk tags, location imports;
- ``conversions:write``: conversions and refunds;
- ``reports:read``: stats, attribution, scans, heatmap, exports, live events, the
  conversion list;
- ``admin``: organization settings, API keys, webhooks, privacy, audit; implies every
  other scope.

A key holds at least one scope. Keys issued before scopes existed were given ``admin``
by the migration that introduced them (``20261206_1530_api_key_scopes_audit``), so they
keep working with every scope; see docs/DECISIONS.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

Scope = Literal["campaigns:read", "campaigns:write", "conversions:write", "reports:read", "admin"]

CAMPAIGNS_READ: Final = "campaigns:read"
CAMPAIGNS_WRITE: Final = "campaigns:write"
CONVERSIONS_WRITE: Final = "conversions:write"
REPORTS_READ: Final = "reports:read"
ADMIN: Final = "admin"

#: Every scope, in the order documented.
SCOPES: Final[tuple[str, ...]] = (
    CAMPAIGNS_READ,
    CAMPAIGNS_WRITE,
    CONVERSIONS_WRITE,
    REPORTS_READ,
    ADMIN,
)


def grants(held: Iterable[str], required: str) -> bool:
    """Whether a key holding the scopes ``held`` may act under ``required``: it holds
    ``required`` itself or ``admin`` (which implies all)."""
    held = frozenset(held)
    return required in held or ADMIN in held
