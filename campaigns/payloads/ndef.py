"""NDEF payloads of NFC tags: the message, its Type 2 TLV area, the SDM file of NTAG 424 DNA.

- **NDEF message** (NFC Forum NDEF 1.0): one URI record (NFC Forum URI RTD 1.0, type
  ``U``) carrying the tag's URL with its prefix abbreviated (identifier code 0x04 for
  ``https://``, 0x03 for ``http://``, 0x02/0x01 when the host starts with ``www.``),
  optionally followed by an Android Application Record (external type
  ``android.com:pkg``). Records are built and encoded by ``ndeflib``.
- **Type 2 tags** (NXP NTAG213/215/216; NFC Forum Type 2 Tag 1.0 §2.3): from page 4 the
  tag holds TLV blocks: the NDEF Message TLV (``03``, then the length in one byte for
  0..254 or ``FF`` and two bytes big-endian from 255 on, then the message) and the
  Terminator TLV ``FE``. The capability container of a factory tag declares the data
  area size: 144 (NTAG213), 496 (NTAG215), 872 (NTAG216) bytes (NTAG213/215/216 data
  sheet §8.5, CC byte 2 = 0x12, 0x3E, 0x6D, times 8). A message fits when its whole TLV
  area, terminator included, is at most that size.
- **NTAG 424 DNA** (Type 4): the NDEF file (file 02, 256 bytes) holds ``NLEN`` (2 bytes,
  big-endian) then the message. With Secure Dynamic Messaging the tag overwrites
  placeholders of the URL on every read; SDM offsets count bytes from the first byte of
  that file (NT4H2421Gx data sheet §9.3 "Secure Dynamic Messaging"; AN12196 Rev. 1.5
  §6.9 "Change NDEF File Settings": for ``https://choose.url.com/ntag424?e=...&c=...``
  the file is ``00 xx D1 01 xx 55 04 'c' 'h' ...``, PICCDataOffset is 0x20 and
  SDMMACInputOffset = SDMMACOffset = 0x43).

The URL written on plain tags is the tag's ``short_url`` (``{BASE_URL}/s/{CODE}``,
scheme and host as configured, code upper case), not the upper-case ``qr_content``: NFC
has no alphanumeric mode to gain from, and the record is what the phone shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import ndef

from campaigns.errors import InvalidInput

Chip = Literal["ntag213", "ntag215", "ntag216"]
CHIPS: Final[tuple[str, ...]] = get_args(Chip)
#: Data area declared by the factory capability container, in bytes.
CAPACITY_BYTES: Final[dict[str, int]] = {"ntag213": 144, "ntag215": 496, "ntag216": 872}
#: Size of the NDEF file (file 02) of NTAG 424 DNA, in bytes (NT4H2421Gx data sheet).
NTAG424_NDEF_FILE_BYTES: Final = 256

#: An Android application id (``com.example.app``): dot-separated Java identifiers, at
#: least two segments.
ANDROID_PACKAGE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"
_ANDROID_PACKAGE = re.compile(ANDROID_PACKAGE_PATTERN)
AAR_TYPE: Final = "urn:nfc:ext:android.com:pkg"

TLV_NDEF_MESSAGE: Final = 0x03
TLV_TERMINATOR: Final = 0xFE
#: Lengths from this value on take the three-byte form (``FF`` + two bytes).
TLV_LONG_FROM: Final = 0xFF
TLV_MAX_LENGTH: Final = 0xFFFE

#: SDM placeholders: 16 bytes of PICCData and 8 bytes of SDMMAC as upper-case hex digits.
PICC_DATA_PARAM: Final = "e"
SDM_MAC_PARAM: Final = "c"
PICC_DATA_PLACEHOLDER: Final = "0" * 32
SDM_MAC_PLACEHOLDER: Final = "0" * 16


class NdefTooLarge(InvalidInput):
    """422 ``ndef_too_large``: the payload does not fit the chip. The problem body also
    carries ``size_bytes`` (what would be written) and ``capacity_bytes``."""

    code = "ndef_too_large"
    title = "NDEF message too large"

    def __init__(self, *, size_bytes: int, capacity_bytes: int, chip: str) -> None:
        super().__init__(
            f"The NDEF data needs {size_bytes} bytes; {chip} holds {capacity_bytes}",
            members={"size_bytes": size_bytes, "capacity_bytes": capacity_bytes},
        )


def uri_message(url: str, *, aar: str | None = None) -> bytes:
    """The encoded NDEF message: a URI record for ``url``, then an Android Application
    Record for package ``aar`` when given. Raises ``ValueError`` for a package that is
    not an Android application id."""
    records: list[Any] = [ndef.UriRecord(url)]
    if aar is not None:
        if _ANDROID_PACKAGE.fullmatch(aar) is None:
            raise ValueError("not an Android package name")
        records.append(ndef.Record(AAR_TYPE, "", aar.encode("ascii")))
    return b"".join(ndef.message_encoder(records))


def message_tlv(message: bytes) -> bytes:
    """The Type 2 TLV area for ``message``: NDEF Message TLV then Terminator TLV.
    ``len(message)`` 254 gives ``03 FE ... FE``, 255 gives ``03 FF 00 FF ... FE``.
    Raises ``ValueError`` above 65 534 bytes."""
    n = len(message)
    if n > TLV_MAX_LENGTH:
        raise ValueError("NDEF message longer than a TLV can hold")
    length = bytes([n]) if n < TLV_LONG_FROM else bytes([TLV_LONG_FROM]) + n.to_bytes(2, "big")
    return bytes([TLV_NDEF_MESSAGE]) + length + message + bytes([TLV_TERMINATOR])


@dataclass(frozen=True, slots=True)
class Type2Payload:
    """What to write on an NTAG21x: ``message`` (the NDEF message), ``tlv`` (the bytes
    from page 4), the ``chip`` and its ``capacity_bytes``."""

    url: str
    message: bytes
    tlv: bytes
    chip: str
    capacity_bytes: int


def type2_payload(url: str, *, chip: Chip, aar: str | None = None) -> Type2Payload:
    """The payload of a plain NFC sticker for ``url``. Raises :class:`NdefTooLarge` when
    its TLV area exceeds the chip's capacity, ``ValueError`` for a bad ``aar``."""
    message = uri_message(url, aar=aar)
    tlv = message_tlv(message)
    capacity = CAPACITY_BYTES[chip]
    if len(tlv) > capacity:
        raise NdefTooLarge(size_bytes=len(tlv), capacity_bytes=capacity, chip=chip)
    return Type2Payload(url=url, message=message, tlv=tlv, chip=chip, capacity_bytes=capacity)


