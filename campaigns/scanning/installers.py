"""The installer cookie: a phone signed into the dashboard scans as staff (issue 11).

Store staff test every poster they hang; their scans must not count as customers'. A
browser signed into the dashboard gets, besides the session cookie (``Path=/app``, which
a scan never carries), the cookie :data:`INSTALLER_COOKIE`, scoped to the whole origin so
that ``/s/``, ``/n/`` and their upper-case QR forms carry it. A scan carrying a valid one
for the scanned tag's organization is stored with ``scans.internal`` true and left out of
every figure (:mod:`campaigns.scanning.steps.internal`).

- Value (the *token*): ``<organization id>.<user id>.<expires, Unix seconds>.<MAC>``, the
  MAC being :func:`campaigns.crypto.sign` (HMAC-SHA-256, RFC 2104, under a key derived
  per purpose from ``PASSERELLE_SECRET_KEY``) of the three numbers, base64url without
  padding (43 characters). It is checked with the keyring, so a token signed before a
  key rotation still verifies while the old key is in ``PASSERELLE_SECRET_KEY_PREVIOUS``.
  Checking needs no database: the scan path never queries one.
- Attributes (RFC 6265 §4.1): ``Path=/``, ``HttpOnly``, ``SameSite=Lax`` (sent on the
  top-level navigation a scan is), ``Secure`` when the base URL is https, ``Max-Age``
  the token's lifetime: the dashboard's idle timeout, at most :data:`MAX_LIFETIME_S`.
  Every dashboard page a signed-in user loads sets a fresh one, signing out clears it.
- Revocation is by expiry only: a token outlives the end of its session (idle timeout,
  password change, user removed) by at most its lifetime, since a scan cannot ask the
  database whether the session is still open.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
from dataclasses import dataclass
from typing import Final

from campaigns.crypto import SecretKeys, keyring, sign, verify
from campaigns.scanning.cookies import cookie_pairs

#: Name of the installer cookie.
INSTALLER_COOKIE: Final = "passerelle_installer"
#: The cookie's ``name=`` as it appears in a ``Cookie`` header (the scan path's test).
INSTALLER_COOKIE_PREFIX: Final = INSTALLER_COOKIE + "="
#: Longest lifetime of a token (seconds), whatever the dashboard's idle timeout.
MAX_LIFETIME_S: Final = 86_400
#: Clock difference between the process that signs a token and the one that reads it
#: (seconds) tolerated on top of :data:`MAX_LIFETIME_S`.
CLOCK_SKEW_S: Final = 60
#: Longest token read (three bounded numbers and a 43-character MAC fit well).
MAX_TOKEN_CHARS: Final = 128
#: The key derivation's purpose (:func:`campaigns.crypto.sign`).
PURPOSE: Final = "installer-cookie"
#: Verified tokens remembered at most (then the memo starts over).
MEMO_SIZE: Final = 4096


@dataclass(frozen=True, slots=True)
class InstallerMark:
    """What a valid token says: the signed-in user's organization and id, and when the
    token expires (Unix seconds)."""

    organization_id: int
    user_id: int
    expires_at: int


def _mac(secret_key: SecretKeys, head: str) -> str:
    digest = sign(secret_key, PURPOSE, head.encode())
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def installer_token(
    secret_key: SecretKeys, *, organization_id: int, user_id: int, expires_at: dt.datetime
) -> str:
    """The token of user ``user_id`` of ``organization_id``, valid until ``expires_at``
    (aware; kept to the second), signed under the current key of ``secret_key``."""
    head = f"{organization_id}.{user_id}.{int(expires_at.timestamp())}"
    return f"{head}.{_mac(keyring(secret_key).current, head)}"


def read_installer_cookie(header: str) -> str | None:
    """The first :data:`INSTALLER_COOKIE` value of a ``Cookie`` header (RFC 6265 §5.4),
    quotes removed; None when absent."""
    for name, value in cookie_pairs(header):
        if name == INSTALLER_COOKIE:
            return value.strip('"')
    return None


class InstallerTokens:
    """Checks installer tokens under ``secret_key`` (a string or a keyring: previous keys
    verify too). A verified token is remembered (:data:`MEMO_SIZE` at most), so a phone
    scanning poster after poster costs one HMAC per key once, then a dictionary lookup."""

    def __init__(self, secret_key: SecretKeys) -> None:
        self._keys = keyring(secret_key)
        self._verified: dict[str, InstallerMark] = {}

    def verify(self, token: str | None, *, now: dt.datetime) -> InstallerMark | None:
        """The mark of ``token`` when it is well formed, signed under one of the keys, not
        expired at ``now`` (aware) and expiring at most :data:`MAX_LIFETIME_S` (plus
        :data:`CLOCK_SKEW_S`) after ``now``: no token is issued for longer, so a signed
        one with a far expiry (a leaked key's, a bug's) is refused; None otherwise
        (never raises)."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        mark = self._verified.get(token)
        if mark is None:
            mark = self._check(token)
            if mark is None:
                return None
            if len(self._verified) >= MEMO_SIZE:
                self._verified.clear()
            self._verified[token] = mark
        instant = now.timestamp()
        if not instant < mark.expires_at <= instant + MAX_LIFETIME_S + CLOCK_SKEW_S:
            return None
        return mark

    def _check(self, token: str) -> InstallerMark | None:
        head, _, mac = token.rpartition(".")
        numbers = head.split(".")
        if len(numbers) != 3 or not all(n.isascii() and n.isdigit() for n in numbers):
            return None
        if not mac.isascii() or len(mac) != 43:
            return None
        try:
            signature = base64.urlsafe_b64decode(mac + "=")
        except ValueError:
            return None
        # The canonical text only: no leading zeros, one encoding of the MAC.
        if head != ".".join(str(int(n)) for n in numbers) or not hmac.compare_digest(
            base64.urlsafe_b64encode(signature).rstrip(b"=").decode(), mac
        ):
            return None
        if not verify(self._keys, PURPOSE, head.encode(), signature):
            return None
        organization_id, user_id, expires_at = (int(n) for n in numbers)
        return InstallerMark(organization_id, user_id, expires_at)
