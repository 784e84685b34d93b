"""NDEF messages, Type 2 TLV areas and the NTAG 424 DNA SDM file, decoded back with ndeflib."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import ndef
import pytest

from campaigns.payloads import ndef as payload
from campaigns.payloads.keys import SunKeys
from campaigns.payloads.sun import verify_sun
from tests.fixtures.ntag424 import Ntag424


def decode(message: bytes) -> list[ndef.Record]:
    return list(ndef.message_decoder(message))


def test_worked_example_https() -> None:
    message = payload.uri_message("https://example.com")
    assert message == bytes([0xD1, 0x01, 0x0C, 0x55, 0x04]) + b"example.com"
    assert payload.message_tlv(message) == bytes([0x03, 0x10]) + message + bytes([0xFE])
    (record,) = decode(message)
    assert isinstance(record, ndef.UriRecord)
    assert record.iri == "https://example.com"


def test_http_uses_identifier_code_3() -> None:
    message = payload.uri_message("http://go.example.com/s/7K3QX9TB")
    assert message[:5] == bytes([0xD1, 0x01, 1 + len("go.example.com/s/7K3QX9TB"), 0x55, 0x03])
    assert message[5:] == b"go.example.com/s/7K3QX9TB"


def test_android_application_record_follows_the_uri_record() -> None:
    message = payload.uri_message("https://go.example.com/s/7K3QX9TB", aar="com.example.shop")
    uri, aar = decode(message)
    assert uri.iri == "https://go.example.com/s/7K3QX9TB"
    assert aar.type == "urn:nfc:ext:android.com:pkg"
    assert aar.data == b"com.example.shop"
    # Message begin on the first record only, message end on the last only (NDEF §3.2.1).
    assert message[0] & 0xC0 == 0x80
    assert message[len(message) - len(aar.data) - len("android.com:pkg") - 3] & 0xC0 == 0x40


@pytest.mark.parametrize("package", ["shop", "com.", ".com", "com..x", "1com.x", "com.ex-ample"])
def test_bad_android_package_is_refused(package: str) -> None:
    with pytest.raises(ValueError, match="Android package"):
        payload.uri_message("https://example.com", aar=package)


def _url_with_message_length(n: int) -> str:
    """An https URL whose NDEF message is ``n`` bytes (short record: 4 + payload)."""
    url = "https://example.com/" + "a" * (n - 4 - 1 - len("example.com/"))
    assert len(payload.uri_message(url)) == n
    return url


def test_tlv_length_254_uses_one_byte() -> None:
    message = payload.uri_message(_url_with_message_length(254))
    tlv = payload.message_tlv(message)
    assert tlv[:2] == bytes([0x03, 0xFE])
    assert tlv[2:-1] == message
    assert tlv[-1] == 0xFE
    assert len(tlv) == 254 + 3


def test_tlv_length_255_uses_three_bytes() -> None:
    url = _url_with_message_length(255)
    message = payload.uri_message(url)
    tlv = payload.message_tlv(message)
    assert tlv[:4] == bytes([0x03, 0xFF, 0x00, 0xFF])
    assert tlv[4:-1] == message
    assert tlv[-1] == 0xFE
    (record,) = decode(tlv[4:-1])
    assert record.iri == url


def test_tlv_of_a_longer_message() -> None:
    message = bytes(300)
    assert payload.message_tlv(message)[:4] == bytes([0x03, 0xFF, 0x01, 0x2C])
    with pytest.raises(ValueError, match="TLV"):
        payload.message_tlv(bytes(0xFFFF))


@pytest.mark.parametrize(
    ("chip", "capacity"), [("ntag213", 144), ("ntag215", 496), ("ntag216", 872)]
)
def test_capacity_boundary_per_chip(chip: payload.Chip, capacity: int) -> None:
    """The largest URL whose TLV area is exactly the capacity fits; one byte more is
    ``ndef_too_large`` with the TLV size and the capacity."""
    base = "https://example.com/"
    fitting = next(
        base + "a" * n
        for n in range(capacity)
        if len(payload.message_tlv(payload.uri_message(base + "a" * (n + 1)))) > capacity
    )
    fits = payload.type2_payload(fitting, chip=chip)
    assert len(fits.tlv) == capacity
    assert fits.capacity_bytes == capacity
    assert fits.chip == chip
    with pytest.raises(payload.NdefTooLarge) as caught:
        payload.type2_payload(fitting + "a", chip=chip)
    assert caught.value.status == 422
    assert caught.value.code == "ndef_too_large"
    assert caught.value.members == {"size_bytes": capacity + 1, "capacity_bytes": capacity}


def test_sdm_layout_matches_the_an12196_example() -> None:
    layout = payload.sdm_layout("https://choose.url.com/ntag424")
    file = layout.ndef_file
    assert file[0] == 0x00
    assert int.from_bytes(file[:2], "big") == len(file) - 2
    assert file[2:4] == bytes([0xD1, 0x01])
    assert file[5:7] == bytes([0x55, 0x04])
    assert file[7:9] == b"ch"
    assert layout.picc_data_offset == 0x20
    assert layout.sdm_mac_input_offset == layout.sdm_mac_offset == 0x43
    assert file[layout.picc_data_offset - 3 : layout.picc_data_offset] == b"?e="
    assert file[layout.picc_data_offset : layout.picc_data_offset + 32] == b"0" * 32
    assert file[layout.sdm_mac_offset - 3 : layout.sdm_mac_offset] == b"&c="
    assert file[layout.sdm_mac_offset : layout.sdm_mac_offset + 16] == b"0" * 16
    (record,) = decode(file[2:])
    assert record.iri == layout.url_template
    assert layout.url_template == (
        "https://choose.url.com/ntag424?e=" + "0" * 32 + "&c=" + "0" * 16
    )


@pytest.mark.parametrize(
    "base", ["https://go.example.com/n/7K3QX9TB", "http://127.0.0.1:8000/n/7K3QX9TB"]
)
def test_a_tag_filling_the_mirrors_at_the_offsets_gives_a_verifiable_url(base: str) -> None:
    """Do what the chip does on a read: write e and c over the placeholders at the
    offsets; the URL the phone then decodes verifies."""
    layout = payload.sdm_layout(base)
    tag = Ntag424.random()
    e, c = tag.tap()
    file = bytearray(layout.ndef_file)
    file[layout.picc_data_offset : layout.picc_data_offset + 32] = e.encode()
    file[layout.sdm_mac_offset : layout.sdm_mac_offset + 16] = c.encode()
    (record,) = decode(bytes(file[2:]))
    query = parse_qs(urlsplit(record.iri).query)
    assert record.iri.startswith(base + "?e=")
    keys = SunKeys(meta_read=tag.meta_read_key, file_read=tag.file_read_key)
    result = verify_sun(query["e"][0], query["c"][0], uid=tag.uid, keys=keys)
    assert (result.verdict, result.counter) == ("valid_mac", 1)


def test_sdm_file_over_256_bytes_is_too_large() -> None:
    base = "https://example.com/" + "x" * 200
    with pytest.raises(payload.NdefTooLarge) as caught:
        payload.sdm_layout(base)
    size = len(payload.uri_message(payload.sun_url_template(base))) + 2
    assert caught.value.members == {"size_bytes": size, "capacity_bytes": 256}


def test_the_documented_examples_are_real_payloads() -> None:
    """The OpenAPI examples of ``NdefRead`` and ``SdmRead`` are what the code answers for
    their own URLs (they once showed lengths that did not match their bytes)."""
    from campaigns.schemas import NdefRead, SdmRead

    def example(model: type[NdefRead] | type[SdmRead], name: str) -> object:
        examples = model.model_fields[name].examples
        assert examples is not None
        return examples[0]

    url = example(NdefRead, "url")
    assert isinstance(url, str)
    fits = payload.type2_payload(url, chip="ntag213")
    assert example(NdefRead, "ndef_hex") == fits.message.hex().upper()
    assert example(NdefRead, "tlv_hex") == fits.tlv.hex().upper()
    assert example(NdefRead, "size_bytes") == len(fits.message)
    assert example(NdefRead, "capacity_bytes") == fits.capacity_bytes

    template = example(SdmRead, "url_template")
    assert isinstance(template, str)
    layout = payload.sdm_layout(template.split("?", 1)[0])
    assert layout.url_template == template
    file_hex = example(SdmRead, "ndef_file_hex")
    assert isinstance(file_hex, str)
    assert layout.ndef_file.hex().upper().startswith(file_hex.removesuffix("..."))
    assert example(SdmRead, "picc_data_offset") == layout.picc_data_offset
    assert example(SdmRead, "sdm_mac_input_offset") == layout.sdm_mac_input_offset
    assert example(SdmRead, "sdm_mac_offset") == layout.sdm_mac_offset
