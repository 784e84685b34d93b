"""Verification of NTAG 424 DNA Secure Unique NFC (SUN) messages, AES mode.

A personalised NTAG 424 DNA rewrites its NDEF URL on every tap (Secure Dynamic Messaging,
SDM) with two mirrors (layout: :func:`campaigns.payloads.ndef.sdm_layout`):

- ``e`` = PICCData, 16 bytes as 32 hex digits: AES-128-CBC with a zero IV, under the SDM
  meta-read key, of ``PICCDataTag (0xC7) ‖ UID (7 bytes) ‖ SDMReadCtr (3 bytes, LSB
  first) ‖ 5 random bytes``. ``0xC7`` means UID mirrored (bit 7), counter mirrored
  (bit 6), UID length 7 (low nibble).
- ``c`` = SDMMAC, 8 bytes as 16 hex digits: with ``SV2 = 3C C3 00 01 00 80 ‖ UID ‖
  SDMReadCtr`` zero-padded to 16 bytes, the session key is ``KSesSDMFileReadMAC =
  AES-CMAC(SDM file-read key, SV2)``; the MAC is ``AES-CMAC(KSesSDMFileReadMAC, input)``
  truncated to its odd-indexed bytes 1, 3, ..., 15 ("MACt"). Here SDMMACInputOffset equals
  SDMMACOffset, so the input is empty.

Sources: NXP AN12196 "NTAG 424 DNA and NTAG 424 DNA TagTamper features and hints"
(Rev. 1.5): the SUN example with encrypted PICCData and SDMMAC (p. 12: decrypted PICCData
``C7 04DE5F1EACC040 3D0000 ...``, then the SV2, session key and MACt steps; known answer
below) and §6.9 "Change NDEF File Settings" (the mirror layout this module expects); NXP
NT4H2421Gx data sheet §9.3 "Secure Dynamic Messaging" (PICCData encryption, SDM session
key generation with SV2, MAC truncation to the odd bytes). AES-CMAC is NIST SP 800-38B /
RFC 4493.

Known answer (AN12196, all-zero keys): ``e=EF963FF7828658A599F3041510671E88``,
``c=94EED9EE65337086`` is UID ``04DE5F1EACC040``, counter 61, valid.

The replay check (counter strictly above the last accepted one) is separate and needs the
database: :func:`campaigns.scanning.nfc.accept_counter`.
"""

from __future__ import annotations

import hmac
import re
import threading
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from campaigns.payloads.keys import UID_BYTES, SunKeys

SunVerdict = Literal["valid_mac", "invalid"]

#: PICCDataTag for "UID and SDMReadCtr mirrored, 7-byte UID" (AN12196 example).
PICC_DATA_TAG: Final = 0xC7
#: SV2 prefix for the SDM file-read MAC session key (NT4H2421Gx, SDM session keys).
SV2_PREFIX: Final = bytes.fromhex("3CC300010080")
_PICC_HEX = re.compile(r"[0-9A-Fa-f]{32}")
_MAC_HEX = re.compile(r"[0-9A-Fa-f]{16}")


@dataclass(frozen=True, slots=True)
class SunResult:
    """The outcome of :func:`verify_sun`.

    ``verdict`` is ``valid_mac`` when the message decrypts to this tag's UID and its MAC
    is right (the counter still has to pass the replay check), else ``invalid``.
    ``uid`` (7 bytes) and ``counter`` (SDMReadCtr, 0..16 777 215) are set only for
    ``valid_mac``: nothing read from a message that failed is reported.
    """

    verdict: SunVerdict
    uid: bytes | None = None
    counter: int | None = None


INVALID: Final = SunResult("invalid")


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _sv2(uid: bytes, counter: int) -> bytes:
    return (SV2_PREFIX + uid + counter.to_bytes(3, "little")).ljust(16, b"\x00")


def sdm_mac(file_read_key: bytes, uid: bytes, counter: int) -> bytes:
    """The 8-byte SDMMAC (MACt over empty input) a tag with ``uid`` (7 bytes) sends at
    ``counter`` under ``file_read_key`` (16 bytes)."""
    session_key = _cmac(file_read_key, _sv2(uid, counter))
    return _cmac(session_key, b"")[1::2]


class _KeyState:
    """One tag's keys made ready for taps, kept with its :class:`SunKeys`: building an
    AES context (key expansion, OpenSSL objects) costs more than using it (a tap went
    from 18 to ~6 µs). PICCData is one AES block under a zero IV, so its CBC decryption
    is the ECB decryption of that block: one ECB context decrypts every tap's block (it
    keeps nothing between blocks; a lock keeps threads, if any, from sharing it at
    once). The file-read key's CMAC context is copied for each session key. Holds key
    material: no ``repr`` shows it."""

    __slots__ = ("_lock", "_mac", "_picc")

    def __init__(self, keys: SunKeys) -> None:
        self._picc = Cipher(algorithms.AES(keys.meta_read), modes.ECB()).decryptor()  # noqa: S305 - one block, see the docstring
        self._mac = CMAC(algorithms.AES(keys.file_read))
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "<SUN key state: redacted>"

    def decrypt_picc(self, block: bytes) -> bytes:
        """AES-128-CBC decryption, zero IV, of the 16-byte ``block``."""
        with self._lock:
            return self._picc.update(block)

    def mac(self, uid: bytes, counter: int) -> bytes:
        """:func:`sdm_mac` under these keys."""
        mac = self._mac.copy()
        mac.update(_sv2(uid, counter))
        return _cmac(mac.finalize(), b"")[1::2]


def _key_state(keys: SunKeys) -> _KeyState:
    state = keys.verifier_state
    if state is None:
        state = _KeyState(keys)
        object.__setattr__(keys, "verifier_state", state)  # frozen: set once, lazily
    assert isinstance(state, _KeyState)
    return state


def verify_sun(e: str | None, c: str | None, *, uid: bytes, keys: SunKeys) -> SunResult:
    """Verify the ``e`` (PICCData, 32 hex digits) and ``c`` (SDMMAC, 16 hex digits) query
    parameters of a tap on the tag with ``uid`` (7 bytes) and ``keys``; hex in either
    case.

    Returns :class:`SunResult` ``valid_mac`` with the UID and counter, or ``invalid`` for
    anything else: missing, truncated, over-long or non-hex parameters, a PICCDataTag
    other than ``0xC7``, another UID (another tag's message), a wrong MAC. Never raises
    for any input. The MAC is compared in constant time, and computed even when the
    PICCData is already known wrong, so timing does not tell which check failed.
    """
    if e is None or c is None or _PICC_HEX.fullmatch(e) is None or _MAC_HEX.fullmatch(c) is None:
        return INVALID
    state = _key_state(keys)
    picc = state.decrypt_picc(bytes.fromhex(e))
    message_uid = picc[1 : 1 + UID_BYTES]
    counter = int.from_bytes(picc[1 + UID_BYTES : 4 + UID_BYTES], "little")
    expected = state.mac(message_uid, counter)
    mac_ok = hmac.compare_digest(expected, bytes.fromhex(c))
    if not mac_ok or picc[0] != PICC_DATA_TAG or not hmac.compare_digest(message_uid, uid):
        return INVALID
    return SunResult("valid_mac", uid=message_uid, counter=counter)
