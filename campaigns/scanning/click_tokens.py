"""Signed click tokens: what the consent page's requests carry to prove their scan.

The consent page (:func:`api.pages.consent_page`) posts back to the short-link origin
(the location beacon, the cookie answer) about a scan that may not be in ``scans`` yet:
spooled while the database was away, in another process's group commit, or committed a
moment after the page was answered. So the page carries, next to the click id, a token
``<organization_id>.<scanned_at, Unix ms>.<MAC>`` where the MAC is HMAC-SHA-256 (RFC
2104) over the purpose, the click id, those two numbers and any bound value (the
cookie answer's destination), truncated to 128 bits, base64url without padding, under a
key derived from ``PASSERELLE_SECRET_KEY``. A valid token is a scan this service issued:
its organization and time are read from it, without the database.

Rotation: tokens are signed under the current secret key and verified under it or any
previous one (:class:`campaigns.crypto.Keyring`), so a page served before a restart
with a new key still posts back a token that verifies.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

from campaigns.crypto import SecretKeys, keyring
from campaigns.scanning.recent import RecentClick

#: Longest token read (organization id, milliseconds and a 22-character MAC fit well).
MAX_TOKEN_CHARS = 96


def _token_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"passerelle click tokens v1", hashlib.sha256).digest()


class ClickTokens:
    """Signs click tokens under the current key of ``secret_key`` (the settings' secret
    key or keyring) and checks them under the current and previous keys."""

    def __init__(self, secret_key: SecretKeys) -> None:
        self._keys = tuple(_token_key(key) for key in keyring(secret_key).all)

    @staticmethod
    def _mac(key: bytes, purpose: str, click_id: str, head: str, bound: str) -> str:
        message = "\n".join((purpose, click_id, head, bound)).encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(
        self,
        purpose: str,
        *,
        click_id: str,
        organization_id: int,
        scanned_at: dt.datetime,
        bound: str = "",
    ) -> str:
        """The token of the scan ``click_id`` for ``purpose`` (``location``, ``consent``),
        binding ``bound`` too."""
        head = f"{organization_id}.{int(scanned_at.timestamp() * 1000)}"
        return f"{head}.{self._mac(self._keys[0], purpose, click_id, head, bound)}"

    def verify(
        self, purpose: str, token: str | None, *, click_id: str, bound: str = ""
    ) -> RecentClick | None:
        """The scan's organization and time (aware UTC) when ``token`` is valid for
        ``purpose``, ``click_id`` and ``bound``; None otherwise (never raises)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        org, _, rest = token.partition(".")
        millis, _, mac = rest.partition(".")
        if not (org.isdigit() and millis.isdigit() and org.isascii() and millis.isascii()):
            return None
        head = f"{org}.{millis}"
        if not mac.isascii() or not any(
            hmac.compare_digest(mac, self._mac(key, purpose, click_id, head, bound))
            for key in self._keys
        ):
            return None
        try:
            at = dt.datetime.fromtimestamp(int(millis) / 1000, dt.UTC)
        except (OverflowError, ValueError, OSError):
            return None
        return RecentClick(int(org), at)
