"""Step "internal": a scan from a phone signed into the dashboard is staff's (issue 11)."""

from __future__ import annotations

from campaigns.scanning.installers import (
    INSTALLER_COOKIE_PREFIX,
    InstallerTokens,
    read_installer_cookie,
)
from campaigns.scanning.steps.base import ScanDraft


class Internal:
    """Sets ``internal`` when the request carries a valid installer cookie
    (:mod:`campaigns.scanning.installers`) of the scanned tag's organization (its
    campaign's); a token of another organization, forged, cut or expired leaves the scan
    a customer's. A request without a ``Cookie`` header, or whose header does not name
    the cookie, costs one test (a substring search); a valid token is checked by HMAC
    once, then remembered."""

    name = "internal"

    def __init__(self, tokens: InstallerTokens | None) -> None:
        self.tokens = tokens

    def __call__(self, draft: ScanDraft, /) -> None:
        cookie = draft.request.cookie
        if cookie is None or self.tokens is None or INSTALLER_COOKIE_PREFIX not in cookie:
            return
        mark = self.tokens.verify(read_installer_cookie(cookie), now=draft.request.received_at)
        if mark is not None and mark.organization_id == draft.resolution.campaign.organization_id:
            draft.internal = True
