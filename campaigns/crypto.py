"""Secrets at rest: AES-256-GCM under keys derived from ``PASSERELLE_SECRET_KEY``.

Used for the secrets Passerelle must be able to read back (NTAG 424 DNA SUN keys, the
per-organization NFC master secret), never for what only needs comparing (API keys are
hashed instead).

- Key: HKDF-SHA256 (RFC 5869) of the UTF-8 ``secret_key``, no salt, ``info`` =
  ``b"passerelle/at-rest/v1/" + purpose``, 32 bytes; one key per purpose, so a sealed
  value of one kind can never be opened as another.
- Sealed value: ``0x01`` (format version) ‖ 96-bit random nonce ‖ AES-GCM ciphertext and
  16-byte tag (NIST SP 800-38D). ``aad`` (associated data, authenticated but not stored)
  binds the value to its row, e.g. ``b"org:12|uid:04DE5F1EACC040"``, so a ciphertext
  copied into another row does not open.

Changing ``PASSERELLE_SECRET_KEY`` makes existing sealed values unreadable: rotate it only
with a re-encryption of those columns.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION: Final = b"\x01"
NONCE_BYTES: Final = 12
#: Size of a sealed value beyond its plaintext: version, nonce, GCM tag.
OVERHEAD_BYTES: Final = 1 + NONCE_BYTES + 16


class SealedValueError(Exception):
    """A sealed value did not open: wrong secret key, purpose or row (``aad``), or damaged.

    The message never contains the value nor any key."""


@lru_cache(maxsize=32)
def _aead(secret_key: str, purpose: str) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"passerelle/at-rest/v1/" + purpose.encode(),
    ).derive(secret_key.encode())
    return AESGCM(key)


def seal(secret_key: str, purpose: str, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` for storage (``len(plaintext) + 29`` bytes)."""
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_VERSION + nonce + _aead(secret_key, purpose).encrypt(nonce, plaintext, aad)


def unseal(secret_key: str, purpose: str, sealed: bytes, *, aad: bytes) -> bytes:
    """The plaintext of :func:`seal`'s output. Raises :class:`SealedValueError` when it
    does not open with this ``secret_key``, ``purpose`` and ``aad``."""
    if len(sealed) < OVERHEAD_BYTES or sealed[:1] != FORMAT_VERSION:
        raise SealedValueError("sealed value has an unknown format")
    nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    try:
        return _aead(secret_key, purpose).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise SealedValueError("sealed value does not open with this key and row") from None
