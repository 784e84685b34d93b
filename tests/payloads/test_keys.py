"""Secrets at rest (AES-GCM under HKDF of the secret key) and SUN key derivation versions."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from campaigns import crypto
from campaigns.payloads import keys
from campaigns.payloads.keys import SunKeys

SECRET = "s" * 40
UID = bytes.fromhex("04A1B2C3D4E5F6")


def test_seal_round_trip_and_overhead() -> None:
    plaintext = os.urandom(32)
    sealed = crypto.seal(SECRET, "p", plaintext, aad=b"row-1")
    assert len(sealed) == 32 + crypto.OVERHEAD_BYTES
    assert sealed[:1] == b"\x01"
    assert plaintext not in sealed
    assert crypto.unseal(SECRET, "p", sealed, aad=b"row-1") == plaintext
    # A fresh nonce each time: the same plaintext never seals to the same bytes.
    assert crypto.seal(SECRET, "p", plaintext, aad=b"row-1") != sealed


@pytest.mark.parametrize(
    ("secret", "purpose", "aad"),
    [("t" * 40, "p", b"row-1"), (SECRET, "q", b"row-1"), (SECRET, "p", b"row-2")],
    ids=["other-secret-key", "other-purpose", "other-row"],
)
def test_sealed_value_opens_only_with_its_key_purpose_and_row(
    secret: str, purpose: str, aad: bytes
) -> None:
    sealed = crypto.seal(SECRET, "p", b"key material", aad=b"row-1")
    with pytest.raises(crypto.SealedValueError) as caught:
        crypto.unseal(secret, purpose, sealed, aad=aad)
    assert "key material" not in str(caught.value)


def test_damaged_sealed_values_do_not_open() -> None:
    sealed = crypto.seal(SECRET, "p", b"key material", aad=b"a")
    for index in (0, 5, len(sealed) - 1):
        damaged = bytearray(sealed)
        damaged[index] ^= 0x01
        with pytest.raises(crypto.SealedValueError):
            crypto.unseal(SECRET, "p", bytes(damaged), aad=b"a")
    with pytest.raises(crypto.SealedValueError):
        crypto.unseal(SECRET, "p", sealed[:20], aad=b"a")


def test_at_rest_key_is_the_documented_hkdf() -> None:
    """Documented: AES-256-GCM key = HKDF-SHA256(secret_key, info=prefix + purpose)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"passerelle/at-rest/v1/p"
    ).derive(SECRET.encode())
    sealed = crypto.seal(SECRET, "p", b"hello", aad=b"x")
    assert AESGCM(key).decrypt(sealed[1:13], sealed[13:], b"x") == b"hello"


def test_derivation_v1_is_the_documented_hkdf() -> None:
    master = os.urandom(32)
    okm = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"passerelle/ntag424-sun/v1" + UID
    ).derive(master)
    derived = keys.derive_sun_keys(master, UID, version=1)
    assert derived == SunKeys(meta_read=okm[:16], file_read=okm[16:])
    assert derived.meta_read != derived.file_read
    assert keys.derive_sun_keys(master, bytes.fromhex("04A1B2C3D4E5F7"), version=1) != derived
    assert keys.derive_sun_keys(os.urandom(32), UID, version=1) != derived


def test_a_new_derivation_version_leaves_older_tags_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    master = os.urandom(32)
    before = keys.derive_sun_keys(master, UID, version=1)
    assert keys.current_derivation_version() == 1

    def v2(master: bytes, uid: bytes) -> SunKeys:
        return SunKeys(meta_read=uid.ljust(16, b"\x02"), file_read=master[:16])

    monkeypatch.setitem(keys.DERIVATIONS, 2, v2)
    assert keys.current_derivation_version() == 2
    assert keys.derive_sun_keys(master, UID, version=1) == before
    assert keys.derive_sun_keys(master, UID, version=2) == v2(master, UID)


def test_unknown_version_and_bad_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown key derivation version 9"):
        keys.derive_sun_keys(os.urandom(32), UID, version=9)
    with pytest.raises(ValueError, match="7 bytes"):
        keys.derive_sun_keys(os.urandom(32), UID[:6], version=1)
    with pytest.raises(ValueError, match="16 bytes"):
        SunKeys(meta_read=bytes(15), file_read=bytes(16))


def test_sealed_sun_keys_are_bound_to_organization_and_uid() -> None:
    sun = SunKeys(meta_read=os.urandom(16), file_read=os.urandom(16))
    sealed = keys.seal_sun_keys(SECRET, organization_id=7, uid=UID, keys=sun)
    assert sun.meta_read not in sealed and sun.file_read not in sealed
    assert keys.unseal_sun_keys(SECRET, organization_id=7, uid=UID, sealed=sealed) == sun
    with pytest.raises(crypto.SealedValueError):
        keys.unseal_sun_keys(SECRET, organization_id=8, uid=UID, sealed=sealed)
    with pytest.raises(crypto.SealedValueError):
        keys.unseal_sun_keys(SECRET, organization_id=7, uid=bytes(7), sealed=sealed)
    master = os.urandom(32)
    sealed_master = keys.seal_master_secret(SECRET, organization_id=7, master=master)
    assert keys.unseal_master_secret(SECRET, organization_id=7, sealed=sealed_master) == master
    with pytest.raises(crypto.SealedValueError):  # a tag's keys are not a master secret
        keys.unseal_master_secret(SECRET, organization_id=7, sealed=sealed)


def test_sun_keys_repr_hides_the_keys() -> None:
    sun = SunKeys(meta_read=bytes(range(16)), file_read=bytes(range(16, 32)))
    for text in (repr(sun), str(sun), f"{sun}"):
        assert text == "SunKeys(<redacted>)"
