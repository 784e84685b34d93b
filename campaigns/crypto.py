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

Rotation: a :class:`Keyring` holds the current secret key and the previous ones
(``PASSERELLE_SECRET_KEY_PREVIOUS``). Values are sealed under the current key and opened
under whichever key opens them, current first; ``passerelle secrets reencrypt``
(:mod:`campaigns.services.secrets`) re-seals every stored value under the current key,
after which the previous keys can be dropped. Every function taking a ``secret_key``
accepts a plain string (a keyring without previous keys) or a :class:`Keyring`.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Keyring:
    """The current secret key (every new seal, every new signature) and the previous
    ones (still opened and verified, newest first). The ``repr`` shows no key."""

    current: str
    previous: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"Keyring(previous={len(self.previous)})"

    @property
    def all(self) -> tuple[str, ...]:
        """Current key first, then the previous ones."""
        return (self.current, *self.previous)


#: A secret key (string) or a :class:`Keyring`, as every function of this module takes.
SecretKeys = str | Keyring


def keyring(secret_key: SecretKeys) -> Keyring:
    """``secret_key`` as a :class:`Keyring` (a string is a keyring of one key)."""
    return secret_key if isinstance(secret_key, Keyring) else Keyring(secret_key)


@lru_cache(maxsize=32)
def _aead(secret_key: str, purpose: str) -> AESGCM:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"passerelle/at-rest/v1/" + purpose.encode(),
    ).derive(secret_key.encode())
    return AESGCM(key)


def seal(secret_key: SecretKeys, purpose: str, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` for storage (``len(plaintext) + 29`` bytes),
    under the current key."""
    nonce = os.urandom(NONCE_BYTES)
    current = keyring(secret_key).current
    return FORMAT_VERSION + nonce + _aead(current, purpose).encrypt(nonce, plaintext, aad)


def unseal_with_age(
    secret_key: SecretKeys, purpose: str, sealed: bytes, *, aad: bytes
) -> tuple[bytes, bool]:
    """The plaintext of :func:`seal`'s output and whether it opened under the current key
    (False: under a previous one, so it should be re-sealed). Raises
    :class:`SealedValueError` when no key opens it with this ``purpose`` and ``aad``."""
    if len(sealed) < OVERHEAD_BYTES or sealed[:1] != FORMAT_VERSION:
        raise SealedValueError("sealed value has an unknown format")
    nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
    for index, key in enumerate(keyring(secret_key).all):
        try:
            return _aead(key, purpose).decrypt(nonce, ciphertext, aad), index == 0
        except InvalidTag:
            continue
    raise SealedValueError("sealed value does not open with this key and row")


def unseal(secret_key: SecretKeys, purpose: str, sealed: bytes, *, aad: bytes) -> bytes:
    """The plaintext of :func:`seal`'s output, opened under the current key or a previous
    one. Raises :class:`SealedValueError` when it does not open with any key, this
    ``purpose`` and ``aad``."""
    return unseal_with_age(secret_key, purpose, sealed, aad=aad)[0]


def sign(secret_key: SecretKeys, purpose: str, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of ``message`` under the current key, derived per
    ``purpose`` (HKDF as for sealing, ``info`` ``passerelle/sign/v1/`` + purpose)."""
    return hmac.new(_mac_key(keyring(secret_key).current, purpose), message, "sha256").digest()


def verify(secret_key: SecretKeys, purpose: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is :func:`sign`'s for ``message`` under the current key or a
    previous one (constant-time comparisons)."""
    return any(
        hmac.compare_digest(hmac.new(_mac_key(key, purpose), message, "sha256").digest(), signature)
        for key in keyring(secret_key).all
    )


@lru_cache(maxsize=32)
def _mac_key(secret_key: str, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"passerelle/sign/v1/" + purpose.encode(),
    ).derive(secret_key.encode())
