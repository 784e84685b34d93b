"""NTAG 424 DNA SUN keys: per-tag derivation (versioned) and storage at rest.

A SUN tag (kind ``nfc_sun``) needs two AES-128 keys: the SDM meta-read key (decrypts the
PICCData mirrored in ``e=``) and the SDM file-read key (keys the SDMMAC in ``c=``), see
:mod:`campaigns.payloads.sun`. Either the client supplies them when it creates the tag, or
Passerelle derives them from the organization's NFC master secret (32 random bytes, stored
sealed in ``organizations.nfc_master_secret_encrypted``) and the tag's UID.

Derivations are a table of functions keyed by version (:data:`DERIVATIONS`); the newest is
used for new tags and each tag stores the version that made its keys
(``tags.nfc_key_derivation_version``; NULL for supplied keys). A new derivation is a new
entry, never an edit of an existing one, so the keys of tags already personalised can
always be derived again from their stored version. Verification itself never re-derives:
the keys of every tag are stored sealed (:func:`seal_sun_keys`), so it reads them the same
way whether they were supplied or derived.

Version 1: ``HKDF-SHA256(ikm=master, salt=None, info=b"passerelle/ntag424-sun/v1" ‖ UID,
L=32)`` (RFC 5869); bytes 0-15 are the meta-read key, bytes 16-31 the file-read key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from campaigns.crypto import SecretKeys, seal, unseal

UID_BYTES: Final = 7
KEY_BYTES: Final = 16
MASTER_SECRET_BYTES: Final = 32
#: ``purpose`` of :func:`campaigns.crypto.seal` for each kind of stored secret.
SUN_KEYS_PURPOSE: Final = "ntag424-sun-keys"
MASTER_SECRET_PURPOSE: Final = "nfc-master-secret"  # noqa: S105 - a label, not a secret


@dataclass(frozen=True, slots=True)
class SunKeys:
    """A SUN tag's two AES-128 keys (16 bytes each). Its ``repr`` hides them, so a log
    line or a traceback that shows the object does not show the keys."""

    meta_read: bytes
    file_read: bytes
    #: The SUN verification's per-key state (expanded AES keys), built on the first
    #: tap by :mod:`campaigns.payloads.sun`; never compared, printed nor pickled.
    verifier_state: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.meta_read) != KEY_BYTES or len(self.file_read) != KEY_BYTES:
            raise ValueError("SUN keys are 16 bytes each")

    def __repr__(self) -> str:
        return "SunKeys(<redacted>)"

    def __getstate__(self) -> tuple[bytes, bytes]:
        return (self.meta_read, self.file_read)  # OpenSSL contexts do not pickle

    def __setstate__(self, state: tuple[bytes, bytes]) -> None:
        for name, value in zip(("meta_read", "file_read"), state, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "verifier_state", None)


def _derive_v1(master: bytes, uid: bytes) -> SunKeys:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=2 * KEY_BYTES,
        salt=None,
        info=b"passerelle/ntag424-sun/v1" + uid,
    ).derive(master)
    return SunKeys(meta_read=okm[:KEY_BYTES], file_read=okm[KEY_BYTES:])


#: Version -> derivation ``(master secret, 7-byte UID) -> SunKeys``. Append only.
DERIVATIONS: Final[dict[int, Callable[[bytes, bytes], SunKeys]]] = {1: _derive_v1}


def current_derivation_version() -> int:
    """The version new tags get: the highest in :data:`DERIVATIONS`."""
    return max(DERIVATIONS)


def derive_sun_keys(master: bytes, uid: bytes, *, version: int) -> SunKeys:
    """The keys derivation ``version`` gives the tag with ``uid`` (7 bytes) under the
    organization's ``master`` secret (32 bytes). Raises ``ValueError`` for an unknown
    version or wrong lengths."""
    if len(uid) != UID_BYTES or len(master) != MASTER_SECRET_BYTES:
        raise ValueError("a UID is 7 bytes and a master secret 32 bytes")
    derivation = DERIVATIONS.get(version)
    if derivation is None:
        raise ValueError(f"unknown key derivation version {version}")
    return derivation(master, uid)


def tag_aad(organization_id: int, uid: bytes) -> bytes:
    """``aad`` binding sealed SUN keys to their tag row (organization and UID)."""
    return f"org:{organization_id}|uid:{uid.hex().upper()}".encode()


def seal_sun_keys(
    secret_key: SecretKeys, *, organization_id: int, uid: bytes, keys: SunKeys
) -> bytes:
    """``keys`` sealed for ``tags.nfc_keys_encrypted`` (AES-GCM, bound to the
    organization and UID; see :mod:`campaigns.crypto`)."""
    return seal(
        secret_key,
        SUN_KEYS_PURPOSE,
        keys.meta_read + keys.file_read,
        aad=tag_aad(organization_id, uid),
    )


def unseal_sun_keys(
    secret_key: SecretKeys, *, organization_id: int, uid: bytes, sealed: bytes
) -> SunKeys:
    """The keys of a ``tags`` row from its ``organization_id``, ``nfc_uid`` and
    ``nfc_keys_encrypted`` columns (what a tag cache loads). Raises
    :class:`campaigns.crypto.SealedValueError`."""
    plain = unseal(secret_key, SUN_KEYS_PURPOSE, sealed, aad=tag_aad(organization_id, uid))
    return SunKeys(meta_read=plain[:KEY_BYTES], file_read=plain[KEY_BYTES:])


def seal_master_secret(secret_key: SecretKeys, *, organization_id: int, master: bytes) -> bytes:
    """An organization's NFC master secret sealed for storage."""
    return seal(secret_key, MASTER_SECRET_PURPOSE, master, aad=f"org:{organization_id}".encode())


def unseal_master_secret(secret_key: SecretKeys, *, organization_id: int, sealed: bytes) -> bytes:
    """The master secret sealed by :func:`seal_master_secret`. Raises
    :class:`campaigns.crypto.SealedValueError`."""
    return unseal(secret_key, MASTER_SECRET_PURPOSE, sealed, aad=f"org:{organization_id}".encode())