@dataclass(frozen=True, slots=True)
class SdmLayout:
    """The NDEF file of an NTAG 424 DNA with SUN mirroring and where the mirrors go.

    ``url_template`` is the URL with zero placeholders; ``ndef_file`` is ``NLEN`` (2 bytes)
    followed by the message; offsets are byte positions from the first byte of
    ``ndef_file``: ``picc_data_offset`` is the first placeholder digit after ``e=``,
    ``sdm_mac_offset`` the first after ``c=``; ``sdm_mac_input_offset`` equals it (the
    MAC is over empty input).
    """

    url_template: str
    ndef_file: bytes
    picc_data_offset: int
    sdm_mac_input_offset: int
    sdm_mac_offset: int


def sun_url_template(base: str) -> str:
    """``{base}?e=<32 zeros>&c=<16 zeros>``, ``base`` being ``{BASE_URL}/n/{CODE}``."""
    return f"{base}?{PICC_DATA_PARAM}={PICC_DATA_PLACEHOLDER}&{SDM_MAC_PARAM}={SDM_MAC_PLACEHOLDER}"


def sdm_layout(base: str) -> SdmLayout:
    """The SDM layout for a tag whose tap URL is ``base`` (``{BASE_URL}/n/{CODE}``).
    Raises :class:`NdefTooLarge` (capacity 256) when the file does not fit."""
    template = sun_url_template(base)
    message = uri_message(template)
    ndef_file = len(message).to_bytes(2, "big") + message
    if len(ndef_file) > NTAG424_NDEF_FILE_BYTES:
        raise NdefTooLarge(
            size_bytes=len(ndef_file),
            capacity_bytes=NTAG424_NDEF_FILE_BYTES,
            chip="NTAG 424 DNA",
        )
    # The URI record is the last record, and its payload ends with the URL after the
    # abbreviated prefix: locate that tail, then the placeholders within it.
    encoded = template.encode()
    url_tail = ndef.UriRecord(template).data[1:]
    tail_start = len(ndef_file) - len(url_tail)
    prefix_len = len(encoded) - len(url_tail)
    picc = tail_start - prefix_len + encoded.index(f"?{PICC_DATA_PARAM}=".encode()) + 3
    mac = tail_start - prefix_len + encoded.index(f"&{SDM_MAC_PARAM}=".encode()) + 3
    return SdmLayout(
        url_template=template,
        ndef_file=ndef_file,
        picc_data_offset=picc,
        sdm_mac_input_offset=mac,
        sdm_mac_offset=mac,
    )
