"""Webhook signatures, in the manner of Stripe's (``Stripe-Signature``).

Every delivery carries ``Passerelle-Signature: t=<unix seconds>,v1=<hex>`` where the hex
is HMAC-SHA256 (RFC 2104, FIPS 180-4) keyed with the UTF-8 bytes of the webhook's secret
(``whsec_...`` as shown at creation) over the ASCII timestamp, a ``.`` and the raw request
body: ``HMAC(secret, f"{t}." + body)``. A receiver recomputes it over the bytes it
received, compares in constant time, and refuses timestamps older than its tolerance
(e.g. 5 minutes) so a captured request cannot be replayed later. Several ``v1=`` entries
may appear (reserved for secret rotation); one matching entry suffices.

Source: Stripe, "Verify webhook signatures manually"
(https://docs.stripe.com/webhooks#verify-manually).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

#: ``campaigns.crypto`` purpose of sealed signing secrets.
SECRET_PURPOSE: Final = "webhook-signing-secret"  # noqa: S105 - a label
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a label
SIGNATURE_HEADER: Final = "Passerelle-Signature"
EVENT_ID_HEADER: Final = "Passerelle-Event-Id"
EVENT_TYPE_HEADER: Final = "Passerelle-Event-Type"
DELIVERY_ID_HEADER: Final = "Passerelle-Delivery-Id"


def new_secret() -> str:
    """A signing secret: ``whsec_`` and 32 random bytes in URL-safe base64 (43 characters)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_aad(organization_id: int, webhook_id: int) -> bytes:
    """The associated data binding a sealed secret to its row (``campaigns.crypto``)."""
    return f"org:{organization_id}|webhook:{webhook_id}".encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}." + body`` keyed with ``secret`` (UTF-8)."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Passerelle-Signature`` value: ``t=<timestamp>,v1=<hex>``."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"
